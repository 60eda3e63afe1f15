// Package failover is the llm_failover HTTP handler: it sends each request
// to the first provider whose breaker admits it, classifies what comes back,
// cools failing providers down and replays the request to the next one
// before the client has seen a byte.
package failover

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
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

	// clientAccess holds clients, client_key_header and allow_remote
	// (access.go): who may use the handler.
	clientAccess

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

	share          *sharer
	tiers          []*providerTier
	spread         bool
	stream         StreamConfig // Stream with its defaults
	anyPassthrough bool
	useBook        bool           // some provider has `sanitize thinking`: feed signatureBook
	wrapped        *wrapProviders // wrap mode: the wrapped reverse_proxy's upstreams
	affinity       *affinityTable // spread: conversation -> provider (affinity.go)
	providerIndex  map[string]int // provider name -> index, for affinity
	logger         *zap.Logger
}

// Defaults.
const (
	defaultRequestBuffer = 32 << 20
	defaultMaxCooldown   = 30 * time.Minute
)

var defaultCooldowns = map[Class]time.Duration{
	ClassRateLimit:   time.Minute,
	ClassQuota:       time.Hour,
	ClassOverloaded:  30 * time.Second,
	ClassAuth:        30 * time.Minute,
	ClassServerError: 10 * time.Second,
	ClassUnreachable: 10 * time.Second,
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
	// nothing is set up from a config that would not validate
	if err := h.Validate(); err != nil {
		return err
	}
	if h.RequestBuffer == 0 {
		h.RequestBuffer = defaultRequestBuffer
	}
	if h.MaxReset == 0 {
		h.MaxReset = caddy.Duration(DefaultMaxReset)
	}
	if h.BodyTimeout == 0 {
		h.BodyTimeout = caddy.Duration(defaultBodyTimeout)
	}
	if h.MaxCooldown == 0 {
		h.MaxCooldown = caddy.Duration(defaultMaxCooldown)
	}
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
	registerHandler(h)
	if h.Share != nil {
		s, err := newSharer(ctx, h, h.Share)
		if err != nil {
			return err
		}
		h.share = s
		h.share.start(ctx)
	}
	return nil
}

// Cleanup releases the providers' proxies and breaker references.
func (h *Handler) Cleanup() error {
	unregisterHandler(h)
	h.share.stop()
	h.cleanupClients()
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

func (h *Handler) cooldown(c Class) time.Duration {
	if d, ok := h.Cooldowns[c]; ok {
		return time.Duration(d)
	}
	return defaultCooldowns[c]
}

// llmRequest is one client request on its way through the providers.
type llmRequest struct {
	r         *http.Request
	body      []byte
	model     string        // the top-level "model" upstreams read (the last one): for mapping, logs and metrics
	fields    requestFields // where that model is in the body, for a provider that maps it
	scanned   []byte        // the body fields were read from
	clientKey string        // fingerprint of the client's credential, for passthrough breakers
	kind      requestKind   // model call, optional endpoint, or anything else (apipath.go)
	client    *Client       // the client that presented its key; nil without clients
	// conversation identifies the request's conversation for affinity; 0: none
	conversation uint64

	tried       []bool // per provider index
	authRetried []bool
	renewed     bool // the last attempt's credential was refused and renewed: retry the same provider
	attempts    int  // sent upstream
	retries     int  // of those, retries of the same provider with a renewed credential
	classes     []Class

	// repairs (repairs.go)
	repaired      []uint8        // per provider index: bit 1<<RefusalKind set once retried with that repair; nil until one is
	pending       *pendingRepair // asked for by the refusal being held back
	extraBetas    []string       // anthropic-beta values a refusal asked to drop...
	extraBetasFor *Provider      // ...for this provider

	last         *attemptEnd // the last failed attempt's held response
	lastAnswer   heldAnswer  // who gave it, and its class
	lastProvider *Provider
	failed       []failedAttempt // each failure, in order: named in an exhausted answer

	// for placeholders and metrics
	answeredBy string
	sentModel  string
	usage      streaminspect.Usage
}

// mappingFields says where the model is, for a provider that maps it: the
// last "model" key is the one upstreams read. A body replaced by a repair
// is read again.
func (req *llmRequest) mappingFields() requestFields {
	if len(req.scanned) != len(req.body) || (len(req.body) > 0 && &req.scanned[0] != &req.body[0]) {
		req.fields, req.scanned = requestModel(req.body), req.body
	}
	return req.fields
}

// ServeHTTP proxies the request through the first provider that takes it.
// It reads as three steps: pick a provider, run an attempt through the
// gate, act on the verdict.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	client, ok := h.admitClient(w, r)
	if !ok {
		return nil
	}
	buf, res, err := h.readBody(w, r)
	if res != bodyComplete {
		releaseBody(buf)
		if res == bodyBroken {
			return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("reading request body: %w", err))
		}
		h.refuseBody(w, r, res)
		return nil
	}
	defer releaseBody(buf)
	fields := requestModel(buf.b)
	req := &llmRequest{
		r:           r,
		body:        buf.b,
		model:       fields.Model,
		fields:      fields,
		scanned:     buf.b,
		kind:        kindOfPath(r.URL.Path),
		client:      client,
		tried:       client.initialTried(len(h.Providers)),
		authRetried: make([]bool, len(h.Providers)),
	}
	if h.anyPassthrough {
		req.clientKey = clientFingerprint(r.Header)
	}
	req.conversation = h.conversationKey(r, req.clientKey)
	defer h.finishRequest(req)

	if len(h.Providers) == 0 {
		h.serveWrapped(w, req, next)
		return nil
	}
	for {
		if req.attempts-req.retries >= h.MaxAttempts {
			h.answerExhausted(w, req)
			return nil
		}
		i, adm, skips := h.selectProvider(req)
		if i < 0 {
			if len(req.failed) == 0 {
				h.setAnswerHeaders(w.Header(), req.clientKey, 0, nil)
				writeAllCooling(w, skips, timeNow())
				return nil
			}
			h.answerExhausted(w, req)
			return nil
		}
		if h.attempt(w, req, i, adm) {
			return nil
		}
	}
}

