// Package classify decides what an upstream outcome means: the class of an
// error response or an SSE error event (fail over? cool the provider down?)
// and when the provider said to come back. Pure: it reads only what it is
// given, so it is tested and fuzzed without a server.
package classify

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Class is what an upstream outcome means for the provider and the request.
type Class string

// The outcome classes. Every name is also a valid `cooldown` key.
const (
	None          Class = ""               // success: nothing to do
	RateLimit     Class = "rate_limit"     // short-term limit: fail over, cool down briefly
	Quota         Class = "quota"          // usage or credit exhausted: fail over, cool down long
	Overloaded    Class = "overloaded"     // provider overloaded: fail over, cool down briefly
	Auth          Class = "auth"           // credential refused: fail over, cool until a new credential
	ServerError   Class = "server_error"   // 5xx: fail over, cool down briefly
	Unreachable   Class = "unreachable"    // no response: fail over, cool down briefly
	ContextWindow Class = "context_window" // prompt too long for this model: fail over, cool nothing
	Unsupported   Class = "unsupported"    // 501/505, or an endpoint this provider lacks: fail over, cool nothing
	Repairable    Class = "repairable"     // history another provider produced: repair, retry same provider
	ClientError   Class = "client_error"   // the request's own fault: pass through

	// Manual marks a cooldown set by hand through the admin API.
	Manual Class = "manual"
)

// All lists every failure class, in the order the README shows them.
var All = []Class{
	RateLimit, Quota, Overloaded, Auth, ServerError,
	Unreachable, ContextWindow, Unsupported, Repairable, ClientError,
}

// Parse returns the class named s.
func Parse(s string) (Class, bool) {
	for _, c := range All {
		if string(c) == s {
			return c, true
		}
	}
	return None, false
}

// FailsOver reports whether a request that met this class goes to the next
// provider.
func (c Class) FailsOver() bool {
	switch c {
	case RateLimit, Quota, Overloaded, Auth,
		ServerError, Unreachable, ContextWindow, Unsupported:
		return true
	}
	return false
}

// Cools reports whether this class cools the provider down.
func (c Class) Cools() bool {
	return c.FailsOver() && c != ContextWindow && c != Unsupported
}

// Verdict is the classification of one upstream outcome.
type Verdict struct {
	Class Class
	// ResetAt is when the provider said it will accept requests again
	// (Retry-After, a rate-limit reset header); zero when it did not say.
	ResetAt time.Time
	// ErrorType and Message are the upstream's own error type and message,
	// for logs and the status endpoint.
	ErrorType string
	Message   string
	// Scope is what the verdict cools: ScopeProvider (the whole provider,
	// when the class cools), ScopeRequest (this request fails over and
	// nothing is benched: the provider refused what this request asks, not
	// every request), or one of Families (a model-scoped subscription
	// window is spent: requests for that family only).
	Scope string
	// Retry holds a repairable refusal back from the client: the handler
	// has a repair for the request and retries the same provider with it.
	// Set by the handler, never by Classify.
	Retry bool
}

// Scopes of a verdict.
const (
	ScopeProvider = ""        // the class cools the provider for every request
	ScopeRequest  = "request" // this request fails over; nothing cools
)

// Rule maps an upstream response to a class; user rules from the Caddyfile
// are checked before the built-in ones.
type Rule struct {
	// Status is the HTTP status this rule matches; 0 matches any error status.
	Status int `json:"status,omitempty"`
	// BodyContains is a case-insensitive substring of the (decoded) error
	// body; empty matches any body.
	BodyContains string `json:"body_contains,omitempty"`
	// Class is the class the rule assigns.
	Class Class `json:"class"`
}

func (r Rule) matches(status int, lowerBody []byte) bool {
	if r.Status != 0 && r.Status != status {
		return false
	}
	return r.BodyContains == "" || bytes.Contains(lowerBody, []byte(strings.ToLower(r.BodyContains)))
}

