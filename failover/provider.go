package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Provider is one LLM provider: an upstream, a credential, and how requests
// are adapted for it. Providers are tried in the order they are declared.
type Provider struct {
	// Name identifies the provider in logs, status and metrics. Breaker
	// state is kept per name, so it survives a config reload, and two
	// sites that name the same provider share it.
	Name string `json:"name"`

	// Upstream is the provider's base URL, such as https://api.anthropic.com
	// or https://api.z.ai/api/anthropic. Its path is prefixed to the
	// request path. https upstreams get TLS; http is meant for loopback
	// and local providers.
	Upstream string `json:"upstream"`

	// CredentialRaw is the credential source module (llm.credentials.*).
	// Without one the client's request is forwarded with its credential
	// headers removed.
	CredentialRaw json.RawMessage `json:"credential,omitempty" caddy:"namespace=llm.credentials inline_key=source"`

	// AuthHeader says how the credential is sent: `x-api-key`, `bearer`
	// (Authorization: Bearer), or the name of any other header that
	// carries it as is. Default: the source's own (claude: bearer),
	// else x-api-key.
	AuthHeader string `json:"auth_header,omitempty"`

	// Models maps requested models to the provider's own; first match wins.
	// A model that matches no rule is sent as the client asked.
	Models []ModelRule `json:"models,omitempty"`

	// Cooldowns overrides the handler's cooldown per class for this provider.
	Cooldowns map[Class]caddy.Duration `json:"cooldowns,omitempty"`

	// Tier groups providers: lower tiers are tried first; with `policy
	// spread`, requests rotate among the providers of one tier. Default 0.
	Tier int `json:"tier,omitempty"`

	// DialTimeout bounds connecting to the provider. Default: 5s. The
	// same as the transport's dial_timeout: set it in one place only.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// HeaderTimeout bounds the wait for response headers; past it the
	// provider is `unreachable`. Default: none, because a non-streaming
	// request's headers arrive only once the whole answer is generated,
	// which can take minutes. The same as the transport's
	// response_header_timeout: set it in one place only.
	HeaderTimeout caddy.Duration `json:"header_timeout,omitempty"`

	// Transport is Caddy's reverse_proxy http transport for this provider,
	// in Caddy's own JSON (and, in a Caddyfile, its own `transport http`
	// syntax): a private CA (tls_trust_pool), a client certificate
	// (tls_client_auth), the TLS server name, a forward proxy
	// (network_proxy, forward_proxy_url), keep-alive, HTTP versions and
	// the rest. Unset, the provider gets Caddy's defaults, TLS for an
	// https upstream, and the dial and header timeouts above.
	Transport *reverseproxy.HTTPTransport `json:"transport,omitempty"`

	// Sanitize names repairs applied to every request before it is sent
	// to this provider, so that history another provider produced is
	// accepted on the first try: `tool_ids` rewrites tool ids outside
	// ^[a-zA-Z0-9_-]+$ (deterministically, so a conversation keeps its
	// mapping turn after turn); `thinking` strips the thinking blocks known
	// to be signed in another signing domain (another upstream host; see
	// signatureBook). Without them a refusal is still repaired after the
	// fact, at the cost of one more round trip.
	Sanitize []string `json:"sanitize,omitempty"`

	// DropQuery names query parameters removed before sending (Claude
	// Code sends `?beta=true`, which some providers refuse).
	DropQuery []string `json:"drop_query,omitempty"`

	// DropFields names top-level request body fields removed before
	// sending (such as `context_management`).
	DropFields []string `json:"drop_fields,omitempty"`

	// DropBetas names anthropic-beta values removed before sending; `*`
	// stands for any run of characters (`context-management-*`).
	DropBetas []string `json:"drop_betas,omitempty"`

	// ContextWindow is the provider's context window in tokens; 0 when
	// not declared. After a context_window refusal from a provider with a
	// declared window, the request goes only to providers whose declared
	// window is larger (providers without one are tried as usual).
	ContextWindow int64 `json:"context_window,omitempty"`

	// MaxUtilization (0..1] makes the provider a last resort once any of
	// its usage windows reports this utilization or more (or, from a
	// provider that reports no utilization, the status allowed_warning),
	// until that window resets or a later response reports less. A
	// saturated provider is still used when no other admits the request:
	// a preference, never a cooldown. Default: the handler's; 0: never.
	MaxUtilization float64 `json:"max_utilization,omitempty"`

	// Prices say what the provider charges per model, for spend limits
	// and the spend status reports; the first matching glob wins. Without
	// prices (a subscription) the provider costs nothing.
	Prices []Price `json:"prices,omitempty"`

	owner       *Handler
	upstreamURL *url.URL
	basePath    string
	proxy       *reverseproxy.Handler
	handler     caddyhttp.Handler // proxy, as the attempt loop calls it
	source      credsource.Source
	refresher   credsource.Refresher
	passthrough bool
	wrapped     bool // an upstream of a wrapped reverse_proxy, which sends the client's credential on
	authHeader  string
	state       *providerState
	cooldowns   map[Class]time.Duration
	rules       providerRules
	maxUtil     float64
	successes   atomic.Pointer[prometheus.Counter] // attempts_total{outcome="success"} without a client, once counted
	lastTokens  atomic.Pointer[modelTokenCounters] // tokens_total series last counted (outcome.go)
	prices      []budget.Price                     // Prices, checked (limits.go)
}

