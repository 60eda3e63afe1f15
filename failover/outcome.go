package failover

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// settle acts on what came of an attempt once its reverse_proxy returned:
// a committed response is the client's answer; a refusal held back for a
// repair or a refused credential asks for another try at the same
// provider; any other failure feeds the breaker and is kept in case no
// provider answers. It returns true when the client has its answer.
func (h *Handler) settle(w http.ResponseWriter, a *attempt, res gateResult, proxyErr error, aborted, clientGone bool) (bool, classify.Verdict) {
	req := a.req
	if a.p == nil {
		// wrap mode, and the selector chose nothing: no attempt was made
		releaseHeld(res.body)
		return false, classify.Verdict{}
	}
	p, b := a.p, a.b

	if res.committed {
		h.delivered(req, a, res.verdict)
		g := &a.gate
		if g.isStream {
			observeTiming(p.Name, g)
			if class := h.closeStream(g, p, b, aborted, clientGone, a.retractSuccess); class != "" {
				a.brokeAfterCommit = class
			}
		}
		if u, ok := g.usage(); ok {
			req.usage = u
			countTokens(p, a.model, req.client, u)
			h.countSpend(p, a.model, req.client, u)
		}
		return true, res.verdict
	}
	if clientGone {
		// not the provider's fault: charge nothing, free a probe
		p.release(b, req.clientKey, a.adm.Probe)
		releaseHeld(res.body)
		countAttempt(req, p, "client_gone")
		return true, classify.Verdict{}
	}

	v := res.verdict
	if v.Retry {
		if !h.planRepair(req, a) {
			// the repair would change nothing: the refusal is the answer
			v.Class, v.Retry = classify.ClientError, false
			h.answerHeld(w, a, res)
			h.delivered(req, a, v)
			return true, v
		}
		// held back for a repair: not the provider's failure
		releaseHeld(res.body)
		countAttempt(req, p, string(classify.Repairable))
		h.logger.Info("provider refused the request's history; repairing and retrying",
			zap.String("provider", p.Name), zap.String("repair", req.fail.pending.kind.String()),
			zap.String("message", v.Message), zap.String("request_id", requestID(req.r)))
		return false, v
	}
	if res.status == 0 && v.Class == classify.None {
		msg := "no response"
		if proxyErr != nil {
			msg, res.detail = unreachableReason(proxyErr), proxyErr.Error()
		} else if aborted {
			msg = "upstream connection broke"
		}
		v = classify.Verdict{Class: classify.Unreachable, ErrorType: "api_error", Message: msg}
	}
	if !v.Class.FailsOver() {
		// cannot happen: the gate commits verdicts that do not fail over
		v.Class = classify.ServerError
	}
	if v.Class == classify.Auth && h.renewCredential(req, a) {
		releaseHeld(res.body)
		countAttempt(req, p, string(v.Class))
		req.renewed = true
		return false, v
	}
	h.recordFailure(req, a, res, v, true)
	return false, v
}

// unreachableReason says in a few words why no response came, for the
// client: what went wrong, never where (addresses) or in which code. The
// error itself goes to the log.
func unreachableReason(err error) string {
	var netErr net.Error
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var alert tls.AlertError
	var recordErr tls.RecordHeaderError
	var dialErr reverseproxy.DialError
	if errors.As(err, &dialErr) {
		// DialError hides its cause (it has no Unwrap); its text ends with
		// the net package's own words for it, never an upstream's
		text := dialErr.Error()
		switch {
		case strings.HasSuffix(text, syscall.ECONNREFUSED.Error()):
			return "connection refused"
		case strings.HasSuffix(text, "i/o timeout"):
			return "timed out"
		case strings.Contains(text, "no such host"):
			return "host name not resolved"
		}
		return "could not connect"
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &netErr) && netErr.Timeout():
		return "timed out"
	case errors.As(err, &dnsErr):
		return "host name not resolved"
	case errors.As(err, &certErr), errors.As(err, &alert), errors.As(err, &recordErr):
		return "TLS handshake failed"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "host unreachable"
	}
	return "no response"
}

