package classify

import (
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// fzHeader parses "Name: value" lines into a header, the way a response's
// header would arrive (names canonicalized).
func fzHeader(s string) http.Header {
	h := make(http.Header)
	for _, line := range strings.Split(s, "\n") {
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		h.Add(strings.TrimSpace(name), strings.TrimSpace(value))
	}
	return h
}

func FuzzClassify(f *testing.F) {
	type seed struct {
		status    int
		body      string
		header    string
		ruleCond  string
		ruleClass uint8
	}
	for _, s := range []seed{
		{429, clsAnthropic("rate_limit_error", "slow down"), "Retry-After: 120", "", 0},
		{429, clsAnthropic("rate_limit_error", "x"), "anthropic-ratelimit-unified-status: rejected\nanthropic-ratelimit-unified-reset: 1772370000", "", 0},
		{429, "", "anthropic-ratelimit-unified-5h-status: rejected\nanthropic-ratelimit-unified-5h-reset: 1772370000", "", 0},
		{429, clsOpenAIQuota, "", "", 0},
		{429, "", "anthropic-ratelimit-requests-remaining: 0\nanthropic-ratelimit-requests-reset: 2026-03-01T12:00:40Z", "", 0},
		{402, "", "", "", 0},
		{400, clsAnthropic("invalid_request_error", "Your credit balance is too low"), "", "", 0},
		{400, clsAnthropic("invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"), "", "", 0},
		{400, clsAnthropic("invalid_request_error", "messages.1.content.0: Invalid `signature` in `thinking` block"), "", "", 0},
		{401, clsAnthropic("authentication_error", "invalid x-api-key"), "", "", 0},
		{529, clsAnthropic("overloaded_error", "Overloaded"), "Retry-After: Sun, 01 Mar 2026 12:02:00 GMT", "", 0},
		{502, clsHTML502, "", "", 0},
		{500, "boom", "Retry-After: NaN", "boom", 3},
		{200, clsAnthropic("overloaded_error", "Overloaded"), "", "", 0},
		{-1, "", "", "", 0},
		{1 << 20, "{", "Retry-After: 1e9", "", 0},
		{429, "", "Retry-After: Fri, 01 Jan 9999 00:00:00 GMT", "", 0},
		{429, "", "anthropic-ratelimit-tokens-remaining: 0\nanthropic-ratelimit-tokens-reset: 9999-12-31T23:59:59Z", "", 0},
		{529, clsAnthropic("overloaded_error", "Overloaded"), "anthropic-ratelimit-unified-status: allowed\nanthropic-ratelimit-unified-reset: 4102444800", "", 0},
		{429, "", "anthropic-ratelimit-unified-status: rejected\nanthropic-ratelimit-unified-reset: 9223372036854775807", "", 0},
		{429, "", "anthropic-ratelimit-unified-status: rejected\nanthropic-ratelimit-unified-7d_sonnet-status: rejected\nanthropic-ratelimit-unified-7d_sonnet-reset: 1772370000\nanthropic-ratelimit-unified-representative-claim: seven_day_sonnet", "", 0},
		{429, "", "anthropic-ratelimit-unified-status: rejected\nanthropic-ratelimit-unified-representative-claim: seven_day_opus", "", 0},
		{429, clsAnthropic("rate_limit_error", "Extra usage is required for long context requests."), "anthropic-ratelimit-unified-overage-status: rejected", "", 0},
	} {
		f.Add(s.status, []byte(s.body), s.header, s.ruleCond, s.ruleClass)
	}
	for _, c := range apiErrorCases {
		f.Add(c.status, []byte(clsAnthropic(c.errType, c.message)), "", "", uint8(0))
	}
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, status int, body []byte, header, ruleCond string, ruleClass uint8) {
		h := fzHeader(header)
		var rules []Rule
		if ruleCond != "" {
			// rule status from the body's length, so it sometimes matches
			rules = append(rules, Rule{Status: []int{0, status, 400 + len(body)%200}[len(ruleCond)%3], BodyContains: ruleCond,
				Class: All[int(ruleClass)%len(All)]})
		}
		orig := string(body)
		v := classifyDefault(status, h, body, rules, now)
		if string(body) != orig {
			t.Fatal("Classify modified the body")
		}
		if status < 400 {
			if v != (Verdict{}) {
				t.Fatalf("status %d: verdict %+v, want the zero verdict", status, v)
			}
			return
		}
		if v.Scope != ScopeProvider && v.Scope != ScopeRequest && !slices.Contains(Families, v.Scope) {
			t.Fatalf("scope %q is neither provider, request nor a family", v.Scope)
		}
		if _, ok := Parse(string(v.Class)); !ok {
			t.Fatalf("status %d: class %q is not one of All", status, v.Class)
		}
		if v.ResetAt.After(now.Add(DefaultMaxReset)) {
			t.Fatalf("ResetAt %v is past the cap (now+%v)", v.ResetAt, DefaultMaxReset)
		}
		if !v.ResetAt.IsZero() {
			switch v.Class {
			case RateLimit, Quota, Overloaded, ServerError:
			default:
				t.Fatalf("class %q with a ResetAt %v", v.Class, v.ResetAt)
			}
		}
		// pure: the same inputs give the same verdict (header maps iterate
		// in random order)
		for range 3 {
			if w := classifyDefault(status, h, body, rules, now); w != v {
				t.Fatalf("Classify is not deterministic: %+v then %+v", v, w)
			}
		}
	})
}