// provision sets up the provider's own reverse_proxy and credential source.
func (p *Provider) provision(ctx caddy.Context, h *Handler) error {
	if p.Name == "" {
		return fmt.Errorf("a provider needs a name")
	}
	u, err := parseUpstream(p.Upstream)
	if err != nil {
		return fmt.Errorf("provider %s: %v", p.Name, err)
	}
	p.upstreamURL = u
	p.owner = h
	p.basePath = strings.TrimSuffix(u.Path, "/")

	if p.CredentialRaw != nil {
		src, err := loadCredentialSource(ctx, p, "CredentialRaw", "provider "+p.Name, "loading credential")
		if err != nil {
			return err
		}
		p.source = src
		p.refresher, _ = src.(credsource.Refresher)
		if pt, ok := src.(credsource.ClientPassthrough); ok {
			p.passthrough = pt.PassesClientCredential()
		}
	}
	p.authHeader = p.AuthHeader
	if p.authHeader == "" {
		p.authHeader = credsource.AuthHeaderAPIKey
		if d, ok := p.source.(credsource.DefaultAuthHeader); ok {
			p.authHeader = d.DefaultAuthHeader()
		}
	}

	p.cooldowns = make(map[Class]time.Duration, len(classify.All))
	for _, c := range classify.All {
		p.cooldowns[c] = h.cooldown(c)
	}
	for c, d := range p.Cooldowns {
		if _, ok := classify.Parse(string(c)); !ok {
			return fmt.Errorf("provider %s: unknown class %q in cooldowns", p.Name, c)
		}
		p.cooldowns[c] = time.Duration(d)
	}

	p.maxUtil = p.MaxUtilization
	if p.maxUtil == 0 {
		p.maxUtil = h.MaxUtilization
	}
	if err := validMaxUtilization(p.maxUtil); err != nil {
		return fmt.Errorf("provider %s: %v", p.Name, err)
	}

	if err := p.provisionRules(); err != nil {
		return fmt.Errorf("provider %s: %v", p.Name, err)
	}

	p.proxy, err = newProviderProxy(ctx, p)
	if err != nil {
		return fmt.Errorf("provider %s: %v", p.Name, err)
	}
	p.handler = caddyhttp.HandlerFunc(func(w http.ResponseWriter, r *http.Request) error {
		return p.proxy.ServeHTTP(w, r, nopHandler)
	})

	st, _, err := providerStates.LoadOrNew(p.Name, func() (caddy.Destructor, error) {
		return new(providerState), nil
	})
	if err != nil {
		return err
	}
	p.state = st.(*providerState)
	p.warmCredential(ctx)
	return nil
}

func (p *Provider) cleanup() {
	if p.proxy != nil {
		_ = p.proxy.Cleanup()
	}
	if p.state != nil {
		_, _ = providerStates.Delete(p.Name)
	}
}

// parseUpstream checks an upstream URL: http or https, a host, no query.
func parseUpstream(s string) (*url.URL, error) {
	if s == "" {
		return nil, fmt.Errorf("upstream URL is required")
	}
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("upstream %q: %v", s, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("upstream %q: scheme must be http or https", s)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("upstream %q: no host", s)
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("upstream %q: a query or fragment is not allowed", s)
	}
	if err := validPort(u); err != nil {
		return nil, err
	}
	return u, nil
}

// newProviderProxy builds the provider's own Caddy reverse_proxy: TLS,
// HTTP/2, timeouts and flushing are Caddy's, not ours. It has one upstream
// and no retries of its own: the failover loop is the handler's.
func newProviderProxy(ctx caddy.Context, p *Provider) (*reverseproxy.Handler, error) {
	u := p.upstreamURL
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	transport, err := providerTransport(p)
	if err != nil {
		return nil, err
	}
	if transport.TLS != nil && transport.TLS.InsecureSkipVerify {
		ctx.Logger().Warn("provider transport skips TLS verification (tls_insecure_skip_verify): "+
			"anyone on the network path can read and change its traffic, credentials included; "+
			"trust the provider's CA with tls_trust_pool instead",
			zap.String("provider", p.Name))
	}
	rp := &reverseproxy.Handler{
		TransportRaw: caddyconfig.JSONModuleObject(transport, "protocol", "http", nil),
		Upstreams:    reverseproxy.UpstreamPool{{Dial: net.JoinHostPort(host, port)}},
	}
	if err := rp.Provision(ctx); err != nil {
		return nil, err
	}
	// The credential is set inside the transport, on a copy of the request,
	// so it never sits on a request object that reverse_proxy logs.
	rp.Transport = &credentialTransport{base: rp.Transport}
	return rp, nil
}

