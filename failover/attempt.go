package failover

import (
	"bytes"
	"context"
	"io"
	"maps"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/repair"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// attempt is one try of a request at one provider: what the provider is
// sent, the gate its response goes through, and what settling it needs.
// The gate asks the attempt what it cannot know itself (gateOwner).
//
// Attempts are pooled: a request its first provider serves reuses the
// attempt, its gate, the gate's header map and timers of an earlier one.
type attempt struct {
	attemptState
	gate gate
}

// attemptState is what one try knows; each try starts with none of it.
type attemptState struct {
	h   *Handler
	req *llmRequest

	// The provider and the breaker that admitted the attempt. In wrap
	// mode the wrapped reverse_proxy's selector sets them (wrap.go)
	// before any response arrives; p stays nil when it picks nothing.
	p   *Provider
	b   *providerBreaker
	adm breaker.Admission
	idx int // index in Handler.Providers; not set in wrap mode

	number           int    // the request's attempt count when this one was sent
	model            string // as sent upstream
	body             []byte // as sent upstream
	strippedThinking bool   // the provider's rules stripped thinking blocks from body
	credVersion      string
	counted          bool            // a success was counted at commit (retractSuccess)
	refusal          *repair.Refusal // a 400 held back for a repair (holdRefusal); rare, so not inline
	span             trace.Span      // the attempt's span (tracing.go); nil when not traced
	// brokeAfterCommit is the class charged for a committed answer that
	// then failed (an upstream error event, a stream cut or stalled):
	// the attempt's outcome in the request log and its span
	brokeAfterCommit classify.Class
}

var attemptPool = sync.Pool{New: func() any { return new(attempt) }}

// newAttempt takes an attempt from the pool.
func (h *Handler) newAttempt(req *llmRequest) *attempt {
	a := attemptPool.Get().(*attempt)
	a.h, a.req = h, req
	return a
}

// release returns the attempt to the pool, unless its gate may still be
// touched (a timer callback under way, a hijacked connection).
func (a *attempt) release() {
	if !a.gate.reusable() {
		return
	}
	a.attemptState = attemptState{}
	// let go of the last response's writer, owner and buffers; the gate
	// keeps what reset keeps for the next attempt
	a.gate.reset(nil, nil, nil, nil)
	attemptPool.Put(a)
}

// tryProvider sends the request to provider i and settles the outcome. It
// returns true when the client has its answer. A refusal the request can be
// repaired of, or a refused credential the source renewed, gets one more
// try on the same provider.
func (h *Handler) tryProvider(w http.ResponseWriter, req *llmRequest, i int, adm breaker.Admission) bool {
	for {
		answered, again := h.tryOnce(w, req, i, adm)
		if answered {
			return true
		}
		if !again {
			req.tried[i] = true
			return false
		}
		// the same provider, as the same probe if it was one; each kind
		// of repair and the credential renewal happen once per provider,
		// so this ends
		req.retries++
	}
}

// tryOnce is one attempt at provider i. again asks for one more try at
// the same provider (a repair is pending, or the credential was renewed).
func (h *Handler) tryOnce(w http.ResponseWriter, req *llmRequest, i int, adm breaker.Admission) (answered, again bool) {
	p := h.Providers[i]
	a := h.newAttempt(req)
	defer a.release()
	a.p, a.b, a.adm, a.idx = p, p.breakerFor(req.clientKey), adm, i

	var cred credsource.Credential
	if p.source != nil && !p.passthrough {
		var skip bool
		var err error
		cred, skip, err = h.credentialFor(req, i)
		if skip {
			// nothing ready yet, and another provider can serve: pass
			// this one over, charging nothing; its lookup goes on in the
			// background
			p.release(a.b, req.clientKey, adm.Probe)
			if c := h.logger.Check(zapcore.DebugLevel, "provider credential not ready yet; passing the provider over"); c != nil {
				c.Write(zap.String("provider", p.Name), zap.String("request_id", requestID(req.r)))
			}
			return false, false
		}
		if err != nil {
			// no request is sent: the provider cannot be used until its
			// credential appears; what the source said (it can quote a
			// helper's stderr or name a secret file) stays in the log
			a.credVersion = missingCredential
			h.recordFailure(req, a, gateResult{}, classify.Verdict{Class: classify.Auth, Message: "credential unavailable: " + err.Error()}, false)
			h.logUnsent(req, p, classify.Auth)
			h.logger.Error("provider credential unavailable; failing over",
				zap.String("provider", p.Name), zap.Error(err), zap.String("request_id", requestID(req.r)))
			return false, false
		}
	}
	a.credVersion = cred.Version

	actx := newAttemptContext(a.startSpan(req.r.Context()))
	if cred.Secret != "" || p.passthrough {
		// the transport sets it on its copy of the request; nothing to set
		// for a provider without a credential
		actx.cred = &upstreamCredential{header: p.authHeader, cred: cred}
	}
	ctx, cancel := context.WithCancel(actx)
	defer cancel()
	ar := a.upstreamRequest(ctx, actx.cred)
	req.attempts++
	answered, v := h.run(w, a, ar, cancel, p.handler)
	switch {
	case answered:
		return true, false
	case v.Retry && req.fail != nil && req.fail.pending != nil:
		h.applyRepair(req)
		return false, true
	case req.renewed:
		req.renewed = false
		req.authRetried[i] = true
		return false, true
	}
	return false, false
}

// upstreamRequest builds the request the provider receives: the same body
// (model mapped if the provider maps it), the header rules applied and the
// client's OAuth beta dropped unless the provider passes the client's
// credential through, the base path prefixed.
func (a *attempt) upstreamRequest(ctx context.Context, ac *upstreamCredential) *http.Request {
	p, req, r := a.p, a.req, a.req.r
	// r.Header no longer holds the client's credential (ServeHTTP took
	// it): the attempt shares the map, and copies it only to change it
	ar := r.WithContext(ctx)
	if p.passthrough {
		// the client's own credential travels to the transport beside the
		// request, like a provider's, so reverse_proxy never logs it
		ac.client = req.clientCred
	}
	body, model := req.body, req.model
	if len(p.Models) > 0 && model != "" {
		f := req.mappingFields()
		if m, ok := mapModel(p.Models, f.Model); ok {
			body, model = withModel(body, f, m), m
		}
	}
	if p.rules.body {
		body, a.strippedThinking = prepareBody(p, body)
	}
	a.model, a.body = model, body
	setReplayBody(ar, body, &req.openBodies)
	_, hasLength := r.Header["Content-Length"]
	staleLength := hasLength && int64(len(body)) != r.ContentLength
	dropOAuthBeta := req.oauthBeta && !p.passthrough
	extra, repairedBetas := req.extraBetasFor(p)
	rules := len(p.DropBetas) > 0 || len(p.DropQuery) > 0 || repairedBetas
	traced := a.span != nil
	if staleLength || dropOAuthBeta || rules || traced {
		// a shallow copy: values are only ever replaced, never changed in
		// place, and reverse_proxy makes its own deep copy
		ar.Header = maps.Clone(r.Header)
		if staleLength {
			delete(ar.Header, "Content-Length")
		}
		if dropOAuthBeta {
			// the OAuth beta belongs to the client's credential, which
			// this provider is not sent
			dropBetas(ar.Header, oauthBeta)
		}
		if traced {
			injectTraceContext(ar)
		}
	}
	if p.basePath != "" {
		u := *r.URL
		u.Path = p.basePath + r.URL.Path
		if r.URL.RawPath != "" {
			u.RawPath = p.basePath + r.URL.RawPath
		}
		ar.URL = &u
	}
	if rules {
		applyHeaderRules(ar, p, extra)
	}
	ar.Host = p.upstreamURL.Host
	return ar
}

// replayBody is an attempt's reader over the buffered body. Not pooled:
// the transport may still read it after the attempt returned. Until the
// transport closes it, the request's buffer may not go back to the pool
// (releaseRequestBody): an upstream that answered before reading the
// whole body leaves the transport writing from it for a moment after the
// answer, and the next request's bytes would go out in its place.
type replayBody struct {
	bytes.Reader
	open   *atomic.Int32 // the request's replay bodies not closed yet
	closed atomic.Bool
}

func (b *replayBody) Close() error {
	if b.closed.CompareAndSwap(false, true) {
		b.open.Add(-1)
	}
	return nil
}

// setReplayBody gives an attempt its own reader over the buffered body, so
// every attempt sends the same bytes; open counts the readers not closed.
func setReplayBody(ar *http.Request, body []byte, open *atomic.Int32) {
	ar.TransferEncoding = nil
	if len(body) == 0 {
		ar.Body, ar.ContentLength, ar.GetBody = http.NoBody, 0, nil
		return
	}
	ar.Body, ar.ContentLength = newReplayBody(body, open), int64(len(body))
	ar.GetBody = func() (io.ReadCloser, error) { return newReplayBody(body, open), nil }
}

func newReplayBody(body []byte, open *atomic.Int32) *replayBody {
	rb := &replayBody{open: open}
	rb.Reset(body)
	open.Add(1)
	return rb
}

// run hands the attempt to an upstream handler through its gate and
// settles what came of it (outcome.go). It returns true when the client
// has its answer.
func (h *Handler) run(w http.ResponseWriter, a *attempt, ar *http.Request, cancel context.CancelFunc,
	upstream caddyhttp.Handler) (bool, classify.Verdict) {
	a.number = a.req.attempts
	stream := &h.stream
	if a.req.kind == kindOther {
		stream = nil // not a model call: its answer passes through untouched
	}
	g := &a.gate
	g.reset(w, stream, cancel, a)
	g.head = ar.Method == http.MethodHead
	proxyErr, aborted := runUpstream(upstream, g, ar)
	clientGone := a.req.r.Context().Err() != nil
	res := g.finish(clientGone, aborted)
	answered, v := h.settle(w, a, res, proxyErr, aborted, clientGone)
	class, status := a.outcome(&res, v.Class)
	if a.brokeAfterCommit != "" {
		class = string(a.brokeAfterCommit)
	}
	h.logAttempt(a, class, status)
	if a.span != nil {
		failed := (!answered && v.Class.FailsOver() && !v.Retry) || a.brokeAfterCommit != ""
		a.endSpan(class, status, answered && res.committed, failed, a.req.usage)
	}
	return answered, v
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

// verdictFor implements gateOwner: the pure Classify with the handler's
// rules and clock, narrowed by what the request is.
func (a *attempt) verdictFor(status int, hdr http.Header, body []byte) classify.Verdict {
	req, h := a.req, a.h
	if req.kind == kindOther {
		return classify.Verdict{}
	}
	v := classify.Response(status, hdr, body, h.Rules, timeNow(), time.Duration(h.MaxReset))
	if req.kind == kindOptional && lacksEndpoint(status) {
		v.Class = classify.Unsupported
	}
	if status == http.StatusBadRequest && (v.Class == classify.Repairable || v.Class == classify.ClientError) &&
		a.p != nil && len(h.Providers) > 0 {
		a.holdRefusal(&v, body)
	}
	return v
}

// committing implements gateOwner: the provider answered well enough to
// be delivered, so the breaker hears of it now, before a later stream
// error can.
func (a *attempt) committing(status int, hdr http.Header) {
	h := a.h
	now := timeNow()
	// a client error passed on shows the provider answers, but is no
	// success of it (SUCCESSES counts successes)
	record := a.b.Success
	if status >= 400 {
		record = a.b.Answered
	} else {
		a.counted = a.req.kind != kindOther
	}
	if a.req.kind != kindOther && record(now) {
		h.sharer.Kick() // a probe closed the breaker: close it everywhere
		h.noteRecovered(a.p, a.b)
	}
	if fb := a.p.familyBreaker(classify.FamilyOf(a.model)); fb != nil && a.req.kind != kindOther && fb.Success(now) {
		h.sharer.Kick() // the family's window reset: close its scope everywhere
		h.noteRecovered(a.p, fb)
	}
	h.learnCapacity(a, hdr, now, true)
	if a.req.kind != kindOther {
		h.rememberConversation(a.req, a.p)
	}
	if h.requestLog != nil {
		a.req.logged.firstByte = time.Since(a.req.logged.start)
	}
	// what Set would store (canonical keys), with one allocation for both
	vals := []string{a.p.Name, strconv.Itoa(a.number)}
	hdr["X-Llm-Provider"], hdr["X-Llm-Attempts"] = vals[:1:1], vals[1:2:2]
}

// streamFailed implements gateOwner: an upstream error event after commit
// cools the provider (unless it is the request's fault), so the next
// request already skips it.
func (a *attempt) streamFailed(ei streaminspect.ErrorInfo) {
	h := a.h
	class := classify.OfErrorType(ei.Type)
	if !class.Cools() {
		return // the request's fault (invalid_request_error): not the provider's
	}
	a.retractSuccess()
	a.brokeAfterCommit = class
	h.charge(a.p, a.b, h.failure(a.p, class, ei.Message), timeNow())
	h.logger.Warn("upstream error event after the stream was committed; passed to the client",
		zap.String("provider", a.p.Name), zap.String("class", string(class)),
		zap.String("error_type", ei.Type), zap.String("request_id", requestID(a.req.r)))
}

// retractSuccess takes back the success counted at commit for a response
// that then failed, once.
func (a *attempt) retractSuccess() {
	if a.counted {
		a.counted = false
		a.b.Retract()
	}
}

// Interface guards
var _ gateOwner = (*attempt)(nil)
