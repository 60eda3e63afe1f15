package failover

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Who may use the handler. A proxy that holds provider credentials is a key
// to someone's bill, so by default it serves only clients on this machine;
// a gateway shared by a team names its clients and gives each a key.

// clientAccess is what provisioning works out of the handler's access
// options (Clients, ClientKeyHeader, AllowRemote).
type clientAccess struct {
	// localOnly: refuse non-loopback clients (no clients, no allow_remote,
	// a credential the proxy holds).
	localOnly bool
	// keyHeader is ClientKeyHeader in canonical form; "" for the default.
	keyHeader string
}

// admitClient decides, before anything else happens to the request,
// whether it may use the handler. It returns the client that presented its
// key (nil when no clients are configured), or false after answering the
// request itself.
func (h *Handler) admitClient(w http.ResponseWriter, r *http.Request) (*Client, bool) {
	if from := h.foreignPage(r); from != "" {
		// the body is not wanted: closing the connection answers now
		// instead of after Go's server waits for the body to drain
		w.Header().Set("Connection", "close")
		writeAnthropicError(w, http.StatusForbidden, "permission_error", browserRefusal(from))
		return nil, false
	}
	if len(h.Clients) == 0 && !h.AllowRemote && h.rebindingPage(r) {
		w.Header().Set("Connection", "close")
		writeAnthropicError(w, http.StatusForbidden, "permission_error", rebindingRefusal)
		return nil, false
	}
	if len(h.Clients) == 0 {
		if h.access.localOnly {
			if ip, local := localClient(r); !local {
				writeAnthropicError(w, http.StatusForbidden, "permission_error", remoteRefusal(ip))
				return nil, false
			}
		}
		return nil, true
	}
	key, where := takeClientKey(r.Header, h.access.keyHeader)
	if key == "" {
		writeAnthropicError(w, http.StatusUnauthorized, "authentication_error",
			"llm_failover: this gateway requires a client key; send it in "+where)
		return nil, false
	}
	c := h.match(key)
	if c == nil {
		writeAnthropicError(w, http.StatusUnauthorized, "authentication_error",
			"llm_failover: the client key sent in "+where+" is not valid")
		return nil, false
	}
	c.usage.seen(timeNow())
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("llm.client", c.Name)
	}
	return c, true
}

// foreignPage says which web page made the request when that page is not
// the site's own and allow_origin does not name it: the request's Origin,
// or its Sec-Fetch-Site. "" for anything else, every client that is not a
// browser included.
func (h *Handler) foreignPage(r *http.Request) string {
	origin := r.Header.Get("Origin")
	if h.allowsOrigin(origin) {
		return ""
	}
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "cross-site", "same-site":
		if origin != "" {
			return "Origin " + origin
		}
		return "Sec-Fetch-Site " + site
	}
	if origin != "" && !sameOrigin(origin, r.Host) {
		return "Origin " + origin
	}
	return ""
}

// allowsOrigin reports whether allow_origin names a page's Origin.
func (h *Handler) allowsOrigin(origin string) bool {
	return origin != "" && slices.Contains(h.AllowOrigins, strings.ToLower(origin))
}

// rebindingPage reports whether a web page made the request under a host
// name that is not localhost or a loopback address. Served only on this
// machine, such a page is one whose own name was made to resolve here (DNS
// rebinding): to its browser it is the site's own page, so foreignPage
// lets it through. A page allow_origin names is not refused.
func (h *Handler) rebindingPage(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "same-site", "cross-site":
	default:
		if origin == "" {
			return false // not a page's request: a client, or a typed address
		}
	}
	if h.allowsOrigin(origin) {
		return false
	}
	return !loopbackName(r.Host)
}

