package classify

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// classifyDefault classifies with the default cap on reset times.
func classifyDefault(status int, h http.Header, body []byte, rules []Rule, now time.Time) Verdict {
	return Response(status, h, body, rules, now, 0)
}

// clsNow is the fixed clock of the classifier tests (whole seconds, so
// HTTP-dates and epoch seconds round-trip exactly).
var clsNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// clsAnthropic builds an Anthropic error body.
func clsAnthropic(errType, message string) string {
	b, err := json.Marshal(map[string]any{
		"type":  "error",
		"error": map[string]any{"type": errType, "message": message},
	})
	if err != nil {
		panic(err)
	}
	return string(b)
}

// clsHeader builds a header from name/value pairs, canonicalizing names the
// way net/http does for a real response.
func clsHeader(kv ...string) http.Header {
	h := make(http.Header)
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

// clsUnified is a subscription's unified rate limit headers: its overall
// status, and the reset as epoch seconds.
func clsUnified(status string, reset time.Time) http.Header {
	return clsHeader("anthropic-ratelimit-unified-status", status, "anthropic-ratelimit-unified-reset", clsEpoch(reset))
}

// clsExhausted is the rate limit headers of an exhausted API key limit
// (requests, tokens, input-tokens, output-tokens) that resets at reset.
func clsExhausted(limit, reset string) http.Header {
	return clsHeader("anthropic-ratelimit-"+limit+"-remaining", "0", "anthropic-ratelimit-"+limit+"-reset", reset)
}

// clsMerge is the headers of all of hs.
func clsMerge(hs ...http.Header) http.Header {
	out := make(http.Header)
	for _, h := range hs {
		for k, vs := range h {
			out[k] = append(out[k], vs...)
		}
	}
	return out
}

func clsEpoch(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

const (
	clsOpenAIQuota = `{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}`
	clsOpenAIRate  = `{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29000, Requested 2000. Please try again in 2s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`
	clsOpenAICtx   = `{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}`
	clsHTML502     = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
	clsHTML503     = `<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body><h1>Service Unavailable</h1><p>The server is temporarily unable to service your request.</p></body></html>`
	clsHTML403     = `<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body><h1>Sorry, you have been blocked</h1></body></html>`
	clsHTML404     = `<html><body><h1>404 Not Found</h1></body></html>`
	clsRateMsg     = "This request would exceed the rate limit for your organization (abc) of 50,000 input tokens per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later."
)

type clsCase struct {
	name     string
	status   int
	header   http.Header
	body     string
	rules    []Rule
	want     Class
	reset    time.Time // zero: ResetAt must be zero
	wantType string    // checked when not empty
	wantMsg  string    // checked when not empty
}

func runClsCases(t *testing.T, cases []clsCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.header
			if h == nil {
				h = http.Header{}
			}
			v := classifyDefault(tc.status, h, []byte(tc.body), tc.rules, clsNow)
			if v.Class != tc.want {
				t.Errorf("classifyDefault(%d, %q) class = %q, want %q", tc.status, tc.body, v.Class, tc.want)
			}
			if !v.ResetAt.Equal(tc.reset) {
				t.Errorf("classifyDefault(%d) ResetAt = %v, want %v", tc.status, v.ResetAt, tc.reset)
			}
			if tc.wantType != "" && v.ErrorType != tc.wantType {
				t.Errorf("ErrorType = %q, want %q", v.ErrorType, tc.wantType)
			}
			if tc.wantMsg != "" && v.Message != tc.wantMsg {
				t.Errorf("Message = %q, want %q", v.Message, tc.wantMsg)
			}
		})
	}
}