// finishRequest publishes what happened as placeholders, for access logs
// and later handlers, and releases what the request held.
func (h *Handler) finishRequest(req *llmRequest) {
	if req.last != nil {
		releaseHeld(req.last.body)
	}
	repl, ok := req.r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return
	}
	provider := req.answeredBy
	if provider == "" && req.lastProvider != nil {
		provider = req.lastProvider.Name
	}
	var classes strings.Builder // nothing allocated on the common path: no failover
	for i, c := range req.classes {
		if i > 0 {
			classes.WriteByte(',')
		}
		classes.WriteString(string(c))
	}
	model := req.sentModel
	if model == "" {
		model = req.model
	}
	repl.Set("llm.provider", provider)
	repl.Set("llm.attempts", req.attempts)
	repl.Set("llm.failover_classes", classes.String())
	repl.Set("llm.model", model)
	repl.Set("llm.input_tokens", req.usage.InputTokens)
	repl.Set("llm.output_tokens", req.usage.OutputTokens)
}

// attempt sends the request to provider i and acts on the verdict. It
// returns true when the client has its answer.
func (h *Handler) attempt(w http.ResponseWriter, req *llmRequest, i int, adm Admission) bool {
	p := h.Providers[i]
	t := &attemptTarget{p: p, b: p.breaker(req.clientKey), adm: adm, idx: i}
	r := req.r

	var cred credsource.Credential
	if p.source != nil && !p.passthrough {
		var skip bool
		var err error
		cred, skip, err = h.credentialFor(req, i)
		if skip {
			// nothing ready yet, and another provider can serve: pass
			// this one over, charging nothing; its lookup goes on in the
			// background
			req.tried[i] = true
			t.b.Release(adm.Probe)
			if c := h.logger.Check(zapcore.DebugLevel, "provider credential not ready yet; passing the provider over"); c != nil {
				c.Write(zap.String("provider", p.Name), zap.String("request_id", requestID(r)))
			}
			return false
		}
		if err != nil {
			// no request is sent: the provider cannot be used until its
			// credential appears
			req.tried[i] = true
			t.credVersion = missingCredential
			h.failOver(req, t, attemptEnd{}, Verdict{Class: ClassAuth, Message: "credential unavailable: " + err.Error()}, false)
			// what the source said stays in the log and status: it can
			// quote a helper's stderr or name a secret file
			req.failed[len(req.failed)-1].message = "credential unavailable; see the proxy log"
			h.logger.Error("provider credential unavailable; failing over",
				zap.String("provider", p.Name), zap.Error(err), zap.String("request_id", requestID(r)))
			return false
		}
	}
	t.credVersion = cred.Version

	ctx, cancel := context.WithCancel(withOwnVars(r.Context()))
	defer cancel()
	ac := &attemptCredential{header: p.authHeader, cred: cred}
	if cred.Secret != "" || p.passthrough {
		// the transport sets it on its copy of the request; nothing to set
		// for a provider without a credential
		ctx = context.WithValue(ctx, attemptCredentialKey{}, ac)
	}
	ar := h.attemptRequest(ctx, req, t, ac)
	req.attempts++
	done, v := h.runAttempt(w, req, t, ar, cancel, p.handler)
	if done {
		return true
	}
	// A refusal the request can be repaired of gets one more try on the
	// same provider with the repaired request; each kind of repair is made
	// once per provider, so this recursion ends.
	if v.Retry && req.pending != nil {
		h.applyRepair(req)
		req.retries++
		return h.attempt(w, req, i, adm)
	}
	if req.renewed {
		req.renewed = false
		// refused, and the source has another credential: one more try
		// on the same provider, as the same probe if it was one
		req.authRetried[i] = true
		req.retries++
		return h.attempt(w, req, i, adm)
	}
	req.tried[i] = true
	return false
}

