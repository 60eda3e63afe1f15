package failover

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

func init() {
	caddy.RegisterModule(UpstreamSelector{})
}

// Wrap mode: llm_failover without provider blocks wraps the next handler,
// a reverse_proxy with `lb_policy llm_failover`. Each upstream of that
// reverse_proxy acts as a provider named by its dial address: the selector
// picks the first one whose breaker admits the request, the handler
// classifies the response exactly as in provider mode, and replays the
// request through the reverse_proxy, where the selector now skips it.

// wrapAttempt carries one attempt between the handler and the selector
// through the request context.
type wrapAttempt struct {
	h         *Handler
	clientKey string
	kind      requestKind
	tried     map[string]bool
	attempt   *attempt // the selector sets its provider and breaker
	skips     []skipped
}

type wrapAttemptKey struct{}

// UpstreamSelector is `lb_policy llm_failover`: the first upstream, in
// order, whose breaker admits the request (the same half-open rule as
// providers). Used without the llm_failover handler in front, nothing
// feeds the breakers and it acts as `first`.
type UpstreamSelector struct{}

// CaddyModule returns the Caddy module information.
func (UpstreamSelector) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.selection_policies.llm_failover",
		New: func() caddy.Module { return new(UpstreamSelector) },
	}
}

// Select implements reverseproxy.Selector.
func (UpstreamSelector) Select(pool reverseproxy.UpstreamPool, r *http.Request, _ http.ResponseWriter) *reverseproxy.Upstream {
	wa, _ := r.Context().Value(wrapAttemptKey{}).(*wrapAttempt)
	now := timeNow()
	for _, u := range pool {
		if !u.Available() {
			continue
		}
		if wa == nil {
			return u
		}
		name := u.String()
		if wa.tried[name] {
			continue
		}
		p := wa.h.wrapProvider(name)
		b := p.breakerFor(wa.clientKey)
		var adm breaker.Admission
		if fb := wrapFamilyScope(p, wa.attempt); fb != nil && !fb.Peek(now).OK {
			adm = fb.Peek(now) // the request's model family is benched here
		} else if wa.kind == kindOther {
			adm = b.Peek(now) // feeds no breaker
		} else {
			adm = b.Admit(now, "")
		}
		if !adm.OK {
			wa.skips = append(wa.skips, skipped{name: name, class: adm.Class, retryAt: adm.RetryAt})
			continue
		}
		a := wa.attempt
		if a.p != nil {
			// reverse_proxy's own retry (lb_retries) chose again: the
			// earlier choice gave no response
			a.p.release(a.b, wa.clientKey, a.adm.Probe)
		}
		// in place: the handler's gate already serves this attempt
		a.p, a.b, a.adm = p, b, adm
		a.traceWrapped(r)
		return u
	}
	return nil
}

// UnmarshalCaddyfile sets up the policy: `lb_policy llm_failover`.
func (s *UpstreamSelector) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // policy name
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// wrapProviders are the upstreams a wrap-mode handler has seen, as
// providers, in the order the selector first met them (the pool's order).
type wrapProviders struct {
	mu    sync.Mutex
	byKey map[string]*Provider
	order []*Provider
}

// wrapProvider returns the provider that stands for an upstream of the
// wrapped reverse_proxy, creating it (and its breaker state, shared
// through the pool so reloads keep it) on first sight.
func (h *Handler) wrapProvider(name string) *Provider {
	h.wrapped.mu.Lock()
	defer h.wrapped.mu.Unlock()
	if p, ok := h.wrapped.byKey[name]; ok {
		return p
	}
	st, _, _ := providerStates.LoadOrNew(name, func() (caddy.Destructor, error) {
		return new(providerState), nil
	})
	p := &Provider{Name: name, Upstream: name, state: st.(*providerState), cooldowns: h.classCooldowns(), wrapped: true}
	if h.wrapped.byKey == nil {
		h.wrapped.byKey = make(map[string]*Provider)
	}
	h.wrapped.byKey[name] = p
	h.wrapped.order = append(h.wrapped.order, p)
	return p
}

func (h *Handler) classCooldowns() map[Class]time.Duration {
	m := make(map[Class]time.Duration, len(classify.All))
	for _, c := range classify.All {
		m[c] = h.cooldown(c)
	}
	return m
}

// serveWrapped is the attempt loop of wrap mode: each attempt goes through
// next, whose selector picks the upstream.
func (h *Handler) serveWrapped(w http.ResponseWriter, req *llmRequest, next caddyhttp.Handler) {
	tried := make(map[string]bool)
	for req.attempts-req.retries < h.MaxAttempts {
		a := h.newAttempt(req)
		a.model, a.body = req.model, req.body
		wa := &wrapAttempt{h: h, clientKey: req.clientKey, kind: req.kind, tried: tried, attempt: a}
		actx := newAttemptContext(req.r.Context())
		actx.wrap = wa
		ctx, cancel := context.WithCancel(actx)
		ar := req.r.WithContext(ctx)
		setReplayBody(ar, req.body, &req.openBodies)
		req.attempts++
		// the selector sets the attempt's provider when it picks an upstream
		done, _ := h.run(w, a, ar, cancel, next)
		cancel()
		picked := a.p
		a.release()
		if picked == nil {
			req.attempts-- // nothing was selected: no attempt was sent
			if req.attempts == 0 {
				h.answerNoneAdmits(w, req, wa.skips)
			} else {
				h.answerExhausted(w, req)
			}
			return
		}
		if done {
			return
		}
		tried[picked.Name] = true
	}
	h.answerExhausted(w, req)
}

// Interface guards
var (
	_ reverseproxy.Selector = (*UpstreamSelector)(nil)
	_ caddyfile.Unmarshaler = (*UpstreamSelector)(nil)
)

// wrapFamilyScope is the family scope of the wrapped request at p, or nil.
func wrapFamilyScope(p *Provider, a *attempt) *providerBreaker {
	if a == nil || a.req == nil {
		return nil
	}
	return p.familyScope(a.req)
}
