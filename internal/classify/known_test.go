package classify

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// echoShapes are the ways Anthropic repeats client bytes inside a 400
// invalid_request_error: the model, an anthropic-beta value, a value from
// the messages.
var echoShapes = []func(x string) string{
	func(x string) string { return x + " is not a valid model ID" },
	func(x string) string { return "model: " + x },
	func(x string) string {
		return "Unexpected value(s) `" + x + "` for the `anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again without the header."
	},
	func(x string) string {
		return "messages.0.content.0.type: Input tag '" + x + "' found using 'type' does not match any of the expected tags: 'text', 'image', 'tool_use', 'tool_result'"
	},
	func(x string) string { return "messages: text content blocks must be non-empty, got " + x },
}

// A known message is matched whole: every one of them, with client bytes
// put before or after it in any echo shape, stays client_error.
var knownSamples = []struct {
	status int
	msg    string
	class  Class
	scope  string
}{
	{400, "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.", Quota, ScopeProvider},
	{400, "You're out of extra usage. Add more at claude.ai/settings/usage and keep going.", Quota, ScopeProvider},
	{400, "You're out of extra usage. Ask your workspace admin to add more so you can keep going.", Quota, ScopeProvider},
	{429, "You're out of extra usage. Add more at claude.ai/settings/usage and keep going.", Quota, ScopeProvider},
	{400, "Third-party apps now draw from your extra usage, not your plan limits. We've added a $100 credit to get you started. Claim it at claude.ai/settings/usage and keep going.", Quota, ScopeRequest},
	{400, "Third-party apps now draw from your extra usage, not your plan limits. We've added a $1,000 credit to get you started. Claim it at claude.ai/settings/usage and keep going.", Quota, ScopeRequest},
	{400, "Third-party apps now draw from extra usage, not plan limits. We've added a credit to your organization to get you started. Ask your workspace admin to claim it and keep going.", Quota, ScopeRequest},
	{429, "Extra usage is required for long context requests.", RateLimit, ScopeRequest},
	{429, "Usage limit reached for 5 hour. Your limit will reset at 2026-08-27 21:31:39", Quota, ScopeProvider},
	{400, "prompt is too long: 215000 tokens > 200000 maximum", ContextWindow, ScopeRequest},
	{400, "input length and `max_tokens` exceed context limit: 188000 + 32000 > 200000, decrease input length or `max_tokens` and try again", ContextWindow, ScopeRequest},
	{400, "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'", Repairable, ScopeRequest},
	{400, "messages.1.content.0: Invalid `signature` in `thinking` block", Repairable, ScopeRequest},
	{400, "messages.3.content.2.thinking.signature: Field required", Repairable, ScopeRequest},
}

func TestKnownMessages(t *testing.T) {
	t.Parallel()
	types := map[int]string{400: "invalid_request_error", 429: "rate_limit_error"}
	for _, k := range knownSamples {
		v := classifyDefault(k.status, http.Header{}, []byte(clsAnthropic(types[k.status], k.msg)), nil, clsNow)
		if v.Class != k.class || v.Scope != k.scope {
			t.Errorf("%d %.60q: %s/%q, want %s/%q", k.status, k.msg, v.Class, v.Scope, k.class, k.scope)
		}
		if k.scope == ScopeRequest && !v.ResetAt.IsZero() {
			t.Errorf("%.60q: a request-scoped verdict with a reset %v", k.msg, v.ResetAt)
		}
		// under a status it is not known with, the message decides nothing
		if w := classifyDefault(404, http.Header{}, []byte(clsAnthropic("not_found_error", k.msg)), nil, clsNow); w.Class != ClientError {
			t.Errorf("404 %.60q: %s, want client_error", k.msg, w.Class)
		}
		// echoed with anything around it: the request's fault
		for i, shape := range echoShapes {
			msg := shape(k.msg)
			if w := classifyDefault(400, http.Header{}, []byte(clsAnthropic("invalid_request_error", msg)), nil, clsNow); w.Class != ClientError || w.Scope != ScopeProvider {
				t.Errorf("echo shape %d of %.60q: %s/%q, want client_error", i, k.msg, w.Class, w.Scope)
			}
		}
	}
}

// The long-context refusal carries the extra-usage (overage) status
// rejected while the plan's windows allow: that is no account quota.
func TestOverageRejectedIsNotQuota(t *testing.T) {
	t.Parallel()
	h := clsHeader(
		"anthropic-ratelimit-unified-status", "allowed",
		"anthropic-ratelimit-unified-overage-status", "rejected",
		"anthropic-ratelimit-unified-overage-reset", clsEpoch(clsNow.Add(48*time.Hour)),
	)
	v := classifyDefault(429, h, []byte(clsAnthropic("rate_limit_error", "Extra usage is required for long context requests.")), nil, clsNow)
	if v.Class != RateLimit || v.Scope != ScopeRequest || !v.ResetAt.IsZero() {
		t.Fatalf("verdict %+v, want a request-scoped rate_limit without reset", v)
	}
	if v := classifyDefault(429, h, nil, nil, clsNow); v.Class != RateLimit {
		t.Fatalf("429 with only the overage rejected: %s, want rate_limit", v.Class)
	}
}