// renewCredential decides, for an attempt whose credential the provider
// refused, whether the same provider gets one more try: its source must be
// able to renew the credential, and the request has not had that retry
// yet. The refused attempt is then no failover: nothing is charged, logged
// as failing over or counted as one.
func (h *Handler) renewCredential(req *llmRequest, t *attemptTarget) bool {
	p := t.p
	if p == nil || p.refresher == nil || len(h.Providers) == 0 || req.authRetried[t.idx] {
		return false
	}
	if !p.refused(req.r.Context(), t.credVersion) {
		return false
	}
	h.logger.Info("provider refused the credential; retrying with a renewed one",
		zap.String("provider", p.Name), zap.String("request_id", requestID(req.r)))
	return true
}

// attemptTarget is the provider an attempt goes to. In wrap mode the
// reverse_proxy's selector fills it in, before any response arrives.
type attemptTarget struct {
	p           *Provider
	b           *Breaker
	adm         Admission
	model       string // as sent upstream
	credVersion string

	idx              int    // index in Handler.Providers; not set in wrap mode
	body             []byte // as sent upstream
	strippedThinking bool   // the provider's rules stripped thinking blocks from body
}

// runAttempt hands one attempt to an upstream handler through a gate and
// settles the verdict: a committed response is the client's answer; a
// failure feeds the breaker and is kept in case no provider answers. It
// returns true when the client has its answer.
func (h *Handler) runAttempt(w http.ResponseWriter, req *llmRequest, t *attemptTarget, ar *http.Request,
	cancel context.CancelFunc, upstream caddyhttp.Handler) (bool, Verdict) {
	r := req.r
	attempts := req.attempts
	stream := &h.stream
	if req.kind == kindOther {
		stream = nil // not a model call: its answer passes through untouched
	}
	g := newGate(w, stream, cancel)
	g.head = ar.Method == http.MethodHead
	g.classify = func(status int, hdr http.Header, body []byte) Verdict {
		if req.kind == kindOther {
			return Verdict{}
		}
		v := h.classifyResponse(status, hdr, body)
		if req.kind == kindOptional && lacksEndpoint(status) {
			v.Class = ClassUnsupported
		}
		if status == http.StatusBadRequest && (v.Class == ClassRepairable || v.Class == ClassClientError) &&
			t.p != nil && len(h.Providers) > 0 {
			h.planRepair(req, t, &v, body)
		}
		return v
	}
	g.streamFailed = func(ei streaminspect.ErrorInfo) {
		class := ClassOfErrorType(ei.Type)
		if !class.Cools() {
			return // the request's fault (invalid_request_error): not the provider's
		}
		t.b.Failure(timeNow(), Failure{Class: class, Cooldown: t.p.cooldownFor(class),
			MaxCooldown: time.Duration(h.MaxCooldown), Error: ei.Message})
		h.share.kick()
		h.logger.Warn("upstream error event after the stream was committed; passed to the client",
			zap.String("provider", t.p.Name), zap.String("class", string(class)),
			zap.String("error_type", ei.Type), zap.String("request_id", requestID(r)))
	}
	g.onCommit = func(hdr http.Header) {
		// the provider answered well enough to be delivered: feed the
		// breaker now, before a later stream error can
		if req.kind != kindOther && t.b.Success() {
			h.share.kick() // a probe closed the breaker: close it everywhere
		}
		h.learnCapacity(t, hdr)
		h.rememberConversation(req, t.p)
		hdr.Set("X-LLM-Provider", t.p.Name)
		hdr.Set("X-LLM-Attempts", strconv.Itoa(attempts))
	}

	proxyErr, aborted := runUpstream(upstream, g, ar)
	clientGone := r.Context().Err() != nil
	end := g.finish(clientGone, aborted)

	if t.p == nil {
		// wrap mode, and the selector chose nothing: no attempt was made
		releaseHeld(end.body)
		return false, Verdict{}
	}
	p, b := t.p, t.b

	if end.committed {
		req.answeredBy, req.sentModel = p.Name, t.model
		outcome := "success"
		if end.verdict.Class != ClassNone {
			outcome = string(end.verdict.Class) // a passed-through client error
		}
		countAttempt(req, p.Name, outcome)
		if g.isStream {
			observeTiming(p.Name, g)
			h.closeStream(g, p, b, aborted, clientGone)
		}
		if u, ok := g.usage(); ok {
			req.usage = u
			countTokens(p.Name, t.model, req.client, u)
		}
		if h.useBook && end.verdict.Class == ClassNone && len(h.Providers) > 0 {
			recordAccepted(t.body, p.rules.domain)
		}
		return true, end.verdict
	}
	if clientGone {
		// not the provider's fault: charge nothing, free a probe
		b.Release(t.adm.Probe)
		releaseHeld(end.body)
		countAttempt(req, p.Name, "client_gone")
		return true, Verdict{}
	}

	v := end.verdict
	if v.Retry {
		// held back for a repair: not the provider's failure
		releaseHeld(end.body)
		countAttempt(req, p.Name, string(ClassRepairable))
		h.logger.Info("provider refused the request's history; repairing and retrying",
			zap.String("provider", p.Name), zap.String("repair", req.pending.kind.String()),
			zap.String("message", v.Message), zap.String("request_id", requestID(r)))
		return false, v
	}
	if end.status == 0 && v.Class == ClassNone {
		msg := "no response"
		if proxyErr != nil {
			msg = proxyErr.Error()
		} else if aborted {
			msg = "upstream connection broke"
		}
		v = Verdict{Class: ClassUnreachable, ErrorType: "api_error", Message: msg}
	}
	if !v.Class.FailsOver() {
		// cannot happen: the gate commits verdicts that do not fail over
		v.Class = ClassServerError
	}
	if v.Class == ClassAuth && h.renewCredential(req, t) {
		releaseHeld(end.body)
		countAttempt(req, p.Name, string(v.Class))
		req.renewed = true
		return false, v
	}
	h.failOver(req, t, end, v, true)
	return false, v
}