// delivered records that the attempt's response went to the client: who
// answered, with which model, the attempt's metric, and the thinking
// signatures the provider accepted.
func (h *Handler) delivered(req *llmRequest, a *attempt, v classify.Verdict) {
	req.answeredBy, req.sentModel = a.p.Name, a.model
	h.noteAnswered()
	req.logged.streamed, req.logged.status = a.gate.isStream, cmp.Or(a.gate.status, http.StatusOK)
	outcome := outcomeSuccess
	switch {
	case v.Class != classify.None:
		outcome = string(v.Class) // a passed-through client error
	case a.gate.status >= 400:
		// an error answer to a request that is not a model call, given to
		// the client as it came: no success, and no failure of the provider
		outcome = outcomePassedThrough
	}
	countAttempt(req, a.p, outcome)
	if h.useBook && v.Class == classify.None && len(h.Providers) > 0 {
		recordAccepted(a.body, a.p.rules.domain)
	}
}

// renewCredential decides, for an attempt whose credential the provider
// refused, whether the same provider gets one more try: its source must be
// able to renew the credential, and the request has not had that retry
// yet. The refused attempt is then no failover: nothing is charged, logged
// as failing over or counted as one.
func (h *Handler) renewCredential(req *llmRequest, a *attempt) bool {
	p := a.p
	if p == nil || p.refresher == nil || len(h.Providers) == 0 || req.authRetried[a.idx] {
		return false
	}
	if !p.refused(req.r.Context(), a.credVersion) {
		return false
	}
	h.logger.Info("provider refused the credential; retrying with a renewed one",
		zap.String("provider", p.Name), zap.String("request_id", requestID(req.r)))
	return true
}

// recordFailure records a failed attempt: the breaker, metrics, the log
// line, and the held response, kept in case no other provider answers.
// sent says whether a request went upstream: only then may the provider be
// named in the answer (X-LLM-Provider, {llm.provider}).
func (h *Handler) recordFailure(req *llmRequest, a *attempt, res gateResult, v classify.Verdict, sent bool) {
	p := a.p
	now := timeNow()
	h.learnCapacity(a, res.header, now, false)
	var until time.Time
	if req.kind == kindOther || v.Class == classify.Unsupported {
		// says nothing about the provider's health: charge nothing
		p.release(a.b, req.clientKey, a.adm.Probe)
	} else {
		f := h.failure(p, v.Class, v.Message)
		f.ResetAt, f.Credential, f.FailedOver = v.ResetAt, a.credVersion, true
		f.RequestOnly = v.Scope == classify.ScopeRequest
		if fb := p.familyBreaker(v.Scope); fb != nil {
			// a model family's window is spent: that family's scope cools,
			// and the provider stays open to the other models
			p.release(a.b, req.clientKey, a.adm.Probe)
			until = h.charge(p, fb, f, now)
		} else {
			until = h.charge(p, a.b, f, now)
		}
	}
	fs := req.failures()
	fs.classes = append(fs.classes, v.Class)
	if v.Class == classify.ContextWindow {
		h.narrowByWindow(req, p)
	}
	if res.status != 0 || res.bodyBroke || v.Class == classify.Unreachable {
		countAttempt(req, p, string(v.Class))
	}
	metrics.failovers.WithLabelValues(p.Name, string(v.Class)).Inc()
	if c := h.logger.Check(zapcore.WarnLevel, "provider failed; failing over"); c != nil {
		fields := []zap.Field{zap.String("provider", p.Name), zap.String("class", string(v.Class)),
			zap.String("error_type", v.ErrorType), zap.String("message", v.Message),
			zap.Int("status", res.status), zap.Int("attempt", req.attempts),
			zap.String("request_id", requestID(req.r))}
		if res.detail != "" {
			fields = append(fields, zap.String("detail", res.detail))
		}
		if !until.IsZero() {
			fields = append(fields, zap.Time("cooldown_until", until), zap.Duration("cooldown", until.Sub(now)))
		}
		if v.Scope != classify.ScopeProvider {
			fields = append(fields, zap.String("scope", v.Scope))
		}
		c.Write(fields...)
	}
	msg := v.Message
	if !sent {
		// what a credential source said stays in the log
		msg = "credential unavailable; see the proxy log"
	}
	fs.failed = append(fs.failed, failedAttempt{provider: p.Name, class: v.Class, status: res.status, message: msg})
	if !sent {
		// nothing to answer with: an earlier provider's answer is kept
		return
	}
	fs.lastProvider = p
	if v.Class == classify.Unsupported && fs.last != nil && fs.lastAnswer.class == classify.Unsupported {
		// when no provider has the endpoint, the client gets the first
		// provider's answer
		releaseHeld(res.body)
		return
	}
	if res.status == 0 {
		return // no response: an earlier provider's real answer stays the one to give
	}
	if fs.last != nil {
		releaseHeld(fs.last.body)
	}
	fs.last, fs.lastAnswer = &res, heldAnswer{provider: p, class: v.Class}
}