// FuzzClientTextEchoed: bytes a client places in the model, in
// anthropic-beta or in message text, echoed back by the provider inside an
// invalid_request_error, never move the class away from client_error.
func FuzzClientTextEchoed(f *testing.F) {
	for _, s := range []string{
		"billing-2025", "quota-x", "insufficient_quota", "credit balance", "usage limit",
		"prompt is too long: 1 tokens > 2 maximum", "context_length_exceeded", "too many tokens",
		"Extra usage is required for long context requests.",
		"tool_use.id: String should match pattern",
	} {
		f.Add(s, uint8(0))
	}
	for _, k := range knownSamples {
		f.Add(k.msg, uint8(len(k.msg)))
	}
	f.Fuzz(func(t *testing.T, x string, shape uint8) {
		msg := echoShapes[int(shape)%len(echoShapes)](x)
		body := []byte(clsAnthropic("invalid_request_error", msg))
		for _, status := range []int{400, 413, 422} {
			v := classifyDefault(status, http.Header{}, body, nil, clsNow)
			if v.Class != ClientError || v.Scope != ScopeProvider || !v.ResetAt.IsZero() {
				t.Fatalf("%d %q: %+v, want client_error", status, msg, v)
			}
		}
		// the same text in an error type a provider never sends: not
		// quota or context_window either (the status decides)
		if v := classifyDefault(400, http.Header{}, []byte(strings.ReplaceAll(string(body), "invalid_request_error", "x")), nil, clsNow); v.Class != ClientError {
			t.Fatalf("400 untyped %q: %s, want client_error", msg, v.Class)
		}
	})
}

func TestUnifiedRejectionScope(t *testing.T) {
	t.Parallel()
	reset := clsNow.Add(48 * time.Hour)
	cases := []struct {
		name   string
		header http.Header
		scope  string
	}{
		{"7d_sonnet rejected", clsHeader(
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-7d_sonnet-status", "rejected",
			"anthropic-ratelimit-unified-7d_sonnet-utilization", "1.0",
			"anthropic-ratelimit-unified-7d_sonnet-reset", clsEpoch(reset),
			"anthropic-ratelimit-unified-7d-status", "allowed",
			"anthropic-ratelimit-unified-representative-claim", "seven_day_sonnet"), "sonnet"},
		{"only the claim names opus", clsHeader(
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", clsEpoch(reset),
			"anthropic-ratelimit-unified-representative-claim", "seven_day_opus"), "opus"},
		{"the claim names the account window", clsHeader(
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-representative-claim", "five_hour"), ScopeProvider},
		{"7d and 7d_sonnet rejected", clsHeader(
			"anthropic-ratelimit-unified-7d_sonnet-status", "rejected",
			"anthropic-ratelimit-unified-7d-status", "rejected"), ScopeProvider},
		{"two families", clsHeader(
			"anthropic-ratelimit-unified-7d_sonnet-status", "rejected",
			"anthropic-ratelimit-unified-7d_opus-status", "rejected"), ScopeProvider},
		{"unknown family", clsHeader(
			"anthropic-ratelimit-unified-7d_mythos-status", "rejected"), ScopeProvider},
		{"5h rejected", clsHeader("anthropic-ratelimit-unified-5h-status", "rejected"), ScopeProvider},
	}
	for _, c := range cases {
		v := classifyDefault(429, c.header, []byte(clsAnthropic("rate_limit_error", "Rate limited")), nil, clsNow)
		if v.Class != Quota || v.Scope != c.scope {
			t.Errorf("%s: %s/%q, want quota/%q", c.name, v.Class, v.Scope, c.scope)
		}
	}
	if v := classifyDefault(429, cases[0].header, nil, nil, clsNow); !v.ResetAt.Equal(reset) {
		t.Errorf("7d_sonnet: reset %v, want the window's %v", v.ResetAt, reset)
	}
	for model, want := range map[string]string{"claude-sonnet-4-5": "sonnet", "claude-3-5-Sonnet-20241022": "sonnet",
		"claude-opus-4-1": "opus", "claude-haiku-4-5": "haiku", "glm-4.6": "", "": ""} {
		if got := FamilyOf(model); got != want {
			t.Errorf("FamilyOf(%q) = %q, want %q", model, got, want)
		}
	}
}