// failOver records a failed attempt: the breaker, metrics, the log line,
// and the held response, kept in case no other provider answers. sent says
// whether a request went upstream: only then may the provider be named in
// the answer (X-LLM-Provider, {llm.provider}).
func (h *Handler) failOver(req *llmRequest, t *attemptTarget, end attemptEnd, v Verdict, sent bool) {
	p := t.p
	h.learnCapacity(t, end.header)
	var until time.Time
	if req.kind == kindOther || v.Class == ClassUnsupported {
		// says nothing about the provider's health: charge nothing
		t.b.Release(t.adm.Probe)
	} else {
		until = t.b.Failure(timeNow(), Failure{
			Class: v.Class, Cooldown: p.cooldownFor(v.Class), MaxCooldown: time.Duration(h.MaxCooldown),
			ResetAt: v.ResetAt, Credential: t.credVersion, Error: v.Message, FailedOver: true,
		})
		if v.Class.Cools() {
			h.share.kick()
		}
	}
	req.classes = append(req.classes, v.Class)
	if v.Class == ClassContextWindow {
		h.narrowByWindow(req, p)
	}
	if end.status != 0 || end.bodyBroke || v.Class == ClassUnreachable {
		countAttempt(req, p.Name, string(v.Class))
	}
	metrics.failovers.WithLabelValues(p.Name, string(v.Class)).Inc()
	if c := h.logger.Check(zapcore.WarnLevel, "provider failed; failing over"); c != nil {
		fields := []zap.Field{zap.String("provider", p.Name), zap.String("class", string(v.Class)),
			zap.String("error_type", v.ErrorType), zap.String("message", v.Message),
			zap.Int("status", end.status), zap.Int("attempt", req.attempts),
			zap.String("request_id", requestID(req.r))}
		if !until.IsZero() {
			fields = append(fields, zap.Time("cooldown_until", until), zap.Duration("cooldown", until.Sub(timeNow())))
		}
		c.Write(fields...)
	}
	msg := v.Message
	if !sent {
		// what a credential source said stays in the log
		msg = "credential unavailable; see the proxy log"
	}
	req.failed = append(req.failed, failedAttempt{provider: p.Name, class: v.Class, status: end.status, message: msg})
	if !sent {
		// nothing to answer with: an earlier provider's answer is kept
		return
	}
	req.lastProvider = p
	if v.Class == ClassUnsupported && req.last != nil && req.lastAnswer.class == ClassUnsupported {
		// when no provider has the endpoint, the client gets the first
		// provider's answer
		releaseHeld(end.body)
		return
	}
	if end.status == 0 {
		return // no response: an earlier provider's real answer stays the one to give
	}
	if req.last != nil {
		releaseHeld(req.last.body)
	}
	req.last, req.lastAnswer = &end, heldAnswer{provider: p, class: v.Class}
}

