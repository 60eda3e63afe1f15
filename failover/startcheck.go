package failover

import (
	"context"
	"maps"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/listeners"
)

// Warnings about what surrounds the handler, logged once per config when
// Caddy has started it: a site any Host reaches, a wrapped reverse_proxy
// that spends a credential for anyone, a port another process listens on
// too. A handler's Provision sees neither its site's address nor the
// handler after it, so these read the whole http app after it is
// provisioned: at Caddy's `started` event, when every listener is bound.

// startChecks holds the events apps (one per config) whose `started`
// event already runs the checks, so the config's first handler subscribes
// and the others do not.
var startChecks struct {
	mu    sync.Mutex
	byApp map[*caddyevents.App]bool
}

// subscribeStartChecks has the config's checks run when Caddy has started
// it (once per config, whatever number of handlers it has).
func (h *Handler) subscribeStartChecks(ctx caddy.Context) {
	appIface, err := ctx.App("events")
	if err != nil {
		return
	}
	app := appIface.(*caddyevents.App)
	startChecks.mu.Lock()
	defer startChecks.mu.Unlock()
	if startChecks.byApp[app] {
		return
	}
	check := &startCheck{ctx: ctx, logger: h.logger}
	if err := app.On("started", check); err != nil {
		h.logger.Debug("start-time checks not run", zap.Error(err))
		return
	}
	if startChecks.byApp == nil {
		startChecks.byApp = make(map[*caddyevents.App]bool)
	}
	startChecks.byApp[app] = true
	// forgotten at Cleanup, not with ctx.OnCancel: Provision's ctx is a
	// copy, and what OnCancel adds to it no cancel ever runs; each entry
	// would keep its whole config alive after a reload
	h.startCheckApp = app
}

// unsubscribeStartChecks forgets the config's entry, when this handler
// made it.
func (h *Handler) unsubscribeStartChecks() {
	if h.startCheckApp == nil {
		return
	}
	startChecks.mu.Lock()
	delete(startChecks.byApp, h.startCheckApp)
	startChecks.mu.Unlock()
	h.startCheckApp = nil
}

// startCheck is the `started` subscriber of one config.
type startCheck struct {
	ctx    caddy.Context
	logger *zap.Logger
}

// Handle implements caddyevents.Handler: it runs the checks. It never
// stops the config: each finding is a warning.
func (c *startCheck) Handle(context.Context, caddy.Event) error {
	defer func() {
		if r := recover(); r != nil {
			c.logger.Error("start-time checks failed", zap.Any("panic", r))
		}
	}()
	appIface, err := c.ctx.AppIfConfigured("http")
	if err != nil {
		return nil
	}
	app, ok := appIface.(*caddyhttp.App)
	if !ok {
		return nil
	}
	for _, name := range slices.Sorted(maps.Keys(app.Servers)) {
		srv := app.Servers[name]
		found := siteFindings{named: srv.NamedRoutes}
		found.walk(srv.Routes, true, nil)
		found.warn(c.logger, name, srv)
	}
	warnSharedPorts(c.logger, app)
	return nil
}

// handlerSeen is a handler met in a server's routes.
type handlerSeen struct {
	h *Handler
	// anyHost: no route on the way to it matches on the Host, so a
	// request for any host name reaches it
	anyHost bool
}

// wrappedCredential is a reverse_proxy with `lb_policy llm_failover`,
// after a wrap-mode handler, that sets a credential with header_up.
type wrappedCredential struct {
	h      *Handler
	header string
}

// siteFindings is what one server's routes hold that the checks ask about.
type siteFindings struct {
	handlers    []handlerSeen
	credentials []wrappedCredential
	// named is the server's named routes (invoke NAME); invoking the
	// ones being walked, so a route that invokes itself ends the walk
	named    map[string]*caddyhttp.Route
	invoking map[string]bool
}