// upstreamError is the part of an error body the classifier reads; it fits
// Anthropic's {"type":"error","error":{"type","message"}} and OpenAI's
// {"error":{"type","code","message"}}.
type upstreamError struct {
	Type  string `json:"type"`
	Error struct {
		Type    string          `json:"type"`
		Code    json.RawMessage `json:"code"`
		Message string          `json:"message"`
	} `json:"error"`
	Message string `json:"message"`
}

// MaxBody bounds how much of an error body is examined.
const MaxBody = 64 << 10

// DefaultMaxReset caps how far ahead a provider's own reset time may put
// the end of a cooldown: just over the longest subscription window (7
// days), so no header can cool a provider for ever.
const DefaultMaxReset = 8 * 24 * time.Hour

// Response turns an upstream response (status, headers and the decoded
// error body) into a verdict. Pure: it looks at nothing else. User rules
// come first, then structured signals (error type and code, the unified
// limit headers), then the known messages (known.go), then the status; no
// word a client could make the provider repeat decides a class. A
// reset time the provider gives is cut to maxReset from now
// (DefaultMaxReset when maxReset is not positive).
func Response(status int, header http.Header, body []byte, rules []Rule, now time.Time, maxReset time.Duration) Verdict {
	if status < 400 {
		return Verdict{Class: None}
	}
	if len(body) > MaxBody {
		body = body[:MaxBody]
	}
	var ue upstreamError
	_ = json.Unmarshal(body, &ue) // garbage bodies are classified by status alone
	v := Verdict{ErrorType: ue.Error.Type, Message: ue.Error.Message}
	code := errorCode(ue.Error.Code)
	if v.ErrorType == "" {
		v.ErrorType = code
	}
	if v.Message == "" {
		v.Message = ue.Message
	}
	v.Class, v.Scope = classOf(status, header, v.ErrorType, code, v.Message, body, rules)
	switch v.Class {
	case RateLimit, Quota, Overloaded, ServerError:
		if v.Scope == ScopeRequest {
			break // nothing cools, so no time to come back
		}
		if maxReset <= 0 {
			maxReset = DefaultMaxReset
		}
		v.ResetAt = resetHint(header, v.Class, now, maxReset)
	}
	return v
}

func classOf(status int, header http.Header, errType, code, msg string, body []byte, rules []Rule) (Class, string) {
	if len(rules) > 0 {
		lower := bytes.ToLower(body)
		for _, r := range rules {
			if r.matches(status, lower) {
				return r.Class, ScopeProvider
			}
		}
	}
	// Structured signals.
	if status == http.StatusTooManyRequests && unifiedRejected(header) {
		return Quota, rejectedScope(header)
	}
	if errType == "billing_error" || errType == "insufficient_quota" || code == "insufficient_quota" {
		return Quota, ScopeProvider
	}
	if code == "context_length_exceeded" && status < 500 {
		return ContextWindow, ScopeRequest
	}
	// Known messages, matched whole.
	if c, scope, ok := knownClass(status, msg); ok {
		return c, scope
	}
	if status == http.StatusNotImplemented || status == http.StatusHTTPVersionNotSupported {
		// the request is not supported here, which says nothing about the
		// provider's health: another provider may support it
		return Unsupported, ScopeProvider
	}
	if c, ok := classOfErrorType(errType); ok {
		if c == ServerError && (status == 503 || status == 529) {
			return Overloaded, ScopeProvider // a generic api_error says less than the status
		}
		return c, ScopeProvider
	}
	// Status rules.
	switch {
	case status == 402:
		return Quota, ScopeProvider
	case status == 429:
		return RateLimit, ScopeProvider
	case status == 401 || status == 403:
		return Auth, ScopeProvider
	case status == 529 || status == 503:
		return Overloaded, ScopeProvider
	case status == 408 || status >= 500:
		return ServerError, ScopeProvider
	}
	return ClientError, ScopeProvider
}