// requestID names the request in logs: the client's own id if it sent one,
// else Caddy's per-request UUID.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" {
		return id
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if v, ok := repl.GetString("http.request.uuid"); ok {
			return v
		}
	}
	return ""
}

// countAttempt counts an attempt sent upstream, by provider, outcome and
// client.
func countAttempt(req *llmRequest, provider, outcome string) {
	metrics.attempts.WithLabelValues(provider, outcome, req.client.label()).Inc()
}

func countTokens(provider, model string, c *Client, u streaminspect.Usage) {
	c.countUsage(u)
	if u.InputTokens <= 0 && u.OutputTokens <= 0 && u.CacheReadTokens <= 0 && u.CacheCreationTokens <= 0 {
		return
	}
	model = modelLabel(provider, model)
	for _, kv := range [...]struct {
		kind string
		n    int64
	}{{"input", u.InputTokens}, {"output", u.OutputTokens}, {"cache_read", u.CacheReadTokens}, {"cache_creation", u.CacheCreationTokens}} {
		if kv.n > 0 {
			metrics.tokens.WithLabelValues(provider, model, kv.kind, c.label()).Add(float64(kv.n))
		}
	}
}

// runUpstream hands the attempt to an upstream handler: a provider's own
// reverse_proxy, or in wrap mode the next handler. reverse_proxy panics
// with http.ErrAbortHandler when the upstream body breaks after
// WriteHeader; that is an attempt's failure here, not the server's.
func runUpstream(upstream caddyhttp.Handler, g *gate, ar *http.Request) (err error, aborted bool) {
	defer func() {
		if rec := recover(); rec != nil {
			if rec != http.ErrAbortHandler {
				panic(rec)
			}
			aborted = true
		}
	}()
	return upstream.ServeHTTP(g, ar), false
}

var nopHandler = caddyhttp.HandlerFunc(func(http.ResponseWriter, *http.Request) error { return nil })

// closeStream ends a committed event stream: one that broke or stalled
// before its terminal event gets a well-formed error event instead of a
// silent truncation, and an upstream error event feeds the breaker.
func (h *Handler) closeStream(g *gate, p *Provider, b *Breaker, aborted, clientGone bool) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	_, failed := g.watch.Failed()
	endedWell := failed || clientGone || g.encoding != "" || g.watch.Terminal()
	atBoundary := g.endEvents(!endedWell)
	if endedWell {
		return // an upstream error event already fed the breaker
	}
	errType, class, msg := "api_error", ClassServerError, "llm_failover: the upstream stream ended before its final event"
	if g.stalled.Load() {
		errType, class = "overloaded_error", ClassOverloaded
		msg = fmt.Sprintf("llm_failover: the upstream sent nothing for %s", time.Duration(h.stream.IdleTimeout))
	} else if aborted {
		msg = "llm_failover: the upstream connection broke mid-stream"
	}
	b.Failure(timeNow(), Failure{Class: class, Cooldown: p.cooldownFor(class),
		MaxCooldown: time.Duration(h.MaxCooldown), Error: msg})
	h.share.kick()
	if !atBoundary {
		// an event too large to keep back was cut: end it, so the error
		// event is at least read as an event of its own
		_, _ = io.WriteString(g.w, "\n\n")
	}
	_, _ = g.w.Write(streaminspect.ErrorEvent(errType, msg))
	g.flush()
	h.logger.Warn("upstream stream ended early; closed the client's stream with an error event",
		zap.String("provider", p.Name), zap.String("class", string(class)), zap.Bool("stalled", g.stalled.Load()))
}

