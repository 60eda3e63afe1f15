package failover

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// writeAnthropicError answers in Anthropic's error format, which every
// Messages-API client (Claude Code, the SDKs) understands and retries on
// 429/503 with Retry-After. A refusal that a retry cannot change (a
// missing or unknown key, a remote client, a body too large) says
// x-should-retry: false: without it Claude Code retries a 401 for three
// minutes before it tells the user.
func writeAnthropicError(w http.ResponseWriter, status int, errType, message string) {
	body, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}{Type: "error", Error: struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}{errType, message}})
	h := w.Header()
	if retryFutile(status) {
		h.Set("X-Should-Retry", "false")
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("Content-Encoding")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// retryFutile reports whether the same request, sent again, must meet the
// same refusal from the proxy: its own 4xx answers but a timeout (the
// body may arrive faster next time) and the rate limits, which say when
// to come back themselves.
func retryFutile(status int) bool {
	return status >= 400 && status < 500 && status != http.StatusRequestTimeout && status != http.StatusTooManyRequests
}

// skipped is a provider that did not admit a request.
type skipped struct {
	name    string
	class   Class
	retryAt time.Time
	limits  *capacity.Report // what it last reported of its limits to the client; nil: nothing
}

// answerNoneAdmits answers a request before any attempt, no provider
// admitting it: the answer headers and writeAllCooling's answer from one
// instant (so Retry-After and X-LLM-Providers agree), logged and
// announced.
func (h *Handler) answerNoneAdmits(w http.ResponseWriter, req *llmRequest, skips []skipped) {
	now := timeNow()
	h.setAnswerHeaders(w.Header(), now, req.client, req.clientKey, 0, nil)
	req.logged.status = writeAllCooling(w, skips, now)
	h.noteExhausted(skips)
}

// writeAllCooling answers a request no provider admits, without touching
// an upstream: 429 when every provider cools for rate_limit or quota, 503
// otherwise, with Retry-After until the soonest one admits again. It
// returns the status.
func writeAllCooling(w http.ResponseWriter, skips []skipped, now time.Time) int {
	status, errType := http.StatusTooManyRequests, "rate_limit_error"
	var soonest time.Time
	var first *skipped // the provider back soonest
	parts := make([]string, 0, len(skips))
	for i, s := range skips {
		if s.class != classify.RateLimit && s.class != classify.Quota {
			status, errType = http.StatusServiceUnavailable, "overloaded_error"
		}
		if soonest.IsZero() || s.retryAt.Before(soonest) {
			soonest, first = s.retryAt, &skips[i]
		}
		class := string(s.class)
		if class == "" {
			class = "probe in flight"
		}
		parts = append(parts, fmt.Sprintf("%s: %s, %s left", s.name, class, humanLeft(now, s.retryAt)))
	}
	if len(skips) == 0 {
		status, errType = http.StatusServiceUnavailable, "overloaded_error"
		soonest = now.Add(time.Second)
	}
	setRetryHeaders(w.Header(), now, soonest)
	if status == http.StatusTooManyRequests && first != nil {
		setUnifiedLimit(w.Header(), first.limits, now, soonest)
	}
	writeAnthropicError(w, status, errType,
		"llm_failover: no provider can take this request now ("+strings.Join(parts, "; ")+")")
	return status
}

// setUnifiedLimit says, in the unified headers of a subscription, that
// the limit the client meets is its subscription's, when the provider back
// soonest (whose return is the answer's Retry-After) last reported its
// limit spent: Claude Code then tells a subscriber "You've hit your limit
// · resets …" instead of "not your usage limit". Only an allow-list is
// written, from the parsed report (a known status, a window name, a
// flag), never the provider's header text; the reset is the instant the
// answer's Retry-After and X-LLM-Providers name.
func setUnifiedLimit(h http.Header, c *capacity.Report, now, at time.Time) {
	if c == nil || c.ExhaustedUntil(now).IsZero() {
		return // not out for its limit, or no longer by its own account
	}
	reset := at.Unix()
	if at.Nanosecond() > 0 {
		reset++ // rounded up, as Retry-After is
	}
	h.Set("Anthropic-Ratelimit-Unified-Status", capacity.StatusRejected)
	h.Set("Anthropic-Ratelimit-Unified-Reset", strconv.FormatInt(reset, 10))
	if c.RepresentativeClaim != "" {
		h.Set("Anthropic-Ratelimit-Unified-Representative-Claim", c.RepresentativeClaim)
	}
	if c.OverageStatus != "" {
		h.Set("Anthropic-Ratelimit-Unified-Overage-Status", c.OverageStatus)
	}
	if c.FallbackAvailable {
		h.Set("Anthropic-Ratelimit-Unified-Fallback", "available")
	}
}

// shouldRetryWithin is how soon a provider must admit again for a client's
// own retry to be worth it. Past it x-should-retry says false: the SDKs
// would retry for minutes and give up anyway (a subscription's reset may
// be hours away), so they should tell the user at once.
const shouldRetryWithin = 60 * time.Second

// setRetryHeaders says when to come back, in every form the SDKs read:
// Retry-After (whole seconds), retry-after-ms (the Anthropic SDKs prefer
// it) and x-should-retry (which they obey over the status code).
func setRetryHeaders(h http.Header, now, at time.Time) {
	h.Set("Retry-After", strconv.Itoa(retryAfterSeconds(now, at)))
	ms := max(at.Sub(now).Milliseconds(), 1)
	h.Set("Retry-After-Ms", strconv.FormatInt(ms, 10))
	h.Set("X-Should-Retry", strconv.FormatBool(at.Sub(now) <= shouldRetryWithin))
}

// failedAttempt is one provider's failure on the way to an exhausted
// answer.
type failedAttempt struct {
	provider string
	class    Class
	status   int    // 0: no response
	message  string // the upstream's error message, or why none was sent
}

// maxFailureMessage bounds each provider's message in a synthesized answer.
const maxFailureMessage = 200

// describeFailures names each provider's failure, in the order tried:
// "a: server_error (HTTP 500: broke); b: unreachable (dial tcp ...)".
func describeFailures(failed []failedAttempt) string {
	var b strings.Builder
	for i, f := range failed {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(f.provider + ": " + string(f.class))
		msg := f.message
		if len(msg) > maxFailureMessage {
			msg = msg[:maxFailureMessage] + "..."
		}
		switch {
		case f.status != 0 && msg != "":
			fmt.Fprintf(&b, " (HTTP %d: %s)", f.status, msg)
		case f.status != 0:
			fmt.Fprintf(&b, " (HTTP %d)", f.status)
		case msg != "":
			b.WriteString(" (" + msg + ")")
		}
	}
	return b.String()
}

// setAnswerHeaders marks an answer the proxy writes itself or passes on
// after every attempt failed: X-LLM-Attempts (attempts sent upstream, 0
// when none was) and X-LLM-Providers, each provider in priority order as
// a structured-field list item:
//
//	"a";state=open;class=rate_limit;retry-after=30, "b";state=closed;class=unsupported;status=404
//
// class and status are this request's failure at that provider, else the
// class that opened its breaker; retry-after is the seconds until an open
// breaker admits again. A client limited to some providers (client) sees
// only those: the others are none of its business.
func (h *Handler) setAnswerHeaders(hdr http.Header, now time.Time, client *Client, clientKey string, attempts int, failed []failedAttempt) {
	hdr.Set("X-LLM-Attempts", strconv.Itoa(attempts))
	providers := h.Providers
	if len(providers) == 0 {
		h.wrapped.mu.Lock()
		providers = slices.Clone(h.wrapped.order)
		h.wrapped.mu.Unlock()
	}
	if len(providers) == 0 {
		return
	}
	var b strings.Builder
	for i, p := range providers {
		if !client.mayUse(i) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		s := p.state.breakers.snapshotFor(now, clientKey, p.passthrough)
		b.WriteString(strconv.Quote(p.Name) + ";state=" + string(s.State))
		class, status := Class(""), 0
		if s.State != breaker.Closed {
			class = s.LastClass
		}
		for _, f := range failed {
			if f.provider == p.Name {
				class, status = f.class, f.status
			}
		}
		if class != "" {
			b.WriteString(";class=" + string(class))
		}
		if status != 0 {
			b.WriteString(";status=" + strconv.Itoa(status))
		}
		if s.State == breaker.Open {
			// the same time the answer's Retry-After is worked out from
			retryAt := s.Until
			if len(h.Providers) > 0 {
				retryAt = p.honestRetryAt(now, clientKey, s.Until)
			}
			b.WriteString(";retry-after=" + strconv.Itoa(retryAfterSeconds(now, retryAt)))
		}
		if !p.passthrough {
			// the model families this provider is benched for
			p.state.breakers.eachFamily(func(f string, fb *providerBreaker) {
				if fs := fb.Snapshot(now); fs.State == breaker.Open && now.Before(fs.Until) {
					b.WriteString(";cooling=" + f)
				}
			})
		}
	}
	hdr.Set("X-LLM-Providers", b.String())
}

// retryAfterSeconds is a Retry-After value in whole seconds, at least 1.
func retryAfterSeconds(now, at time.Time) int {
	d := at.Sub(now)
	secs := d / time.Second
	if d%time.Second > 0 {
		secs++ // rounded up
	}
	return int(max(secs, 1))
}

// humanLeft is the time until t as a person reads it, rounded to the
// nearest unit rather than down: "45 seconds", "10 minutes" (for 9m59s),
// "2h58m", "3d4h".
func humanLeft(now, t time.Time) string {
	d := t.Sub(now)
	switch {
	case d <= 0:
		return "no time"
	case d < time.Minute:
		return plural(int(math.Ceil(d.Seconds())), "second")
	case d < time.Hour-30*time.Second:
		return plural(int(d.Round(time.Minute)/time.Minute), "minute")
	case d < 24*time.Hour-30*time.Second:
		return compactDuration(d.Round(time.Minute))
	}
	return compactDuration(d.Round(time.Hour))
}

// plural writes "1 minute", "2 minutes".
func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return strconv.Itoa(n) + " " + unit + "s"
}
