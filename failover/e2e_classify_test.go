package failover

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// echoingUpstream answers like the Anthropic API does to a bad model or a
// bad anthropic-beta value: a 400 invalid_request_error that repeats the
// client's bytes. Anything else gets a message.
func echoingUpstream(text string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	ok := replyMessage(text)
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &req)
		for _, v := range strings.Split(r.Header.Get("Anthropic-Beta"), ",") {
			if v = strings.TrimSpace(v); v != "" && !strings.HasPrefix(v, "oauth-") {
				replyError(400, "invalid_request_error", "Unexpected value(s) `"+v+"` for the `anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again without the header.")(w, r, body)
				return
			}
		}
		if !strings.HasPrefix(req.Model, "claude-") {
			replyError(400, "invalid_request_error", req.Model+" is not a valid model ID")(w, r, body)
			return
		}
		ok(w, r, body)
	}
}

// A client cannot bench a provider with words the provider repeats: a
// model named quota-x or a beta named billing-2025 is the request's fault.
func TestClientTextEchoedCoolsNothing(t *testing.T) {
	useFakeClock(t)
	p, a, b := startPair(t, "a", echoingUpstream("from a"), "b", replyMessage("from b"))
	client := sdkClient(p)

	params := userMessage("hi")
	params.Model = "quota-x"
	_, err := client.Messages.New(context.Background(), params)
	apiErr := wantAPIError(t, err, 400)
	if !strings.Contains(apiErr.Error(), "quota-x is not a valid model ID") {
		t.Fatalf("the client got %v, want a's 400", apiErr)
	}
	wantHitsAndState(t, a, 1, breaker.Closed, "the model's name is the client's")
	if b.Hits() != 0 {
		t.Fatalf("b was sent %d requests: a client error failed over", b.Hits())
	}

	// the beta is the client's too: a drops it and answers (a repair), or
	// the 400 is the answer; either way nothing cools
	msg, err := client.Messages.New(context.Background(), userMessage("beta"), option.WithHeader("anthropic-beta", "billing-2025"))
	if err != nil && !strings.Contains(err.Error(), "billing-2025") {
		t.Fatalf("beta billing-2025: %v", err)
	}
	if err == nil && textOf(msg) != "from a" {
		t.Fatalf("beta billing-2025 answered by %q, want a", textOf(msg))
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("a after the beta: %+v, want closed", s)
	}

	msg, err = client.Messages.New(context.Background(), userMessage("next"))
	if err != nil || textOf(msg) != "from a" {
		t.Fatalf("the next client: %v %v, want a's answer", textOf(msg), err)
	}
	if b.Hits() != 0 {
		t.Fatalf("b was sent %d requests, want 0", b.Hits())
	}
}

// The subscription refusals of requests another provider can serve: each
// fails over; "out of extra usage" benches the subscription, the others
// refuse only this request.
func TestSubscriptionRefusalsFailOver(t *testing.T) {
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, body []byte)
		class   Class
		cools   bool
	}{
		{"out of extra usage", replyError(400, "invalid_request_error",
			"You're out of extra usage. Add more at claude.ai/settings/usage and keep going."), classify.Quota, true},
		{"out of extra usage, workspace", replyError(400, "invalid_request_error",
			"You're out of extra usage. Ask your workspace admin to add more so you can keep going."), classify.Quota, true},
		{"third-party apps", replyError(400, "invalid_request_error",
			"Third-party apps now draw from your extra usage, not your plan limits. We've added a $100 credit to get you started. Claim it at claude.ai/settings/usage and keep going."), classify.Quota, false},
		{"third-party apps, organisation", replyError(400, "invalid_request_error",
			"Third-party apps now draw from extra usage, not plan limits. We've added a credit to your organization to get you started. Ask your workspace admin to claim it and keep going."), classify.Quota, false},
		{"long context needs extra usage", replyError(429, "rate_limit_error",
			"Extra usage is required for long context requests.",
			"anthropic-ratelimit-unified-status", "allowed",
			"anthropic-ratelimit-unified-overage-status", "rejected",
			"anthropic-ratelimit-unified-overage-reset", epochSeconds(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))), classify.RateLimit, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := useFakeClock(t)
			p, a, b := startPair(t, "subscription", tt.handler, "api", replyMessage("from api"))
			client := sdkClient(p)
			msg, err := client.Messages.New(context.Background(), userMessage("hi"))
			if err != nil || textOf(msg) != "from api" {
				t.Fatalf("got %v, %v; want the next provider's answer", textOf(msg), err)
			}
			s := snapshot(t, "subscription")
			if s.LastClass != tt.class {
				t.Fatalf("class = %q, want %q", s.LastClass, tt.class)
			}
			if tt.cools != (s.State == breaker.Open) {
				t.Fatalf("state = %s, want cooling = %v", s.State, tt.cools)
			}
			clock.Advance(time.Second)
			if _, err := client.Messages.New(context.Background(), userMessage("again")); err != nil {
				t.Fatal(err)
			}
			want := 2 // asked again: the refusal was this request's
			if tt.cools {
				want = 1
			}
			if a.Hits() != want {
				t.Fatalf("the subscription was sent %d requests, want %d", a.Hits(), want)
			}
			if b.Hits() != 2 {
				t.Fatalf("the api was sent %d requests, want 2", b.Hits())
			}
		})
	}
}