// walk visits routes in order. anyHost says whether the routes around
// them match any Host; wrap is the wrap-mode handler in front of them,
// if any: a wrap-mode handler serves through the handlers after it in its
// own route and in the routes after its own, nested ones included.
func (f *siteFindings) walk(routes caddyhttp.RouteList, anyHost bool, wrap *Handler) {
	for _, route := range routes {
		routeAnyHost := anyHost && !matchesHost(route.MatcherSets)
		for _, mh := range route.Handlers {
			switch v := mh.(type) {
			case *Handler:
				f.handlers = append(f.handlers, handlerSeen{h: v, anyHost: routeAnyHost})
				if len(v.Providers) == 0 {
					wrap = v
				}
			case *caddyhttp.Subroute:
				f.walk(v.Routes, routeAnyHost, wrap)
			case *caddyhttp.Invoke:
				route := f.named[v.Name]
				if route == nil || f.invoking[v.Name] {
					continue
				}
				if f.invoking == nil {
					f.invoking = make(map[string]bool)
				}
				f.invoking[v.Name] = true
				f.walk(caddyhttp.RouteList{*route}, routeAnyHost, wrap)
				delete(f.invoking, v.Name)
			case *reverseproxy.Handler:
				if wrap == nil || v.LoadBalancing == nil {
					continue
				}
				if _, ok := v.LoadBalancing.SelectionPolicy.(*UpstreamSelector); !ok {
					continue
				}
				if name := setsCredential(v); name != "" {
					f.credentials = append(f.credentials, wrappedCredential{h: wrap, header: name})
				}
			}
		}
	}
}

// matchesHost reports whether a route matches on the Host: each of its
// matcher sets (any one of which admits a request) names hosts.
func matchesHost(sets caddyhttp.MatcherSets) bool {
	if len(sets) == 0 {
		return false
	}
	for _, set := range sets {
		named := false
		for _, m := range set {
			switch hm := m.(type) {
			case caddyhttp.MatchHost:
				named = named || len(hm) > 0
			case *caddyhttp.MatchHost:
				named = named || len(*hm) > 0
			}
		}
		if !named {
			return false
		}
	}
	return true
}

// setsCredential names the first credential header a reverse_proxy sets
// on the upstream request with header_up (set or add), "" if none. A
// value taken from the client's own request headers is the client's.
func setsCredential(rp *reverseproxy.Handler) string {
	if rp.Headers == nil || rp.Headers.Request == nil {
		return ""
	}
	ops := rp.Headers.Request
	for _, hdr := range []http.Header{ops.Set, ops.Add} {
		for _, name := range slices.Sorted(maps.Keys(hdr)) {
			if !credentialHeaderName(name) {
				continue
			}
			for _, v := range hdr[name] {
				if !strings.Contains(v, "{http.request.header.") {
					return name
				}
			}
		}
	}
	return ""
}

// credentialHeaderName: Authorization, or a name ending in "key" or
// "token" (x-api-key, api-key, x-auth-token).
func credentialHeaderName(name string) bool {
	n := strings.ToLower(name)
	return n == "authorization" || strings.HasSuffix(n, "key") || strings.HasSuffix(n, "token")
}

// spendsWithoutKey reports whether a handler spends a credential of the
// proxy's for a client that shows no client key: its own providers'
// (anything but passthrough), or in wrap mode one the wrapped
// reverse_proxy sets. With allow_remote anyone who reaches the port may (and
// was warned of it), so a page that gets there by DNS rebinding adds
// nothing: not counted.
func (f *siteFindings) spendsWithoutKey(h *Handler) bool {
	if len(h.Clients) > 0 || h.AllowRemote {
		return false
	}
	if holdsCredential(h.Providers) {
		return true
	}
	for _, c := range f.credentials {
		if c.h == h {
			return true
		}
	}
	return false
}

// warn logs what the server's findings call for: once per server for a
// site that answers any Host, once per credential header for wrap mode.
func (f *siteFindings) warn(logger *zap.Logger, server string, srv *caddyhttp.Server) {
	for _, seen := range f.handlers {
		if seen.anyHost && f.spendsWithoutKey(seen.h) && !unixSocketsOnly(srv.Listen) {
			logger.Warn("this site answers requests for any host name, so a web page whose own name resolves to "+
				"this machine (DNS rebinding) reaches it as a page of this site. llm_failover refuses a page's "+
				"request under a name that is not localhost or a loopback address; the site's other handlers "+
				"do not. Name the host in the site address: http://127.0.0.1:PORT, http://localhost:PORT",
				zap.String("server", server), zap.Strings("listen", srv.Listen))
			break
		}
	}
	if !reachesOtherMachines(srv.Listen) {
		return
	}
	warned := make(map[string]bool)
	for _, c := range f.credentials {
		if len(c.h.Clients) > 0 || c.h.AllowRemote || warned[c.header] {
			continue
		}
		warned[c.header] = true
		logger.Warn("wrap mode: the wrapped reverse_proxy sets a credential with header_up, and llm_failover spends it "+
			"for any client that can reach this site, other machines included (wrap mode has no local-only rule). "+
			"Listen on loopback only (bind 127.0.0.1 [::1]), give each user a key with `client NAME { key ... }` "+
			"in the llm_failover block, or use provider blocks with `credential`, which serve only this machine "+
			"unless told otherwise",
			zap.String("server", server), zap.Strings("listen", srv.Listen), zap.String("header", c.header))
	}
}