// failure is a failure of class at p, for its breaker: the provider's
// cooldown for the class, doubled up to max_cooldown while probes fail.
func (h *Handler) failure(p *Provider, class Class, msg string) breaker.Failure {
	return breaker.Failure{Class: class, Cooldown: p.cooldownFor(class), MaxCooldown: time.Duration(h.MaxCooldown), Error: msg}
}

// charge feeds a failure into the breaker that governed the attempt, and
// shares the decision: every failure of this instance, before or after
// commit, reaches a breaker here. The breaker works out the cooldown's
// end (internal/breaker: the provider's own reset, else the class's
// cooldown, doubled while probes fail); it returns it, zero when the
// class cools nothing. A breaker that opens is announced (events.go).
func (h *Handler) charge(p *Provider, b *providerBreaker, f breaker.Failure, now time.Time) time.Time {
	until := b.Failure(now, f)
	if f.Class.Cools() && !f.RequestOnly {
		h.sharer.Kick()
		h.noteCooled(p, b, f.Class, until)
	} else if b.announced.Load() && b.Snapshot(now).State == breaker.Closed {
		// a probe the request was at fault for closed the breaker
		h.noteRecovered(p, b)
	}
	return until
}

// closeStream ends a committed event stream: one that broke or stalled
// before its terminal event gets a well-formed error event instead of a
// silent truncation, and an upstream error event feeds the breaker.
// retract takes back the success counted at commit when the stream broke.
// It returns the class charged, "" when the stream ended well.
func (h *Handler) closeStream(g *gate, p *Provider, b *providerBreaker, aborted, clientGone bool, retract func()) classify.Class {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	_, failed := g.watch.Failed()
	endedWell := failed || clientGone || g.encoding != "" || g.watch.Terminal()
	atBoundary := g.endEvents(!endedWell)
	if endedWell {
		return "" // an upstream error event already fed the breaker
	}
	errType, class, msg := "api_error", classify.ServerError, "llm_failover: the upstream stream ended before its final event"
	if g.stalled.Load() {
		errType, class = "overloaded_error", classify.Overloaded
		msg = fmt.Sprintf("llm_failover: the upstream sent no event but pings for %s", time.Duration(h.stream.IdleTimeout))
	} else if aborted {
		msg = "llm_failover: the upstream connection broke mid-stream"
	}
	retract()
	h.charge(p, b, h.failure(p, class, msg), timeNow())
	if !atBoundary {
		// an event too large to keep back was cut: end it, so the error
		// event is at least read as an event of its own
		_, _ = io.WriteString(g.w, "\n\n")
	}
	_, _ = g.w.Write(streaminspect.ErrorEvent(errType, msg))
	g.flush()
	h.logger.Warn("upstream stream ended early; closed the client's stream with an error event",
		zap.String("provider", p.Name), zap.String("class", string(class)), zap.Bool("stalled", g.stalled.Load()))
	return class
}

// answerHeld gives the client an attempt's held response after all (a
// refusal no repair changes), as the gate would have committed it.
func (h *Handler) answerHeld(w http.ResponseWriter, a *attempt, res gateResult) {
	writeHeldResponse(w, res, func(dst http.Header) { a.committing(res.status, dst) })
	releaseHeld(res.body)
}

// answerExhausted gives the client the last provider's real response when
// every attempt failed, the proxy's own answer when every provider is out
// for longer than a client should wait, or a 502 when none answered at
// all.
func (h *Handler) answerExhausted(w http.ResponseWriter, req *llmRequest) {
	fs := req.failures()
	if fs.last == nil {
		msg := "no provider answered"
		if len(fs.failed) > 0 {
			msg += ": " + describeFailures(fs.failed)
		}
		if req.uncredentialed {
			msg += "; the request carried no credential for the providers that forward the client's own"
		}
		// no X-LLM-Provider: no provider answered (X-LLM-Providers says
		// how each failed)
		h.setAnswerHeaders(w.Header(), timeNow(), req.client, req.clientKey, req.attempts, fs.failed)
		req.logged.status = http.StatusBadGateway
		writeAnthropicError(w, http.StatusBadGateway, "api_error", "llm_failover: "+msg)
		return
	}
	now := timeNow()
	if skips, ok := h.allOutLong(req, now); ok {
		// every provider is out for longer than a client should wait: the
		// proxy's own answer names them all and says not to retry, where
		// the last provider's own answer (its Retry-After, no
		// x-should-retry) would keep an SDK asleep for hours
		h.setAnswerHeaders(w.Header(), now, req.client, req.clientKey, req.attempts, fs.failed)
		w.Header().Set("X-LLM-Provider", fs.lastAnswer.provider.Name)
		req.logged.status = writeAllCooling(w, skips, now)
		return
	}
	req.logged.status = fs.last.status
	writeHeldResponse(w, *fs.last, func(dst http.Header) {
		dst.Set("X-LLM-Provider", fs.lastAnswer.provider.Name)
		h.setAnswerHeaders(dst, now, req.client, req.clientKey, req.attempts, fs.failed)
	})
}

// allOutLong reports whether every provider the client may use is cooling
// now, the soonest of them for longer than shouldRetryWithin, and why each
// is out. It takes no probe.
func (h *Handler) allOutLong(req *llmRequest, now time.Time) ([]skipped, bool) {
	skips := make([]skipped, 0, len(h.Providers))
	for i, p := range h.Providers {
		if !req.client.mayUse(i) || (req.uncredentialed && p.passthrough) {
			continue // not one this request could use
		}
		adm := p.peek(now, req.clientKey)
		if adm.OK {
			return nil, false
		}
		s := p.skippedBy(now, req.clientKey, adm)
		if s.retryAt.Sub(now) <= shouldRetryWithin {
			return nil, false
		}
		skips = append(skips, s)
	}
	return skips, len(skips) > 0
}

// writeHeldResponse writes a held response to the client: its headers (without
// Server, as reverse_proxy does), what annotate adds to them, its status
// and body. The held body may have been cut (maxHeldError): the length
// sent is the length of what is sent.
func writeHeldResponse(w http.ResponseWriter, res gateResult, annotate func(http.Header)) {
	dst := w.Header()
	delete(dst, "Server")
	maps.Copy(dst, res.header)
	annotate(dst)
	n := 0
	if res.body != nil {
		n = res.body.Len()
	}
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(res.status)
	if n > 0 {
		_, _ = w.Write(res.body.Bytes())
	}
}

// countAttempt counts an attempt sent upstream, by provider, outcome and
// client.
func countAttempt(req *llmRequest, p *Provider, outcome string) {
	req.logged.outcome = outcome
	if outcome == outcomeSuccess && req.client == nil {
		// the common case, without hashing the labels each time; the
		// series appears with the first success, as the others do
		c := p.successes.Load()
		if c == nil {
			counter := metrics.attempts.WithLabelValues(p.Name, outcome, "")
			c = &counter
			p.successes.Store(c)
		}
		(*c).Inc()
		return
	}
	metrics.attempts.WithLabelValues(p.Name, outcome, req.client.label()).Inc()
}

// Outcomes of attempts_total besides the failure classes.
const (
	outcomeSuccess       = "success"
	outcomePassedThrough = "passed_through"
)

func countTokens(p *Provider, model string, c *Client, u streaminspect.Usage) {
	c.countUsage(u)
	if u.InputTokens <= 0 && u.OutputTokens <= 0 && u.CacheReadTokens <= 0 && u.CacheCreationTokens <= 0 {
		return
	}
	counters := p.tokenCounters(model, c)
	for i, n := range [...]int64{u.InputTokens, u.OutputTokens, u.CacheReadTokens, u.CacheCreationTokens} {
		if n > 0 {
			counters.c[i].Add(float64(n))
		}
	}
}

// tokenKinds are the kind label values of tokens_total, in Usage's order.
var tokenKinds = [...]string{"input", "output", "cache_read", "cache_creation"}

// modelTokenCounters are the tokens_total series of one provider, model
// and client.
type modelTokenCounters struct {
	model  string // as sent upstream
	client *Client
	c      [len(tokenKinds)]prometheus.Counter
}

// tokenCounters returns the tokens_total series for a model and client.
// The last ones used are kept: requests through a provider mostly name
// the same model, and looking a series up hashes all its labels.
func (p *Provider) tokenCounters(model string, c *Client) *modelTokenCounters {
	if last := p.lastTokens.Load(); last != nil && last.model == model && last.client == c {
		return last
	}
	m := &modelTokenCounters{model: model, client: c}
	label := modelLabel(p.Name, model)
	for i, kind := range tokenKinds {
		m.c[i] = metrics.tokens.WithLabelValues(p.Name, label, kind, c.label())
	}
	p.lastTokens.Store(m)
	return m
}