// loopbackName reports whether a Host header names this machine by a name
// no web page can take: localhost (and its subdomains) or a loopback
// address.
func loopbackName(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.Trim(host, "[]"))
	// a browser sends the fully qualified name as it was typed
	// (http://localhost.:4181/): the same name, with its root dot
	name := strings.TrimSuffix(host, ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

const rebindingRefusal = "llm_failover: refusing a request a web page made under a host name that is not localhost " +
	"or a loopback address: serving only this machine, the proxy takes that for a page whose own name was made to " +
	"resolve here (DNS rebinding). Reach the proxy as http://localhost:PORT or http://127.0.0.1:PORT, or name " +
	"the page's origin with `allow_origin https://app.example` in the llm_failover block"

// sameOrigin reports whether a browser's Origin (scheme://host[:port])
// names the host a request was sent to. The scheme only supplies the
// default port: behind a front proxy that ends TLS, the site's own pages
// say https while the request reached Caddy over http.
func sameOrigin(origin, host string) bool {
	scheme, rest, ok := strings.Cut(origin, "://")
	if !ok || rest == "" || strings.ContainsAny(rest, "/?#@") {
		return false // "null" (an opaque origin) and anything malformed
	}
	port := map[string]string{"http": "80", "https": "443"}[strings.ToLower(scheme)]
	if port == "" {
		return false
	}
	withPort := func(hostport string) string {
		if _, _, err := net.SplitHostPort(hostport); err == nil {
			return strings.ToLower(hostport)
		}
		return strings.ToLower(net.JoinHostPort(strings.Trim(hostport, "[]"), port))
	}
	return withPort(rest) == withPort(host)
}

// browserRefusal is the 403 message for a request another site's page
// made: what happened and what to configure.
func browserRefusal(from string) string {
	return "llm_failover: refusing a request made by a web page of another site (" + from + "): " +
		"a page the user visits must not use this proxy's credentials. To serve a web app, name its origin " +
		"with `allow_origin https://app.example` in the llm_failover block"
}

// validOrigin checks an allow_origin value: a browser origin, as the
// Origin header writes it.
func validOrigin(o string) error {
	scheme, rest, ok := strings.Cut(o, "://")
	if !ok || (scheme != "http" && scheme != "https") || rest == "" || strings.ContainsAny(rest, "/?#@ ") {
		return fmt.Errorf("allow_origin %q: write an origin as a browser sends it: scheme://host[:port], "+
			"such as https://app.example or http://localhost:3000", o)
	}
	return nil
}

// remoteRefusal is the 403 message for a non-loopback client: what
// happened and what to configure.
func remoteRefusal(ip string) string {
	return "llm_failover: this proxy holds provider credentials and serves only clients on this machine " +
		"(this request came from " + ip + "). To share it, give each user a key with " +
		"`client NAME { key ... }` in the llm_failover block, or set `allow_remote` " +
		"to serve anyone who can reach it"
}

// clientIP is the request's client address as Caddy resolved it: the peer,
// or with trusted_proxies the address a trusted proxy reported.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return r.RemoteAddr
}

// localClient decides whether the request's client is on this machine,
// and names the address it went by.
//
// Behind a proxy the server trusts, the client is the right-most address
// of the server's client IP headers that is not a trusted proxy, whatever
// trusted_proxies_strict says: a proxy appends the address it saw, and
// everything left of it is the client's own word (Caddy's default takes
// the left-most). From a peer the server does not trust, the peer
// decides, but a loopback peer whose request names another address in
// X-Forwarded-For, Forwarded or X-Real-IP is a proxy on this machine
// forwarding someone else, and that someone is not local.
func localClient(r *http.Request) (string, bool) {
	trusted, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	if srv, _ := r.Context().Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); trusted && srv != nil {
		ip := rightmostUntrusted(r, srv)
		return ip, isLoopback(ip)
	}
	ip := clientIP(r)
	if !isLoopback(ip) {
		return ip, false
	}
	if fwd := forwardedElsewhere(r.Header); fwd != "" {
		return fwd, false
	}
	return ip, true
}

// maxForwardedHops bounds the addresses localClient reads from forwarding
// headers; a longer chain is not local.
const maxForwardedHops = 32

// rightmostUntrusted is the client address behind a trusted proxy: read
// right to left, the first address of the server's client IP headers that
// the server does not trust; the peer when every one is trusted.
func rightmostUntrusted(r *http.Request, srv *caddyhttp.Server) string {
	hops := 0
	for _, name := range srv.ClientIPHeaders {
		parts := strings.Split(strings.Join(r.Header.Values(name), ","), ",")
		for i := len(parts) - 1; i >= 0; i-- {
			ip, ok := forwardedAddr(parts[i])
			if !ok {
				continue
			}
			if hops++; hops > maxForwardedHops {
				return "a chain of more than 32 forwarded addresses"
			}
			if !trustedProxy(r, srv, ip) {
				return ip.String()
			}
		}
	}
	return r.RemoteAddr
}