// providerTransport is the http transport a provider's reverse_proxy
// gets: the configured one (a copy: provisioning never touches config),
// with the provider's own timeouts, the 5s dial default, and TLS for an
// https upstream.
func providerTransport(p *Provider) (*reverseproxy.HTTPTransport, error) {
	transport := new(reverseproxy.HTTPTransport)
	if p.Transport != nil {
		b, err := json.Marshal(p.Transport)
		if err != nil {
			return nil, fmt.Errorf("transport: %v", err)
		}
		if err := json.Unmarshal(b, transport); err != nil {
			return nil, fmt.Errorf("transport: %v", err)
		}
	}
	if p.DialTimeout != 0 {
		transport.DialTimeout = p.DialTimeout
	}
	if p.HeaderTimeout != 0 {
		transport.ResponseHeaderTimeout = p.HeaderTimeout
	}
	if transport.DialTimeout == 0 {
		transport.DialTimeout = caddy.Duration(5 * time.Second)
	}
	if p.upstreamURL.Scheme == "https" {
		if transport.TLS == nil {
			transport.TLS = new(reverseproxy.TLSConfig)
		}
		if transport.TLS.ServerName == "" {
			transport.TLS.ServerName = p.upstreamURL.Hostname()
		}
	}
	return transport, nil
}

// providerState is the part of a provider that outlives a config: its
// breakers. It lives in providerStates, keyed by provider name.
type providerState struct {
	breakers breakerSet
	spend    atomic.Int64 // micro-dollars at the provider's prices (limits.go)
}

// Destruct implements caddy.Destructor.
func (*providerState) Destruct() error { return nil }

// providerStates keeps breaker state across config reloads.
var providerStates = caddy.NewUsagePool()

// breaker returns the breaker that governs a request from the client with
// the given credential fingerprint.
func (p *Provider) breakerFor(clientKey string) *providerBreaker {
	return p.state.breakers.governing(clientKey, p.passthrough, timeNow())
}

// admit asks the provider's breaker for this client. A passthrough
// provider has a breaker per client, and its shared one is opened only by
// hand (admin API), which then drains it for everyone. The credential
// source is asked (without waiting, and without the breaker's lock held)
// only when a new credential could end an auth cooldown early.
func (p *Provider) admit(ctx context.Context, now time.Time, clientKey string) breaker.Admission {
	if p.passthrough {
		if adm := p.state.breakers.shared().Peek(now); !adm.OK {
			return adm
		}
	}
	b := p.breakerFor(clientKey)
	current := ""
	if b.RefusedCredential(now) != "" {
		current = p.currentCredentialVersion(ctx)
	}
	adm := b.Admit(now, current)
	if adm.Probe && p.owner != nil {
		adm = p.owner.sharer.ClaimProbe(p.sharedName(clientKey), &b.Breaker, adm)
	}
	return adm
}

// familyScope returns the breaker of the model family a request is for at
// p (its model after p's mapping), or nil: for a passthrough provider
// (whose breakers are per client, a family-scoped failure cools the
// client's breaker) and for a model of no known family.
func (p *Provider) familyScope(req *llmRequest) *providerBreaker {
	if p.passthrough || req.model == "" {
		return nil
	}
	model := req.model
	if len(p.Models) > 0 {
		if m, ok := mapModel(p.Models, req.mappingFields().Model); ok {
			model = m
		}
	}
	return p.familyBreaker(classify.FamilyOf(model))
}

// familyBreaker returns the breaker of a family scope at p, or nil (a
// passthrough provider, an unknown family).
func (p *Provider) familyBreaker(family string) *providerBreaker {
	if p.passthrough {
		return nil
	}
	return p.state.breakers.family(family)
}

// release ends an attempt at b that reached no verdict (its client went
// away, the provider was passed over, the answer says nothing of its
// health): a probe it held goes to the next request, here and, when
// shared, in the whole fleet at once rather than when its lease lapses.
func (p *Provider) release(b *providerBreaker, clientKey string, wasProbe bool) {
	b.Release(wasProbe)
	if wasProbe && p.owner != nil {
		p.owner.sharer.ReleaseProbe(p.sharedName(clientKey))
	}
}

// peek answers like admit without taking a half-open probe or counting a
// request, for requests that feed no breaker.
func (p *Provider) peek(now time.Time, clientKey string) breaker.Admission {
	return p.state.breakers.peek(now, clientKey, p.passthrough)
}

// credentialStatus reports the credential's state without its value.
func (p *Provider) credentialStatus() credsource.Status {
	if p.source == nil {
		return credsource.Status{State: credsource.StateMissing, Reason: "no credential configured"}
	}
	if r, ok := p.source.(credsource.StatusReporter); ok {
		return r.Status()
	}
	if _, err := p.source.Credential(context.Background()); err != nil {
		return credsource.Status{State: credsource.StateMissing, Reason: err.Error()}
	}
	return credsource.Status{State: credsource.StateOK}
}

// cooldownFor is the configured cooldown of class for this provider.
func (p *Provider) cooldownFor(c Class) time.Duration { return p.cooldowns[c] }

var _ http.RoundTripper = (*credentialTransport)(nil)

// nopHandler is the next handler a provider's reverse_proxy is given: it
// never reaches past the provider.
var nopHandler = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })
