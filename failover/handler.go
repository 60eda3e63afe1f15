// Package failover is the llm_failover HTTP handler: it sends each request
// to the first provider whose breaker admits it, classifies what comes back,
// cools failing providers down and replays the request to the next one
// before the client has seen a byte.
package failover

import (
	"fmt"
	"math"
	"net/http"
	"runtime"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler is the llm_failover handler: it sends each request to the first
// provider whose breaker admits it and replays it to the next one when the
// answer is a failure, before the client has seen a byte.
//
// This handler sets these placeholders, for access logs and the handlers
// that run after it:
//
// Placeholder | Description
// ------------|-------------
// `{llm.provider}` | the provider that answered, or the last one tried
// `{llm.attempts}` | the number of attempts sent upstream (a retry with a renewed credential counts)
// `{llm.failover_classes}` | the classes of the attempts that failed, in order, comma-separated (empty when the first attempt answered)
// `{llm.model}` | the model as sent upstream (after a provider's model mapping)
// `{llm.input_tokens}` | the input tokens the answer reported (0 when it reported none)
// `{llm.output_tokens}` | the output tokens the answer reported (0 when it reported none)
// `{llm.client}` | the name of the client whose key was presented (with `client` blocks)
type Handler struct {
	// Providers in priority order: a request goes to the first one whose
	// breaker admits it.
	Providers []*Provider `json:"providers,omitempty"`

	// Cooldowns sets how long a provider cools down per failure class
	// when the provider itself says nothing. Defaults: rate_limit 1m,
	// quota 1h, overloaded 30s, auth 30m, server_error 10s,
	// unreachable 10s.
	Cooldowns map[Class]caddy.Duration `json:"cooldowns,omitempty"`

	// MaxCooldown caps the doubling of a cooldown when a half-open probe
	// fails again. Default: 30m (never below the class's own cooldown).
	MaxCooldown caddy.Duration `json:"max_cooldown,omitempty"`

	// MaxReset caps a cooldown taken from the provider's own headers
	// (Retry-After, anthropic-ratelimit-*-reset): a reset further away is
	// cut to this. Default: 8d, just over the longest subscription window.
	MaxReset caddy.Duration `json:"max_reset,omitempty"`

	// MaxAttempts bounds the attempts sent upstream for one request.
	// Default: the number of providers.
	MaxAttempts int `json:"max_attempts,omitempty"`

	// RequestBuffer is the largest request body that is buffered for
	// replay, in bytes. A larger body is refused with 413
	// request_too_large in Anthropic's error format (Anthropic's own
	// limit is 32MB, so no provider would take it). The buffer grows as
	// bytes arrive, never ahead of them. Default: 32MiB; at most 1GiB.
	RequestBuffer int64 `json:"request_buffer,omitempty"`

	// RequestBufferTotal bounds the bytes the request bodies being
	// received and replayed hold together, counting the buffers they
	// dropped (outgrown, or released) until the proxy has them collected,
	// so their garbage cannot double the process. A body that would take the
	// total past it waits up to 250ms for room, then is answered with 529
	// overloaded_error and Retry-After: 1 (the connection closed).
	// Default: 256MiB; at least request_buffer.
	RequestBufferTotal int64 `json:"request_buffer_total,omitempty"`

	// BodyTimeout bounds the time to receive the whole request body; a
	// body still arriving past it is answered with 408 timeout_error in
	// Anthropic's error format and its buffer is freed. The server's
	// `timeouts read_body`, when shorter, applies instead. Default: 1m.
	BodyTimeout caddy.Duration `json:"body_timeout,omitempty"`

	// Rules are checked before the built-in classification: each maps a
	// status and a body substring to a class.
	Rules []Rule `json:"rules,omitempty"`

	// Stream sets how event streams are held before commit and watched
	// after it.
	Stream *StreamConfig `json:"stream,omitempty"`

	// Share shares breaker state with other instances, through Caddy's
	// configured storage or Redis, and keeps it across restarts. Off by
	// default.
	Share *ShareConfig `json:"share,omitempty"`

	// Policy picks among the providers that admit a request: `priority`
	// (default: declaration order) or `spread` (round robin inside each
	// tier; failover to the next tier when a whole tier is cooling).
	Policy string `json:"policy,omitempty"`

	// Clients, when any is configured, are the only ones that may use the
	// handler: every request must present one client's key (see
	// ClientKeyHeader), from any address. A missing or unknown key is
	// answered with 401 authentication_error and no provider is contacted.
	Clients []*Client `json:"clients,omitempty"`

	// ClientKeyHeader is the request header that carries the client key.
	// Default: `x-api-key`, or `Authorization: Bearer <key>`. Whichever
	// header carries the key is removed before the request goes on, so a
	// key is never forwarded to a provider. Set it (for example to
	// `X-LLM-Key`) to leave the client's own credential for `passthrough`
	// providers; Claude Code sends extra headers with
	// ANTHROPIC_CUSTOM_HEADERS.
	ClientKeyHeader string `json:"client_key_header,omitempty"`

	// AllowRemote serves clients from any address without client keys.
	// Without it, and without clients, a handler with a provider whose
	// credential the proxy holds (anything but `passthrough`) refuses a
	// client whose address is not loopback with 403 permission_error. The
	// address is the peer's or, behind a proxy in the server's
	// `trusted_proxies`, the right-most forwarded address that is not a
	// trusted proxy; a loopback peer the server does not trust that
	// forwards another address (X-Forwarded-For, Forwarded, X-Real-IP) is
	// not local.
	AllowRemote bool `json:"allow_remote,omitempty"`

	// AllowOrigins names web origins (`https://app.example`) whose pages
	// may use the handler from a browser. A request a browser marks as made
	// by another site (`Sec-Fetch-Site: cross-site` or `same-site`), or
	// whose `Origin` is not the site's own, is otherwise refused with 403
	// permission_error before its body is read: a page the user visits
	// must not spend the proxy's credentials. Claude Code and the SDKs send
	// neither header.
	AllowOrigins []string `json:"allow_origins,omitempty"`

	// MaxUtilization is the default of each provider's max_utilization.
	MaxUtilization float64 `json:"max_utilization,omitempty"`

	// AffinityHeader names a request header that identifies a
	// conversation, for clients that do not send Claude Code's
	// X-Claude-Code-Session-Id (which is always read first). With
	// `policy spread`, a conversation stays on the provider that served
	// its previous request while that provider admits it.
	AffinityHeader string `json:"affinity_header,omitempty"`

	// AffinityOff turns conversation affinity off: spread rotates every
	// request.
	AffinityOff bool `json:"affinity_off,omitempty"`

	// Limits cap all of the handler's traffic together, whoever sends it
	// (a solo user's daily cap on an API key): tokens, requests or spend
	// over rolling windows. A request over one is answered with 429
	// rate_limit_error before any provider is asked. With `share` over
	// Redis the counts are the fleet's.
	Limits []Limit `json:"limits,omitempty"`

	// RequestLog is how many recent requests are kept in memory for GET
	// /llm/requests and the dashboard: for each, its time, client, model,
	// path, attempts, the provider that answered, status, timings and
	// tokens; never its content or credentials. Default: 1000; -1 keeps
	// none (`request_log off`). A reload starts an empty log.
	RequestLog int `json:"request_log,omitempty"`

	sharer         *share.Sharer
	access         clientAccess  // worked out of Clients, ClientKeyHeader and AllowRemote
	buffered       *atomic.Int64 // bytes held by request bodies now (RequestBufferTotal)
	tiers          []*providerTier
	spread         bool
	stream         StreamConfig // Stream with its defaults
	anyPassthrough bool
	models         *modelsCache     // providers' model lists (models.go)
	useBook        bool             // some provider has `sanitize thinking`: feed signatureBook
	wrapped        *wrapProviders   // wrap mode: the wrapped reverse_proxy's upstreams
	affinity       *affinityTable   // spread: conversation -> provider (affinity.go)
	providerIndex  map[string]int   // provider name -> index, for affinity
	budget         *budget.Budget   // Limits with their counters (limits.go); nil without
	limitKeys      []string         // the limitCounters entries this handler holds
	limitSync      *budget.Syncer   // with share over redis: the fleet's counts
	shareCfg       share.Config     // the sharer's config, for the limits' counter store
	requestLog     *requestLog      // nil: request_log off (requestlog.go)
	events         *handlerEvents   // Caddy events (events.go)
	startCheckApp  *caddyevents.App // the config whose start-up checks this handler subscribed (startcheck.go)
	logger         *zap.Logger
}

// Class is a failure class (internal/classify): the keys of Cooldowns and
// the class a Rule assigns.
type Class = classify.Class

// Rule maps an upstream response to a class; Rules are checked before the
// built-in classification.
type Rule = classify.Rule

// Defaults.
const (
	defaultRequestBuffer = 32 << 20
	// defaultRequestBufferTotal is RequestBufferTotal's default.
	defaultRequestBufferTotal = 256 << 20
	defaultMaxCooldown        = 30 * time.Minute
)

var defaultCooldowns = map[Class]time.Duration{
	classify.RateLimit:   time.Minute,
	classify.Quota:       time.Hour,
	classify.Overloaded:  30 * time.Second,
	classify.Auth:        30 * time.Minute,
	classify.ServerError: 10 * time.Second,
	classify.Unreachable: 10 * time.Second,
}

// clockOverride replaces time.Now in tests, which move time without
// sleeping. Atomic: a request still finishing may read it while a test
// swaps it.
var clockOverride atomic.Pointer[func() time.Time]

// timeNow is the handler's clock.
func timeNow() time.Time {
	if f := clockOverride.Load(); f != nil {
		return (*f)()
	}
	return time.Now()
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_failover",
		New: func() caddy.Module { return new(Handler) },
	}
}

// Provision sets up the providers.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	h.wrapped = new(wrapProviders)
	h.models = new(modelsCache)
	// nothing is set up from a config that would not validate
	if err := h.Validate(); err != nil {
		return err
	}
	setDefault(&h.RequestBuffer, defaultRequestBuffer)
	setDefault(&h.RequestBufferTotal, max(defaultRequestBufferTotal, h.RequestBuffer))
	h.buffered = new(atomic.Int64)
	setDefault(&h.MaxReset, caddy.Duration(classify.DefaultMaxReset))
	setDefault(&h.BodyTimeout, caddy.Duration(defaultBodyTimeout))
	setDefault(&h.MaxCooldown, caddy.Duration(defaultMaxCooldown))
	if h.Stream != nil {
		h.stream = *h.Stream
	}
	h.stream.applyDefaults()
	for _, p := range h.Providers {
		if err := p.provision(ctx, h); err != nil {
			return err
		}
		allowMappedModels(p.Name, p.Models)
		_ = warnUnusableCredential(h.logger, p)
		h.anyPassthrough = h.anyPassthrough || p.passthrough
		h.useBook = h.useBook || p.rules.thinking
	}
	if err := validPolicy(h.Policy); err != nil {
		return err
	}
	h.spread = h.Policy == PolicySpread
	h.tiers = buildTiers(h.Providers)
	if err := h.provisionUsageRouting(); err != nil {
		return err
	}
	if h.MaxAttempts <= 0 {
		h.MaxAttempts = len(h.Providers)
		if h.MaxAttempts == 0 {
			// wrap mode: each upstream is tried at most once anyway
			h.MaxAttempts = math.MaxInt32
		}
	}
	if err := registerMetrics(ctx.GetMetricsRegistry()); err != nil {
		return err
	}
	if err := h.provisionAccess(ctx); err != nil {
		return err
	}
	if err := h.provisionLimits(); err != nil {
		return err
	}
	h.provisionRequestLog()
	if err := h.provisionEvents(ctx); err != nil {
		return err
	}
	h.subscribeStartChecks(ctx)
	registerHandler(h)
	if h.Share != nil {
		s, err := newSharer(ctx, h, h.Share)
		if err != nil {
			return err
		}
		h.sharer = s
		h.sharer.Start(ctx)
		if err := h.shareLimits(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Cleanup releases the providers' proxies and breaker references.
func (h *Handler) Cleanup() error {
	unregisterHandler(h)
	h.unsubscribeStartChecks()
	h.stopEvents()
	h.sharer.Stop()
	h.cleanupClients()
	h.cleanupLimits()
	h.cleanupAffinity()
	for _, p := range h.Providers {
		p.cleanup()
	}
	h.wrapped.mu.Lock()
	for _, p := range h.wrapped.order {
		_, _ = providerStates.Delete(p.Name)
	}
	h.wrapped.mu.Unlock()
	return nil
}

// setDefault sets what the config left zero.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

func (h *Handler) cooldown(c Class) time.Duration {
	if d, ok := h.Cooldowns[c]; ok {
		return time.Duration(d)
	}
	return defaultCooldowns[c]
}

// ServeHTTP proxies the request through the first provider that takes it.
// It reads as three steps: pick a provider, run an attempt through the
// gate, act on the verdict.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	req := &llmRequest{r: r}
	req.out.ResponseWriter = w
	w = &req.out
	defer h.recoverPanic(req)
	req.startTracing()
	client, ok := h.admitClient(w, r)
	if !ok {
		return nil // not logged: anyone can send these (requestlog.go)
	}
	req.client = client
	h.startLogging(req)
	if !h.admitLimits(w, r, client) {
		h.logRefused(req, refusedByLimit)
		return nil
	}
	if hasDotSegment(r.URL.Path, r.URL.RawPath) {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error",
			"llm_failover: a request path may not contain . or .. segments")
		h.logRefused(req, refusedPath)
		return nil
	}
	buf, res, err := h.readBody(w, r)
	if res != bodyComplete {
		h.dropBody(buf)
		if res == bodyBroken {
			return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", err))
		}
		h.refuseBody(w, r, client, res)
		h.logRefused(req, refusedBody)
		return nil
	}
	defer h.releaseRequestBody(buf, &req.openBodies)
	fields := requestModel(buf.b)
	req.body, req.model, req.fields, req.scanned = buf.b, fields.Model, fields, buf.b
	req.kind = kindOfPath(r.URL.Path)
	req.perProvider(len(h.Providers))
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		// added before any attempt starts a goroutine that may read the
		// replacer: Map is not safe against concurrent reads
		repl.Map(req.placeholder)
	}
	client.markDisallowed(req.tried)
	clientCred := clientCredentialOf(r.Header)
	if h.anyPassthrough {
		req.clientKey = clientCred.fingerprint()
		h.passOverUncredentialed(req)
	}
	req.conversation = h.conversationKey(r, req.client, req.clientKey, clientCred)
	defer h.finishRequest(req)

	if len(h.Providers) == 0 {
		h.serveWrapped(w, req, next)
		return nil
	}
	// the client's credential leaves the request once, whatever number
	// of attempts follows (transport.go)
	req.clientCred = clientCred
	clientCred.removeFrom(r.Header)
	req.oauthBeta = hasOAuthBeta(r.Header)
	if h.serveModels(w, req) {
		return nil
	}
	for {
		if req.attempts-req.retries >= h.MaxAttempts {
			h.answerExhausted(w, req)
			return nil
		}
		i, adm, skips := h.selectProvider(req)
		if i < 0 {
			if req.fail == nil || len(req.fail.failed) == 0 {
				if len(skips) == 0 && req.uncredentialed {
					h.refuseUncredentialed(w, req)
					return nil
				}
				h.answerNoneAdmits(w, req, skips)
				return nil
			}
			h.answerExhausted(w, req)
			return nil
		}
		if h.tryProvider(w, req, i, adm) {
			return nil
		}
	}
}