// trustedProxy asks the server whether it trusts ip as a proxy. Caddy
// keeps its trusted ranges to itself; preparing a request from ip is the
// one exported way to ask.
func trustedProxy(r *http.Request, srv *caddyhttp.Server, ip netip.Addr) bool {
	probe := &http.Request{
		Method:     http.MethodGet,
		URL:        &url.URL{Path: "/"},
		Header:     http.Header{},
		Host:       r.Host,
		RemoteAddr: netip.AddrPortFrom(ip, 0).String(),
	}
	probe = caddyhttp.PrepareRequest(probe, caddy.NewEmptyReplacer(), nil, srv)
	trusted, _ := caddyhttp.GetVar(probe.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return trusted
}

// forwardedAddr parses one address of a forwarding header as Caddy does:
// an IP, perhaps with a port or a zone.
func forwardedAddr(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if host, _, err := net.SplitHostPort(s); err == nil {
		s = host
	}
	s = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	s, _, _ = strings.Cut(s, "%")
	ip, err := netip.ParseAddr(s)
	return ip, err == nil
}

// forwardedElsewhere returns the first address that X-Forwarded-For,
// X-Real-IP or Forwarded (its for= parameters) name and that is not
// loopback, cut for a message; "" when they name none. A value that is
// not an address ("unknown", an obfuscated name) counts as elsewhere.
func forwardedElsewhere(h http.Header) string {
	hops := 0
	check := func(v string) string {
		v = strings.Trim(strings.TrimSpace(v), `"`)
		if v == "" {
			return ""
		}
		if hops++; hops > maxForwardedHops {
			return "a chain of more than 32 forwarded addresses"
		}
		ip, ok := forwardedAddr(v)
		switch {
		case ok && ip.Unmap().IsLoopback():
			return ""
		case ok:
			return ip.String()
		}
		return strings.ToValidUTF8(v[:min(len(v), 64)], "?")
	}
	for _, name := range []string{"X-Forwarded-For", "X-Real-Ip"} {
		for _, v := range h.Values(name) {
			for part := range strings.SplitSeq(v, ",") {
				if ip := check(part); ip != "" {
					return ip
				}
			}
		}
	}
	for _, v := range h.Values("Forwarded") {
		for elem := range strings.SplitSeq(v, ",") {
			for pair := range strings.SplitSeq(elem, ";") {
				key, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
				if !strings.EqualFold(key, "for") {
					continue
				}
				if ip := check(val); ip != "" {
					return ip
				}
			}
		}
	}
	return ""
}

// isLoopback reports whether a client address (an IP, or host:port) is on
// this machine: 127.0.0.0/8, ::1, or either written as an IPv4-mapped IPv6
// address. "@" is Caddy's address for a Unix socket peer, local by nature.
func isLoopback(addr string) bool {
	if addr == "@" {
		return true
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host, _, _ = strings.Cut(host, "%") // zone
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// takeClientKey removes the client key from the request header and
// returns it, with where it was looked for (for the 401 message). header
// is the configured key header in canonical form, or "" for the default:
// x-api-key, else Authorization: Bearer.
func takeClientKey(h http.Header, header string) (key, where string) {
	if header != "" && header != "Authorization" {
		key = strings.TrimSpace(h.Get(header))
		h.Del(header)
		return key, "the " + header + " header"
	}
	if header == "" {
		if key = strings.TrimSpace(h.Get("X-Api-Key")); key != "" {
			h.Del("X-Api-Key")
			return key, "x-api-key or Authorization: Bearer"
		}
	}
	where = "Authorization: Bearer"
	if header == "" {
		where = "x-api-key or Authorization: Bearer"
	}
	if key = bearerToken(h.Get("Authorization")); key != "" {
		h.Del("Authorization")
	}
	return key, where
}

// bearerToken returns the token of an `Authorization: Bearer <token>`
// value; "" for any other scheme.
func bearerToken(v string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// holdsCredential reports whether some provider's credential is the
// proxy's own (anything but passthrough), which makes the proxy worth
// protecting from other machines.
func holdsCredential(providers []*Provider) bool {
	for _, p := range providers {
		if p.source != nil && !p.passthrough {
			return true
		}
	}
	return false
}

// provisionAccess sets up the clients and the local-only rule, after the
// providers are provisioned.
func (h *Handler) provisionAccess(ctx caddy.Context) error {
	if h.ClientKeyHeader != "" {
		if len(h.Clients) == 0 {
			return fmt.Errorf("client_key_header %q: no client is configured to send a key", h.ClientKeyHeader)
		}
		if !validHeaderName(h.ClientKeyHeader) {
			return fmt.Errorf("client_key_header %q is not a valid header name", h.ClientKeyHeader)
		}
		h.access.keyHeader = http.CanonicalHeaderKey(h.ClientKeyHeader)
	}
	if err := provisionClients(ctx, h); err != nil {
		return err
	}
	h.access.localOnly = len(h.Clients) == 0 && !h.AllowRemote && holdsCredential(h.Providers)
	if h.AllowRemote && len(h.Clients) == 0 {
		h.logger.Warn("allow_remote: any client that can reach this proxy may use its providers' credentials; " +
			"configure client keys to say who may")
	}
	return nil
}

// validHeaderName reports whether s is an HTTP header field name (a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