// answerExhausted gives the client the last provider's real response when
// every attempt failed, or a 502 when none answered at all.
func (h *Handler) answerExhausted(w http.ResponseWriter, req *llmRequest) {
	if req.last == nil {
		msg := "no provider answered"
		if len(req.failed) > 0 {
			msg += ": " + describeFailures(req.failed)
		}
		h.setAnswerHeaders(w.Header(), req.clientKey, req.attempts, req.failed)
		if req.lastProvider != nil {
			w.Header().Set("X-LLM-Provider", req.lastProvider.Name)
		}
		writeAnthropicError(w, http.StatusBadGateway, "api_error", "llm_failover: "+msg)
		return
	}
	last := req.last
	dst := w.Header()
	delete(dst, "Server")
	for k, v := range last.header {
		dst[k] = v
	}
	dst.Set("X-LLM-Provider", req.lastAnswer.provider.Name)
	h.setAnswerHeaders(dst, req.clientKey, req.attempts, req.failed)
	// the held body may have been cut (maxHeldError): the length sent is
	// the length of what is sent
	n := 0
	if last.body != nil {
		n = last.body.Len()
	}
	dst.Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(last.status)
	if n > 0 {
		_, _ = w.Write(last.body.Bytes())
	}
}

// classifyResponse is the gate's classifier: the pure Classify with this
// handler's rules and clock.
func (h *Handler) classifyResponse(status int, hdr http.Header, body []byte) Verdict {
	return ClassifyMaxReset(status, hdr, body, h.Rules, timeNow(), time.Duration(h.MaxReset))
}

// attemptRequest builds the request one provider receives: the same body
// (model mapped if the provider maps it), the client's credential removed
// unless the provider passes it through, the base path prefixed.
func (h *Handler) attemptRequest(ctx context.Context, req *llmRequest, t *attemptTarget, ac *attemptCredential) *http.Request {
	p, r := t.p, req.r
	ar := r.WithContext(ctx)
	ar.Header = r.Header.Clone()
	if p.passthrough {
		// the client's own credential travels to the transport beside the
		// request, like a provider's, so reverse_proxy never logs it
		ac.client = takeClientCredential(ar.Header)
	} else {
		stripClientCredential(ar.Header)
	}
	body, model := req.body, req.model
	if len(p.Models) > 0 && model != "" {
		f := req.mappingFields()
		if m, ok := mapModel(p.Models, f.Model); ok {
			body, model = withModel(body, f, m), m
		}
	}
	t.strippedThinking = false
	if p.rules.body {
		body, t.strippedThinking = prepareBody(p, body)
	}
	t.model, t.body = model, body
	ar.Header.Del("Content-Length")
	setReplayBody(ar, body)
	if p.basePath != "" {
		u := *r.URL
		u.Path = p.basePath + r.URL.Path
		if r.URL.RawPath != "" {
			u.RawPath = p.basePath + r.URL.RawPath
		}
		ar.URL = &u
	}
	if len(p.DropBetas) > 0 || len(p.DropQuery) > 0 || req.extraBetasFor == p {
		var extra []string
		if req.extraBetasFor == p {
			extra = req.extraBetas
		}
		applyHeaderRules(ar, p, extra)
	}
	ar.Host = p.upstreamURL.Host
	return ar
}

// setReplayBody gives an attempt its own reader over the buffered body, so
// every attempt sends the same bytes.
func setReplayBody(ar *http.Request, body []byte) {
	ar.TransferEncoding = nil
	if len(body) == 0 {
		ar.Body, ar.ContentLength, ar.GetBody = http.NoBody, 0, nil
		return
	}
	ar.Body, ar.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	ar.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
}

// clientFingerprint identifies the client's credential without keeping it,
// for per-client breakers of passthrough providers.
func clientFingerprint(h http.Header) string {
	if v := h.Get("Authorization"); v != "" {
		return credsource.Fingerprint(v)
	}
	return credsource.Fingerprint(h.Get("X-Api-Key"))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