// OfErrorType maps an error.type (Anthropic's or OpenAI's), as found in
// an SSE error event, to a class. Unknown types are server errors: a stream
// that failed for an unknown reason is worth another provider.
func OfErrorType(errType string) Class {
	if c, ok := classOfErrorType(errType); ok {
		return c
	}
	return ServerError
}

func classOfErrorType(t string) (Class, bool) {
	switch t {
	case "rate_limit_error", "rate_limit_exceeded", "rate_limited":
		return RateLimit, true
	case "overloaded_error", "overloaded", "service_unavailable":
		return Overloaded, true
	case "authentication_error", "permission_error", "invalid_api_key":
		return Auth, true
	case "billing_error", "insufficient_quota":
		return Quota, true
	case "api_error", "server_error", "timeout_error", "internal_server_error":
		return ServerError, true
	case "invalid_request_error", "not_found_error", "request_too_large":
		return ClientError, true
	}
	return None, false
}

func errorCode(raw json.RawMessage) string {
	if len(raw) == 0 || raw[0] != '"' {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

const unifiedPrefix = "Anthropic-Ratelimit-Unified-"

// unifiedRejected reports whether a subscription's unified limit says
// "rejected" (anthropic-ratelimit-unified-status or one of its windows,
// such as -5h-status / -7d-status). The overage (extra usage) and fallback
// statuses are not the plan's limits: extra usage refused says only that
// requests billed to it (long context) are refused.
func unifiedRejected(h http.Header) bool {
	for k, vs := range h {
		if strings.HasPrefix(k, unifiedPrefix) && strings.HasSuffix(k, "-Status") &&
			len(vs) > 0 && strings.EqualFold(vs[0], "rejected") && !notPlanWindow(k) {
			return true
		}
	}
	return false
}

// notPlanWindow reports whether a unified header names the overage or
// fallback status rather than a window of the plan.
func notPlanWindow(k string) bool {
	w := strings.TrimSuffix(strings.TrimPrefix(k, unifiedPrefix), "-Status")
	return strings.EqualFold(w, "overage") || strings.EqualFold(w, "fallback")
}

// resetHint returns when the provider said to come back, or zero; never
// later than now+maxReset. For a quota class the unified reset wins;
// otherwise Retry-After, then (for rate_limit) the latest
// anthropic-ratelimit-*-reset of a limit that is exhausted. The unified
// reset of a subscription applies only to quota and rate_limit: an
// overloaded or failing provider carries its (allowed) window's reset on
// every answer, and that says nothing about when it recovers.
func resetHint(h http.Header, class Class, now time.Time, maxReset time.Duration) time.Time {
	limit := now.Add(maxReset)
	capped := func(t time.Time) time.Time {
		if t.After(limit) {
			return limit
		}
		return t
	}
	if class == Quota {
		if t := unifiedReset(h); t.After(now) {
			return capped(t)
		}
	}
	if t := retryAfter(h.Get("Retry-After"), now, maxReset); !t.IsZero() {
		return capped(t)
	}
	if class != RateLimit && class != Quota {
		return time.Time{}
	}
	var latest, latestExhausted time.Time
	for k, vs := range h {
		if len(vs) == 0 || !strings.HasPrefix(k, "Anthropic-Ratelimit-") || !strings.HasSuffix(k, "-Reset") ||
			strings.HasPrefix(k, unifiedPrefix) {
			continue
		}
		t, err := time.Parse(time.RFC3339, vs[0])
		if err != nil {
			continue
		}
		if t.After(latest) {
			latest = t
		}
		remaining := strings.TrimSuffix(k, "-Reset") + "-Remaining"
		if h.Get(remaining) == "0" && t.After(latestExhausted) {
			latestExhausted = t
		}
	}
	if !latestExhausted.IsZero() {
		latest = latestExhausted
	}
	if latest.After(now) {
		return capped(latest)
	}
	if class == RateLimit {
		if t := unifiedReset(h); t.After(now) {
			return capped(t)
		}
	}
	return time.Time{}
}

// unifiedReset reads anthropic-ratelimit-unified-reset (epoch seconds), or
// the latest reset among the windows that are rejected.
func unifiedReset(h http.Header) time.Time {
	var latest time.Time
	for k, vs := range h {
		if len(vs) == 0 || !strings.HasPrefix(k, unifiedPrefix) || !strings.HasSuffix(k, "-Reset") {
			continue
		}
		window := strings.TrimSuffix(k, "-Reset")
		if notPlanWindow(window + "-Status") {
			continue
		}
		if window+"-" != unifiedPrefix { // a window such as -5h: only when it is the rejected one
			if !strings.EqualFold(h.Get(window+"-Status"), "rejected") {
				continue
			}
		}
		secs, err := strconv.ParseInt(strings.TrimSpace(vs[0]), 10, 64)
		if err != nil || secs <= 0 {
			continue
		}
		if t := time.Unix(secs, 0); t.After(latest) {
			latest = t
		}
	}
	return latest
}

// retryAfter parses a Retry-After value: delay-seconds or an HTTP-date.
// A delay over maxReset is cut to it (before it can overflow a Duration).
func retryAfter(v string, now time.Time, maxReset time.Duration) time.Time {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if !(secs > 0) { // also rejects NaN
			return time.Time{}
		}
		if secs > maxReset.Seconds() {
			return now.Add(maxReset)
		}
		return now.Add(time.Duration(secs * float64(time.Second)))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t
	}
	return time.Time{}
}

// Families are the model families a subscription can limit apart from the
// account (its per-model weekly windows, such as 7d_sonnet), in the order
// they are shown. A cooldown scoped to a family benches only requests
// whose model (after mapping) is of that family. The list is fixed, so the
// scopes of a provider are bounded; a window of any other name is taken
// for the whole account.
var Families = []string{"opus", "sonnet", "haiku"}

// FamilyOf returns the family a model name belongs to ("claude-sonnet-4-5"
// is sonnet), or "" when it names none of Families.
func FamilyOf(model string) string {
	if len(model) > 256 {
		return ""
	}
	for _, f := range Families {
		if containsFold(model, f) {
			return f
		}
	}
	return ""
}

func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}