// unixSocketsOnly reports whether a server listens on Unix sockets only,
// which no browser connects to: no web page reaches it, by DNS rebinding
// or otherwise.
func unixSocketsOnly(listen []string) bool {
	for _, l := range listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil || !na.IsUnixNetwork() {
			return false
		}
	}
	return len(listen) > 0
}

// reachesOtherMachines is listensBeyondLoopback; tests that listen on
// loopback only stand in for a server other machines reach.
var reachesOtherMachines = listensBeyondLoopback

// listensBeyondLoopback reports whether a server's listen addresses take
// connections from other machines: an address without a host (every
// interface) or with a host that is not loopback.
func listensBeyondLoopback(listen []string) bool {
	if len(listen) == 0 {
		return true
	}
	for _, l := range listen {
		na, err := caddy.ParseNetworkAddress(l)
		if err != nil {
			return true
		}
		if na.IsUnixNetwork() || na.IsFdNetwork() {
			continue
		}
		if na.Host == "localhost" {
			continue
		}
		ip, err := netip.ParseAddr(strings.Trim(na.Host, "[]"))
		if err != nil || !ip.IsLoopback() {
			return true
		}
	}
	return false
}

// warnSharedPorts logs each address this process listens on (its sites,
// its admin endpoint) where another process listens too. Listeners of
// this process, the config being replaced included, are not another's.
func warnSharedPorts(logger *zap.Logger, app *caddyhttp.App) {
	all, err := listeners.Listening()
	if err != nil {
		logger.Debug("listening sockets not checked", zap.Error(err))
		return
	}
	if !listeners.Overlapping(all) {
		return // no two listeners on one address: nothing to tell apart
	}
	// this process's sockets, read before and after the listeners: one
	// that closes meanwhile (the replaced config's admin endpoint) was
	// open before, and one that opens meanwhile is open after
	own, err := listeners.SocketInodes("/proc/self/fd")
	if err != nil {
		return
	}
	if all, err = listeners.Listening(); err != nil {
		return
	}
	after, err := listeners.SocketInodes("/proc/self/fd")
	if err != nil {
		return
	}
	maps.Copy(own, after)
	for _, s := range listeners.SharedPorts(all, own) {
		other := "another process"
		if pid, command, ok := listeners.Owner("/proc", s.Others[0].Inode); ok {
			other = "pid " + strconv.Itoa(pid) + " (" + command + ")"
		}
		logger.Warn("another process listens on an address this Caddy listens on: on Linux both may bind it "+
			"(SO_REUSEPORT) and each connection reaches one of them, so clients and `caddy llm` may talk to the "+
			"other one. Stop the other process, or give one of them another port",
			zap.String("address", s.Own.String()), zap.String("listener", listenerName(app, s.Own)),
			zap.String("other", other), zap.String("other_address", s.Others[0].Addr.String()))
	}
}

// listenerName says what listens at addr in this process: a site's server
// when one listens there, else the admin endpoint (or another app's
// listener: the http app is all this package sees).
func listenerName(app *caddyhttp.App, addr netip.AddrPort) string {
	for _, name := range slices.Sorted(maps.Keys(app.Servers)) {
		for _, l := range app.Servers[name].Listen {
			na, err := caddy.ParseNetworkAddress(l)
			if err != nil || na.IsUnixNetwork() || na.IsFdNetwork() {
				continue
			}
			if uint(addr.Port()) < na.StartPort || uint(addr.Port()) > na.EndPort {
				continue
			}
			if na.Host == "" || hostIs(na.Host, addr.Addr()) {
				return "site, server " + name + " (" + l + ")"
			}
		}
	}
	return "not a site: the admin endpoint, unless another app listens here"
}

// hostIs reports whether a listen address's host is addr.
func hostIs(host string, addr netip.Addr) bool {
	if ip, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return ip.Unmap() == addr.Unmap()
	}
	return host == "localhost" && addr.IsLoopback() // no lookup: a name other than localhost is not matched
}

// Interface guard
var _ caddyevents.Handler = (*startCheck)(nil)