// sonnetSpent is a subscription whose weekly Sonnet window is spent: a
// Sonnet request gets the 429 with the model-scoped unified headers, any
// other model an answer.
func sonnetSpent(reset time.Time) func(w http.ResponseWriter, r *http.Request, body []byte) {
	refuse := replyError(429, "rate_limit_error", "Rate limited",
		"anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-reset", epochSeconds(reset),
		"anthropic-ratelimit-unified-7d_sonnet-status", "rejected",
		"anthropic-ratelimit-unified-7d_sonnet-utilization", "1.0",
		"anthropic-ratelimit-unified-7d_sonnet-reset", epochSeconds(reset),
		"anthropic-ratelimit-unified-7d-status", "allowed",
		"anthropic-ratelimit-unified-7d-utilization", "0.4",
		"anthropic-ratelimit-unified-5h-status", "allowed",
		"anthropic-ratelimit-unified-representative-claim", "seven_day_sonnet")
	ok := replyMessage("from subscription")
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), "sonnet") {
			refuse(w, r, body)
			return
		}
		ok(w, r, body)
	}
}

// A spent per-model window benches that model family only: Haiku and Opus
// requests still go to the subscription, Sonnet ones skip it without
// asking until the window resets.
func TestModelScopedCooldown(t *testing.T) {
	clock := useFakeClock(t)
	reset := timeNow().Add(2 * 24 * time.Hour).Truncate(time.Second)
	sub := newUpstream(t, "subscription", sonnetSpent(reset))
	api := newUpstream(t, "api", replyMessage("from api"))
	// the client asks for an alias; the subscription maps it to Sonnet
	p := startProxy(t, failoverSite(sub.providerBlock("model my-default claude-sonnet-4-5"), api.providerBlock()))
	client := sdkClient(p)
	ask := func(model string) string {
		t.Helper()
		params := userMessage("hi")
		params.Model = anthropic.Model(model)
		msg, err := client.Messages.New(context.Background(), params)
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		return textOf(msg)
	}

	if got := ask("claude-sonnet-4-5"); got != "from api" {
		t.Fatalf("sonnet: %q, want the api's answer", got)
	}
	s := snapshot(t, "subscription")
	if s.State != breaker.Closed {
		t.Fatalf("subscription: %+v, want closed: only Sonnet is spent", s)
	}
	if got := ask("claude-haiku-4-5"); got != "from subscription" {
		t.Fatalf("haiku: %q, want the subscription's answer", got)
	}
	if got := ask("claude-opus-4-1"); got != "from subscription" {
		t.Fatalf("opus: %q, want the subscription's answer", got)
	}
	// Sonnet, by name or by an alias the subscription maps to Sonnet:
	// skipped without asking
	for _, m := range []string{"claude-sonnet-4-5", "my-default"} {
		if got := ask(m); got != "from api" {
			t.Fatalf("%s: %q, want the api's answer", m, got)
		}
	}
	if sub.Hits() != 3 {
		t.Fatalf("the subscription was sent %d requests, want 3 (one Sonnet refusal, Haiku, Opus)", sub.Hits())
	}

	// the scope shows in status and in `caddy llm`
	st := providerStatuses(t, p)["subscription"]
	scopes, _ := st["scopes"].([]any)
	if st["state"] != "closed" || len(scopes) != 1 {
		t.Fatalf("status: %v", st)
	}
	sc := scopes[0].(map[string]any)
	if sc["scope"] != "sonnet" || sc["class"] != "quota" || sc["cooldown_until"] != reset.UTC().Format(time.RFC3339) {
		t.Fatalf("scope: %v, want sonnet quota until %v", sc, reset)
	}
	var resp StatusResponse
	_, body := adminGet(t, p, "/llm/providers")
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	var table strings.Builder
	printStatusTable(&table, resp.Providers)
	if !strings.Contains(table.String(), "subscription · sonnet  open") || !strings.Contains(table.String(), "quota") {
		t.Fatalf("caddy llm:\n%s", table.String())
	}

	// and in metrics
	if _, text := adminGet(t, p, "/metrics"); !strings.Contains(text, `caddy_llm_scope_cooldown_seconds_left{provider="subscription",scope="sonnet"}`) {
		t.Fatalf("/metrics has no sonnet scope:\n%s", text)
	}
	// and in X-LLM-Providers, on an answer after failures
	api.setHandler(replyError(500, "api_error", "boom"))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	if got := res.Header.Get("X-LLM-Providers"); !strings.Contains(got, `"subscription";state=closed;cooling=sonnet`) {
		t.Fatalf("X-LLM-Providers: %q", got)
	}
	if sub.Hits() != 3 {
		t.Fatalf("the subscription was sent %d requests, want 3", sub.Hits())
	}

	// the window resets: Sonnet goes to the subscription again
	sub.setHandler(replyMessage("from subscription"))
	clock.Advance(2*24*time.Hour + time.Second)
	if got := ask("claude-sonnet-4-5"); got != "from subscription" {
		t.Fatalf("sonnet after the reset: %q, want the subscription's answer", got)
	}
	if st := providerStatuses(t, p)["subscription"]; st["scopes"] != nil {
		t.Fatalf("status after the reset: %v", st["scopes"])
	}
}