// windowFamily returns the family of a model-scoped window name (7d_sonnet,
// seven_day_opus), or "" for an account-wide or unknown window.
func windowFamily(name string) string {
	_, f, ok := strings.Cut(strings.ToLower(name), "_")
	for ok && strings.Contains(f, "_") {
		_, f, ok = strings.Cut(f, "_") // seven_day_sonnet
	}
	if !ok {
		return ""
	}
	for _, known := range Families {
		if f == known {
			return known
		}
	}
	return ""
}

// rejectedScope returns the scope of a unified rejection: a family when
// every window that says rejected is that family's (or, when only the
// overall status says it, the representative claim names that family's
// window); ScopeProvider when any account-wide or unknown window is
// rejected.
func rejectedScope(h http.Header) string {
	family, windows := "", 0
	for k, vs := range h {
		if !strings.HasPrefix(k, unifiedPrefix) || !strings.HasSuffix(k, "-Status") || len(vs) == 0 ||
			!strings.EqualFold(vs[0], "rejected") || notPlanWindow(k) {
			continue
		}
		w := strings.TrimSuffix(strings.TrimPrefix(k, unifiedPrefix), "-Status")
		if w == "" || k == unifiedPrefix+"Status" {
			continue // the overall status: says which window below
		}
		windows++
		f := windowFamily(w)
		if f == "" || (family != "" && f != family) {
			return ScopeProvider
		}
		family = f
	}
	if windows == 0 {
		return windowFamily(h.Get(unifiedPrefix + "Representative-Claim"))
	}
	return family
}