// apiErrorCases are error bodies in the form the Anthropic API sends
// (type and message): each classifies as want and its verdict carries its
// type and message. FuzzClassify starts from them too.
var apiErrorCases = []struct {
	status  int
	errType string
	message string
	want    Class
}{
	{429, "rate_limit_error", clsRateMsg, RateLimit},
	{402, "billing_error", "Payment required", Quota},
	{400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.", Quota},
	// free text decides nothing: billing or usage-limit wording in a
	// message that is not a known one leaves the type and status to decide
	{403, "permission_error", "Your organization has been disabled due to a Billing issue.", Auth},
	{401, "authentication_error", "You have reached your USAGE LIMIT for this period.", Auth},
	{400, "invalid_request_error", "Your credit balance is too low", ClientError},
	{400, "invalid_request_error", "quota-x is not a valid model ID", ClientError},
	{400, "invalid_request_error", "Unexpected value(s) `billing-2025` for the `anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again without the header.", ClientError},
	{400, "invalid_request_error", "prompt is too long: 1 tokens > 0 maximum is not a valid model ID", ClientError},
	// the subscription refusals
	{400, "invalid_request_error", "You're out of extra usage. Add more at claude.ai/settings/usage and keep going.", Quota},
	{400, "invalid_request_error", "You're out of extra usage. Ask your workspace admin to add more so you can keep going.", Quota},
	{400, "invalid_request_error", "Third-party apps now draw from your extra usage, not your plan limits. We've added a $100 credit to get you started. Claim it at claude.ai/settings/usage and keep going.", Quota},
	{400, "invalid_request_error", "Third-party apps now draw from your extra usage, not your plan limits. We've added a €17 credit to get you started. Claim it at claude.ai/settings/usage and keep going.", Quota},
	{400, "invalid_request_error", "Third-party apps now draw from extra usage, not plan limits. We've added a credit to your organization to get you started. Ask your workspace admin to claim it and keep going.", Quota},
	{400, "invalid_request_error", "Third-party apps now draw from your extra usage, not your plan limits. Add more at claude.ai/settings/usage and keep going.", Quota},
	{429, "rate_limit_error", "Extra usage is required for long context requests.", RateLimit},
	{529, "overloaded_error", "Overloaded", Overloaded},
	// the type outranks the status
	{500, "overloaded_error", "Overloaded", Overloaded},
	{401, "authentication_error", "invalid x-api-key", Auth},
	{401, "authentication_error", "OAuth token has expired. Please obtain a new token or refresh your existing token.", Auth},
	{403, "permission_error", "Your API key does not have permission to use the specified resource.", Auth},
	{500, "api_error", "Internal server error", ServerError},
	{501, "api_error", "Not Implemented", Unsupported},
	{400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum", ContextWindow},
	{400, "invalid_request_error", "input length and `max_tokens` exceed context limit: 188000 + 32000 > 200000, decrease input length or `max_tokens` and try again", ContextWindow},
	{400, "invalid_request_error", "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'", Repairable},
	{400, "invalid_request_error", "messages.1.content.0: Invalid `signature` in `thinking` block", Repairable},
	{400, "invalid_request_error", "max_tokens: Field required", ClientError},
	{404, "not_found_error", "model: claude-nope", ClientError},
	{413, "request_too_large", "Request exceeds the maximum allowed number of bytes.", ClientError},
}

func TestClassifyAPIErrors(t *testing.T) {
	t.Parallel()
	var cases []clsCase
	for _, c := range apiErrorCases {
		cases = append(cases, clsCase{name: fmt.Sprintf("%d %s: %.30s", c.status, c.errType, c.message), status: c.status,
			body: clsAnthropic(c.errType, c.message), want: c.want, wantType: c.errType, wantMsg: c.message})
	}
	runClsCases(t, cases)
}

func TestClassifyClasses(t *testing.T) {
	t.Parallel()
	cases := []clsCase{
		// rate_limit
		{name: "429 empty body", status: 429, want: RateLimit},
		{name: "429 OpenAI rate_limit_exceeded", status: 429, body: clsOpenAIRate, want: RateLimit},
		{name: "429 unified allowed_warning is not quota", status: 429,
			header: clsHeader("anthropic-ratelimit-unified-status", "allowed_warning"),
			body:   clsAnthropic("rate_limit_error", "Rate limited"), want: RateLimit},

		// quota
		{name: "429 unified rejected with reset", status: 429,
			header: clsUnified("rejected", clsNow.Add(3*time.Hour)),
			body:   clsAnthropic("rate_limit_error", "Rate limited"),
			want:   Quota, reset: clsNow.Add(3 * time.Hour), wantType: "rate_limit_error"},
		{name: "429 unified rejected case-insensitive value", status: 429,
			header: clsUnified("Rejected", clsNow.Add(time.Hour)),
			want:   Quota, reset: clsNow.Add(time.Hour)},
		{name: "429 unified 5h window rejected, 7d allowed", status: 429,
			header: clsHeader(
				"anthropic-ratelimit-unified-status", "allowed",
				"anthropic-ratelimit-unified-5h-status", "rejected",
				"anthropic-ratelimit-unified-5h-reset", clsEpoch(clsNow.Add(2*time.Hour)),
				"anthropic-ratelimit-unified-7d-status", "allowed",
				"anthropic-ratelimit-unified-7d-reset", clsEpoch(clsNow.Add(5*24*time.Hour)),
			),
			body: clsAnthropic("rate_limit_error", "Rate limited"),
			want: Quota, reset: clsNow.Add(2 * time.Hour)},
		{name: "429 unified rejected and 5h rejected: latest reset", status: 429,
			header: clsMerge(clsUnified("rejected", clsNow.Add(2*time.Hour)), clsHeader(
				"anthropic-ratelimit-unified-5h-status", "rejected",
				"anthropic-ratelimit-unified-5h-reset", clsEpoch(clsNow.Add(4*time.Hour)))),
			want: Quota, reset: clsNow.Add(4 * time.Hour)},
		{name: "429 unified rejected without reset uses Retry-After", status: 429,
			header: clsHeader(
				"anthropic-ratelimit-unified-status", "rejected",
				"retry-after", "600",
			),
			want: Quota, reset: clsNow.Add(600 * time.Second)},
		{name: "429 unified rejected without any hint", status: 429,
			header: clsHeader("anthropic-ratelimit-unified-status", "rejected"),
			want:   Quota},
		{name: "402 empty", status: 402, want: Quota},
		{name: "403 quota wording (numeric code) is not quota", status: 403,
			body: `{"error":{"code":403,"message":"Quota exceeded for this project","status":"PERMISSION_DENIED"}}`,
			want: Auth},
		{name: "429 usage limit reached (z.ai style)", status: 429,
			body: `{"type":"error","error":{"type":"1308","message":"Usage limit reached for 5 hour. Your limit will reset at 2026-03-01 17:00:00"}}`,
			want: Quota},
		{name: "429 OpenAI insufficient_quota", status: 429, body: clsOpenAIQuota,
			want: Quota, wantType: "insufficient_quota"},
		{name: "429 code insufficient_quota only", status: 429,
			body: `{"error":{"message":"nope","type":"requests","code":"insufficient_quota"}}`, want: Quota},

		// overloaded
		{name: "529 empty", status: 529, want: Overloaded},
		{name: "503 empty", status: 503, want: Overloaded},
		{name: "503 HTML", status: 503, body: clsHTML503, want: Overloaded},

		// auth
		{name: "401 empty", status: 401, want: Auth},
		{name: "403 HTML", status: 403, body: clsHTML403, want: Auth},
		{name: "401 truncated JSON", status: 401, body: `{"type":"error","error":{"type":"authenticat`, want: Auth},

		// server_error
		{name: "500 empty", status: 500, want: ServerError},
		{name: "502 HTML", status: 502, body: clsHTML502, want: ServerError},
		{name: "504 empty", status: 504, want: ServerError},
		{name: "501 empty", status: 501, want: Unsupported},
		{name: "505 empty", status: 505, want: Unsupported},
		{name: "504 garbage", status: 504, body: "upstream request timeout", want: ServerError},
		{name: "500 binary garbage", status: 500, body: "\x00\xff\xfe{\x01", want: ServerError},

		// context_window
		{name: "400 OpenAI context_length_exceeded", status: 400, body: clsOpenAICtx, want: ContextWindow},

		// repairable

		// client_error
		{name: "400 empty", status: 400, want: ClientError},
		{name: "404 HTML", status: 404, body: clsHTML404, want: ClientError},
		{name: "422 garbage", status: 422, body: "}}}not json", want: ClientError},
		{name: "400 JSON string body", status: 400, body: `"just a string"`, want: ClientError},
		{name: "418 empty", status: 418, want: ClientError},

		// garbage bodies fall back to the status
		{name: "429 HTML", status: 429, body: "<html><body>Too Many Requests</body></html>", want: RateLimit},
		{name: "429 not JSON", status: 429, body: "not json {{{", want: RateLimit},
		{name: "503 JSON array body", status: 503, body: `[1,2,3]`, want: Overloaded},
		{name: "402 garbage", status: 402, body: "\xff\xfe", want: Quota},

		// success: nothing to do, whatever the body says
		{name: "200", status: 200, body: `{"type":"message"}`, want: None},
		{name: "200 with error-looking body", status: 200,
			body:   clsAnthropic("overloaded_error", "Overloaded"),
			header: clsHeader("retry-after", "30", "anthropic-ratelimit-unified-status", "rejected"),
			want:   None},
		{name: "204", status: 204, want: None},
		{name: "304", status: 304, want: None},
		{name: "399", status: 399, body: clsAnthropic("rate_limit_error", "x"), want: None},
	}
	runClsCases(t, cases)
}

func TestClassifyResetHints(t *testing.T) {
	t.Parallel()
	rfc := func(d time.Duration) string { return clsNow.Add(d).Format(time.RFC3339) }
	cases := []clsCase{
		{name: "Retry-After seconds", status: 429, header: clsHeader("retry-after", "120"),
			body: clsAnthropic("rate_limit_error", "slow down"), want: RateLimit, reset: clsNow.Add(120 * time.Second)},
		{name: "Retry-After with spaces", status: 429, header: clsHeader("retry-after", " 7 "),
			want: RateLimit, reset: clsNow.Add(7 * time.Second)},
		{name: "Retry-After HTTP-date", status: 429,
			header: clsHeader("retry-after", clsNow.Add(90*time.Second).Format(http.TimeFormat)),
			want:   RateLimit, reset: clsNow.Add(90 * time.Second)},
		{name: "Retry-After HTTP-date in the past ignored", status: 429,
			header: clsHeader("retry-after", clsNow.Add(-time.Minute).Format(http.TimeFormat)),
			want:   RateLimit},
		{name: "Retry-After zero ignored", status: 429, header: clsHeader("retry-after", "0"), want: RateLimit},
		{name: "Retry-After negative ignored", status: 429, header: clsHeader("retry-after", "-5"), want: RateLimit},
		{name: "Retry-After garbage ignored", status: 429, header: clsHeader("retry-after", "soon"), want: RateLimit},
		{name: "Retry-After NaN ignored", status: 429, header: clsHeader("retry-after", "NaN"), want: RateLimit},
		{name: "Retry-After absurdly far capped", status: 429, header: clsHeader("retry-after", "99999999999"),
			want: RateLimit, reset: clsNow.Add(DefaultMaxReset)},
		{name: "Retry-After on 529", status: 529, header: clsHeader("retry-after", "30"),
			body: clsAnthropic("overloaded_error", "Overloaded"), want: Overloaded, reset: clsNow.Add(30 * time.Second)},
		{name: "Retry-After on 503", status: 503, header: clsHeader("retry-after", "15"),
			want: Overloaded, reset: clsNow.Add(15 * time.Second)},
		{name: "Retry-After on 500", status: 500, header: clsHeader("retry-after", "5"),
			want: ServerError, reset: clsNow.Add(5 * time.Second)},
		{name: "Retry-After on 402", status: 402, header: clsHeader("retry-after", "3600"),
			want: Quota, reset: clsNow.Add(time.Hour)},
		{name: "auth takes no reset hint", status: 401, header: clsHeader("retry-after", "120"),
			want: Auth},
		{name: "client_error takes no reset hint", status: 400, header: clsHeader("retry-after", "120"),
			want: ClientError},
		{name: "context_window takes no reset hint", status: 400, header: clsHeader("retry-after", "120"),
			body: clsAnthropic("invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"),
			want: ContextWindow},
		{name: "requests-reset RFC 3339 with remaining 0", status: 429,
			header: clsMerge(clsHeader("anthropic-ratelimit-requests-limit", "50"), clsExhausted("requests", rfc(40*time.Second))),
			body:   clsAnthropic("rate_limit_error", clsRateMsg), want: RateLimit, reset: clsNow.Add(40 * time.Second)},
		{name: "the exhausted limit's reset wins over a later non-exhausted one", status: 429,
			header: clsMerge(clsExhausted("requests", rfc(20*time.Second)),
				clsHeader("anthropic-ratelimit-tokens-remaining", "12000", "anthropic-ratelimit-tokens-reset", rfc(50*time.Second))),
			want: RateLimit, reset: clsNow.Add(20 * time.Second)},
		{name: "latest of several exhausted limits", status: 429,
			header: clsMerge(clsExhausted("input-tokens", rfc(30*time.Second)), clsExhausted("output-tokens", rfc(45*time.Second)),
				clsHeader("anthropic-ratelimit-requests-remaining", "10", "anthropic-ratelimit-requests-reset", rfc(5*time.Second))),
			want: RateLimit, reset: clsNow.Add(45 * time.Second)},
		{name: "ratelimit reset in the past ignored", status: 429,
			header: clsExhausted("requests", rfc(-30*time.Second)),
			want:   RateLimit},
		{name: "ratelimit reset not RFC 3339 ignored", status: 429,
			header: clsExhausted("requests", "in a minute"),
			want:   RateLimit},
		{name: "Retry-After wins over ratelimit reset", status: 429,
			header: clsMerge(clsHeader("retry-after", "5"), clsExhausted("requests", rfc(60*time.Second))),
			want:   RateLimit, reset: clsNow.Add(5 * time.Second)},
		{name: "unified reset wins over Retry-After for quota", status: 429,
			header: clsMerge(clsHeader("retry-after", "5"), clsUnified("rejected", clsNow.Add(5*time.Hour))),
			want:   Quota, reset: clsNow.Add(5 * time.Hour)},
		{name: "unified window reset ignored when that window is not rejected", status: 429,
			header: clsHeader(
				"anthropic-ratelimit-unified-5h-status", "rejected",
				"anthropic-ratelimit-unified-5h-reset", clsEpoch(clsNow.Add(time.Hour)),
				"anthropic-ratelimit-unified-7d-status", "allowed_warning",
				"anthropic-ratelimit-unified-7d-reset", clsEpoch(clsNow.Add(72*time.Hour)),
			),
			want: Quota, reset: clsNow.Add(time.Hour)},
		{name: "unified reset not a number ignored", status: 429,
			header: clsHeader("anthropic-ratelimit-unified-status", "rejected", "anthropic-ratelimit-unified-reset", "tomorrow"),
			want:   Quota},
		// A past unified reset says nothing about the future; the
		// provider's Retry-After must then be used.
		{name: "unified reset in the past ignored", status: 429,
			header: clsMerge(clsUnified("rejected", clsNow.Add(-2*time.Hour)), clsHeader("retry-after", "600")),
			want:   Quota, reset: clsNow.Add(600 * time.Second)},
	}
	runClsCases(t, cases)
}

func TestClassifyRules(t *testing.T) {
	t.Parallel()
	cases := []clsCase{
		{name: "status and substring, case-insensitive both ways", status: 400,
			body:  clsAnthropic("invalid_request_error", "The MODEL IS BUSY right now"),
			rules: []Rule{{Status: 400, BodyContains: "Model Is Busy", Class: Overloaded}},
			want:  Overloaded},
		{name: "status 0 matches any error status (503)", status: 503, body: "upstream connect error or disconnect",
			rules: []Rule{{BodyContains: "Upstream Connect Error", Class: Unreachable}},
			want:  Unreachable},
		{name: "status 0 matches any error status (418)", status: 418, body: "upstream connect error or disconnect",
			rules: []Rule{{BodyContains: "upstream connect error", Class: Unreachable}},
			want:  Unreachable},
		{name: "status mismatch: built-in classification", status: 400, body: "busy",
			rules: []Rule{{Status: 500, BodyContains: "busy", Class: Overloaded}},
			want:  ClientError},
		{name: "substring mismatch: built-in classification", status: 500, body: "boom",
			rules: []Rule{{Status: 500, BodyContains: "busy", Class: Overloaded}},
			want:  ServerError},
		{name: "rule before built-in status rule", status: 429, body: clsAnthropic("rate_limit_error", "x"),
			rules: []Rule{{Status: 429, Class: ServerError}},
			want:  ServerError},
		{name: "rule before built-in body rule", status: 403,
			body:  clsAnthropic("permission_error", "credit balance too low"),
			rules: []Rule{{Status: 403, Class: Auth}},
			want:  Auth},
		{name: "rule before unified rejected", status: 429,
			header: clsHeader("anthropic-ratelimit-unified-status", "rejected"),
			rules:  []Rule{{Status: 429, Class: RateLimit}},
			want:   RateLimit},
		{name: "first matching rule wins", status: 500, body: "xyz",
			rules: []Rule{{Status: 501, Class: Auth}, {BodyContains: "y", Class: Quota}, {BodyContains: "x", Class: Auth}},
			want:  Quota},
		{name: "empty rule matches any error", status: 500,
			rules: []Rule{{Class: ClientError}}, want: ClientError},
		{name: "rules do not apply to a success", status: 200, body: "anything",
			rules: []Rule{{Class: ServerError}}, want: None},
		{name: "class from a rule still reads reset hints", status: 500, header: clsHeader("retry-after", "30"),
			rules: []Rule{{Status: 500, Class: RateLimit}},
			want:  RateLimit, reset: clsNow.Add(30 * time.Second)},
		{name: "rule to context_window takes no reset", status: 500, header: clsHeader("retry-after", "30"),
			rules: []Rule{{Status: 500, Class: ContextWindow}},
			want:  ContextWindow},
	}
	runClsCases(t, cases)
}

func TestClassifyLargeBody(t *testing.T) {
	t.Parallel()
	// a large error body is still read at its start
	body := clsAnthropic("invalid_request_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.") + strings.Repeat(" ", 1<<20)
	if v := classifyDefault(400, http.Header{}, []byte(body), nil, clsNow); v.Class != Quota {
		t.Fatalf("class = %q, want quota", v.Class)
	}
}

func TestClassifyDoesNotModifyInputs(t *testing.T) {
	t.Parallel()
	body := []byte(clsAnthropic("rate_limit_error", "Slow Down"))
	orig := string(body)
	h := clsHeader("retry-after", "10", "anthropic-ratelimit-unified-status", "rejected")
	rules := []Rule{{Status: 418, BodyContains: "TEAPOT", Class: Quota}}
	classifyDefault(429, h, body, rules, clsNow)
	if string(body) != orig {
		t.Errorf("body modified: %q", body)
	}
	if h.Get("Retry-After") != "10" || len(h) != 2 {
		t.Errorf("header modified: %v", h)
	}
	if rules[0].BodyContains != "TEAPOT" {
		t.Errorf("rule modified: %+v", rules[0])
	}
}

func TestClassFailsOverAndCools(t *testing.T) {
	t.Parallel()
	cases := []struct {
		c             Class
		failsOver     bool
		cools         bool
		parseableName bool
	}{
		{RateLimit, true, true, true},
		{Quota, true, true, true},
		{Overloaded, true, true, true},
		{Auth, true, true, true},
		{ServerError, true, true, true},
		{Unreachable, true, true, true},
		{ContextWindow, true, false, true},
		{Unsupported, true, false, true},
		{Repairable, false, false, true},
		{ClientError, false, false, true},
		{None, false, false, false},
		{Class("bogus"), false, false, false},
	}
	for _, tc := range cases {
		if got := tc.c.FailsOver(); got != tc.failsOver {
			t.Errorf("%q.FailsOver() = %v, want %v", tc.c, got, tc.failsOver)
		}
		if got := tc.c.Cools(); got != tc.cools {
			t.Errorf("%q.Cools() = %v, want %v", tc.c, got, tc.cools)
		}
		got, ok := Parse(string(tc.c))
		if ok != tc.parseableName {
			t.Errorf("Parse(%q) ok = %v, want %v", tc.c, ok, tc.parseableName)
		}
		if ok && got != tc.c {
			t.Errorf("Parse(%q) = %q", tc.c, got)
		}
		if !ok && got != None {
			t.Errorf("Parse(%q) = %q on failure, want None", tc.c, got)
		}
	}
	seen := map[Class]bool{}
	for _, c := range All {
		if seen[c] || c == None {
			t.Errorf("All: %q duplicated or empty", c)
		}
		seen[c] = true
	}
	for _, s := range []string{"", "none", "RATE_LIMIT", "rate_limit ", " quota", "rate-limit"} {
		if c, ok := Parse(s); ok {
			t.Errorf("Parse(%q) = %q, true; want false", s, c)
		}
	}
}

func TestClassOfErrorType(t *testing.T) {
	t.Parallel()
	cases := map[string]Class{
		"rate_limit_error":      RateLimit,
		"rate_limit_exceeded":   RateLimit,
		"overloaded_error":      Overloaded,
		"authentication_error":  Auth,
		"permission_error":      Auth,
		"invalid_api_key":       Auth,
		"billing_error":         Quota,
		"insufficient_quota":    Quota,
		"api_error":             ServerError,
		"timeout_error":         ServerError,
		"internal_server_error": ServerError,
		"invalid_request_error": ClientError,
		"not_found_error":       ClientError,
		"request_too_large":     ClientError,
		// unknown: worth another provider
		"":                 ServerError,
		"something_new":    ServerError,
		"Overloaded_Error": ServerError,
	}
	for typ, want := range cases {
		if got := OfErrorType(typ); got != want {
			t.Errorf("OfErrorType(%q) = %q, want %q", typ, got, want)
		}
	}
}