// A model-scoped cooldown is shared like any other: instance B skips the
// subscription for Sonnet once A met the refusal, and still sends it
// Haiku.
func TestModelScopedCooldownShared(t *testing.T) {
	storage := t.TempDir()
	sub := newUpstream(t, "shs_sub", sonnetSpent(time.Now().Add(48*time.Hour)))
	api := newUpstream(t, "shs_api", replyMessage("from api"))

	childURL := freeURL(t)
	child := &proxy{t: t, AdminAddr: freeAddr(t)}
	startChild(t, shareCaddyfile(child.AdminAddr, childURL, storage, sub.providerBlock(), api.providerBlock()), childURL)
	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, sub.providerBlock(), api.providerBlock()))
	stopAtCleanup(t)

	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from api") {
		t.Fatal(got)
	}
	waitFor(t, "B to adopt A's sonnet scope", 5*time.Second, func() bool {
		scopes, _ := providerStatuses(t, child)["shs_sub"]["scopes"].([]any)
		return len(scopes) == 1 && scopes[0].(map[string]any)["scope"] == "sonnet"
	})
	if st := providerStatuses(t, child)["shs_sub"]; st["state"] != "closed" {
		t.Fatalf("B: %v, want the provider closed", st)
	}
	res := post(t, childURL+"/v1/messages", simpleRequest)
	if got := readAll(t, res); !strings.Contains(got, "from api") || res.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("B, sonnet: %s attempts %s", got, res.Header.Get("X-LLM-Attempts"))
	}
	if sub.Hits() != 1 {
		t.Fatalf("B sent a Sonnet request to the subscription A found spent for Sonnet")
	}
	haiku := strings.Replace(simpleRequest, "claude-sonnet-4-5", "claude-haiku-4-5", 1)
	if got := readAll(t, post(t, childURL+"/v1/messages", haiku)); !strings.Contains(got, "from subscription") {
		t.Fatalf("B, haiku: %s", got)
	}
}

// Every family has its breaker: the set's array is sized for them.
func TestFamiliesFitBreakerSet(t *testing.T) {
	if len(classify.Families) > maxFamilies {
		t.Fatalf("%d families, but a breakerSet holds %d", len(classify.Families), maxFamilies)
	}
	var s breakerSet
	for _, f := range classify.Families {
		if s.family(f) == nil {
			t.Fatalf("no breaker for family %q", f)
		}
	}
	if s.family("mythos") != nil || s.family("") != nil {
		t.Fatal("a breaker for an unknown family")
	}
}

// Wrap mode honours a family scope as the handler does.
func TestModelScopedCooldownWrapMode(t *testing.T) {
	useFakeClock(t)
	sub := newUpstream(t, "wsub", sonnetSpent(timeNow().Add(48*time.Hour)))
	api := newUpstream(t, "wapi", replyMessage("from api"))
	p := startProxy(t, wrapSite(sub, api))
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from api") {
		t.Fatal(got)
	}
	haiku := strings.Replace(simpleRequest, "claude-sonnet-4-5", "claude-haiku-4-5", 1)
	if got := readAll(t, post(t, p.URL+"/v1/messages", haiku)); !strings.Contains(got, "from subscription") {
		t.Fatalf("haiku: %s", got)
	}
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if got := readAll(t, res); !strings.Contains(got, "from api") || res.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("sonnet again: %s, attempts %s", got, res.Header.Get("X-LLM-Attempts"))
	}
	if sub.Hits() != 2 {
		t.Fatalf("the subscription was sent %d requests, want 2", sub.Hits())
	}
}