// recoverPanic keeps a bug from costing more than its own request: net/http
// would log a stack trace per request and drop the connection, an answer
// the provider was paid for included. Before commit the client gets a 500
// api_error that names nothing internal; after it, the answer already
// under way ends where it is. The detail goes to the log.
func (h *Handler) recoverPanic(req *llmRequest) {
	rec := recover()
	if rec == nil {
		return
	}
	if rec == http.ErrAbortHandler {
		panic(rec) // the deliberate way to abort the client's connection
	}
	committed := req.out.wrote.Load()
	h.logger.Error("internal error: request ended by a panic",
		zap.String("request_id", requestID(req.r)),
		zap.Bool("answer_committed", committed),
		zap.String("panic", fmt.Sprint(rec)),
		zap.ByteString("stack", stackHead()))
	if !committed {
		writeAnthropicError(&req.out, http.StatusInternalServerError, "api_error",
			"llm_failover: internal error in the proxy; its log has the detail")
	}
}

// stackHead is the start of the current goroutine's stack: enough to find
// a bug, bounded so that a panic every request cannot flood the log.
func stackHead() []byte {
	buf := make([]byte, 4096)
	return buf[:runtime.Stack(buf, false)]
}

// finishRequest releases what the request held and lets its {llm.*}
// placeholders be read (placeholders.go).
func (h *Handler) finishRequest(req *llmRequest) {
	releaseFailed(req)
	req.finished = true
	h.finishLogging(req)
}

// releaseFailed gives back the held response of the request's last failed
// attempt.
func releaseFailed(req *llmRequest) {
	if req.fail != nil && req.fail.last != nil {
		releaseHeld(req.fail.last.body)
		req.fail.last = nil
	}
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
