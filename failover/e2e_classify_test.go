package failover

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

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
