package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Two providers, the first rate-limited: the SDK gets the second's answer,
// and the first is not contacted again during its cooldown.
func TestRateLimitFailsOverAndCoolsDown(t *testing.T) {
	clock := useFakeClock(t)
	p, a, b := startPair(t, "a", replyError(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
		"b", replyMessage("hello from b"))
	client := sdkClient(p)

	msg, raw, err := sendMessage(client, "hi")
	if err != nil {
		t.Fatalf("SDK request failed: %v", err)
	}
	if got := textOf(msg); got != "hello from b" {
		t.Fatalf("answer = %q, want b's", got)
	}
	if raw.Header.Get("X-LLM-Provider") != "b" || raw.Header.Get("X-LLM-Attempts") != "2" {
		t.Fatalf("X-LLM-Provider=%q X-LLM-Attempts=%q, want b and 2",
			raw.Header.Get("X-LLM-Provider"), raw.Header.Get("X-LLM-Attempts"))
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.RateLimit {
		t.Fatalf("a: state %s class %s, want open rate_limit", s.State, s.LastClass)
	}

	// During the cooldown a is skipped: not an attempt, not a hit.
	for range 5 {
		clock.Advance(10 * time.Second)
		_, raw, err := sendMessage(client, "again")
		if err != nil {
			t.Fatal(err)
		}
		if raw.Header.Get("X-LLM-Attempts") != "1" {
			t.Fatalf("X-LLM-Attempts = %q while a cools, want 1", raw.Header.Get("X-LLM-Attempts"))
		}
	}
	if a.Hits() != 1 || b.Hits() != 6 {
		t.Fatalf("hits a=%d b=%d, want 1 and 6", a.Hits(), b.Hits())
	}

	// The default rate_limit cooldown is 1m: past it, a is probed again.
	a.setHandler(replyMessage("hello from a"))
	clock.Advance(11 * time.Second)
	msg, err = client.Messages.New(context.Background(), userMessage("after"))
	if err != nil || textOf(msg) != "hello from a" {
		t.Fatalf("after the cooldown: %v %v, want a's answer", textOf(msg), err)
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("a after a successful probe: %s, want closed", s.State)
	}
}

func TestClassesThatFailOver(t *testing.T) {
	tests := []struct {
		name    string
		handler func(w http.ResponseWriter, r *http.Request, body []byte)
		class   Class
		cools   bool
	}{
		{"401 is auth", replyError(401, "authentication_error", "invalid x-api-key"), classify.Auth, true},
		{"400 credit balance too low is quota", replyError(400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."), classify.Quota, true},
		{"403 billing_error is quota", replyError(403, "billing_error", "This organization has been disabled."), classify.Quota, true},
		{"529 is overloaded", replyError(529, "overloaded_error", "Overloaded"), classify.Overloaded, true},
		{"503 is overloaded", replyError(503, "api_error", "upstream connect error"), classify.Overloaded, true},
		{"500 is server_error", replyError(500, "api_error", "Internal server error"), classify.ServerError, true},
		{"prompt too long is context_window", replyError(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"), classify.ContextWindow, false},
		{"429 with a rejected unified limit is quota", replyError(429, "rate_limit_error", "rate limited",
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", epochSeconds(time.Date(2026, 11, 28, 17, 0, 0, 0, time.UTC))), classify.Quota, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := useFakeClock(t)
			p, a, _ := startPair(t, "a", tt.handler,
				"b", replyMessage("from b"))
			client := sdkClient(p)
			msg, err := client.Messages.New(context.Background(), userMessage("hi"))
			if err != nil || textOf(msg) != "from b" {
				t.Fatalf("got %v, %v; want b's answer", msg, err)
			}
			s := snapshot(t, "a")
			if s.LastClass != tt.class {
				t.Fatalf("class = %q, want %q", s.LastClass, tt.class)
			}
			if tt.cools != (s.State == breaker.Open) {
				t.Fatalf("state = %s, cools = %v", s.State, tt.cools)
			}
			// a second request: a is contacted again only if nothing cooled
			clock.Advance(time.Second)
			if _, err := client.Messages.New(context.Background(), userMessage("again")); err != nil {
				t.Fatal(err)
			}
			wantHits := 1
			if !tt.cools {
				wantHits = 2
			}
			if a.Hits() != wantHits {
				t.Fatalf("a hits = %d, want %d", a.Hits(), wantHits)
			}
			if tt.class == classify.Quota && strings.Contains(tt.name, "unified") {
				want := time.Date(2026, 11, 28, 17, 0, 0, 0, time.UTC)
				if !s.Until.Equal(want) {
					t.Fatalf("quota cooldown until %v, want the unified reset %v", s.Until, want)
				}
			}
		})
	}
}

// A client error is the request's fault: it passes through untouched and
// no other provider is bothered.
func TestClientErrorPassesThrough(t *testing.T) {
	useFakeClock(t)
	p, _, b := startPair(t, "a", replyError(400, "invalid_request_error", "max_tokens: Field required", "Request-Id", "req_a400"),
		"b", replyMessage("from b"))
	client := sdkClient(p)
	_, err := client.Messages.New(context.Background(), userMessage("hi"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %v, want an API error", err)
	}
	if apiErr.StatusCode != 400 || !strings.Contains(apiErr.Error(), "max_tokens: Field required") {
		t.Fatalf("got %d %v, want a's 400", apiErr.StatusCode, apiErr)
	}
	if apiErr.Response.Header.Get("Request-Id") != "req_a400" || apiErr.Response.Header.Get("X-LLM-Provider") != "a" {
		t.Fatalf("headers not a's: %v", apiErr.Response.Header)
	}
	wantHitsAndState(t, b, 0, breaker.Closed, "a client error bothers no other provider")
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("a state %s after a client error, want closed", s.State)
	}
}

// A provider nobody listens on is unreachable: fail over, cool it.
func TestDialFailureIsUnreachable(t *testing.T) {
	useFakeClock(t)
	dead := freeURL(t)
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(
		"\t\tprovider dead {\n\t\t\tupstream "+dead+"\n\t\t\tdial_timeout 2s\n\t\t}\n",
		b.providerBlock()))
	msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != "from b" {
		t.Fatalf("got %v %v", msg, err)
	}
	if s := snapshot(t, "dead"); s.State != breaker.Open || s.LastClass != classify.Unreachable {
		t.Fatalf("dead: %s %s, want open unreachable", s.State, s.LastClass)
	}
}

// Many concurrent requests fail over through the real reverse_proxy path:
// a provider that cannot be dialled, one that answers 529, one that
// answers. Under -race this reports any state an attempt shares with the
// goroutines an earlier attempt left behind (net/http keeps dialling for
// a request that took another connection, with the request's variables).
// Run with -race to make it meaningful.
func TestConcurrentFailoversShareNothing(t *testing.T) {
	useFakeClock(t)
	dead := freeURL(t)
	b := newUpstream(t, "b", replyError(529, "overloaded_error", "Overloaded"))
	c := newUpstream(t, "c", replyMessage("from c"))
	// cooldown 0: every request walks the whole chain again
	p := startProxy(t, failoverSite(
		"\t\tprovider a {\n\t\t\tupstream "+dead+"\n\t\t\tcooldown unreachable 0s\n\t\t}\n",
		b.providerBlock("cooldown overloaded 0s"),
		c.providerBlock(),
	))
	const workers, perWorker = 24, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// each worker its own client, so new connections are dialled
			// while others are being returned
			tr := &http.Transport{MaxIdleConnsPerHost: 2}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			for range perWorker {
				res, err := cl.Post(p.URL+"/v1/messages", "application/json", strings.NewReader(simpleRequest))
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if !strings.Contains(string(body), "from c") {
					errs <- fmt.Errorf("status %d: %s", res.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// Retry-After: 120 cools the provider for exactly 120s.
func TestRetryAfterSetsTheCooldown(t *testing.T) {
	clock := useFakeClock(t)
	p, a, _ := startPair(t, "a", replyError(429, "rate_limit_error", "later", "Retry-After", "120"),
		"b", replyMessage("from b"))
	start := clock.Now()
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	if s := snapshot(t, "a"); !s.Until.Equal(start.Add(120 * time.Second)) {
		t.Fatalf("cooldown until %v, want start+120s", s.Until.Sub(start))
	}
	a.setHandler(replyMessage("from a"))
	clock.Advance(119 * time.Second)
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	if a.Hits() != 1 {
		t.Fatalf("a contacted at 119s: %d hits", a.Hits())
	}
	clock.Advance(2 * time.Second)
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from a") {
		t.Fatalf("at 121s: %s, want a's answer", got)
	}
}

// After a cooldown exactly one request probes the provider, however many
// arrive at once; the others go to the next provider.
func TestHalfOpenAdmitsOneProbe(t *testing.T) {
	clock := useFakeClock(t)
	release := make(chan struct{})
	probeArrived := make(chan struct{}, 100)
	p, a, b := startPair(t, "a", replyError(529, "overloaded_error", "Overloaded"),
		"b", replyMessage("from b"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // a opens
	a.setHandler(func(w http.ResponseWriter, r *http.Request, body []byte) {
		probeArrived <- struct{}{}
		<-release
		replyMessage("from a")(w, r, body)
	})
	clock.Advance(31 * time.Second) // overloaded cools 30s

	var wg sync.WaitGroup
	answers := make(chan string, 50)
	for range 50 {
		wg.Go(func() {
			answers <- readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
		})
	}
	<-probeArrived
	// wait until the 49 others are answered by b, then let the probe finish
	deadline := time.After(20 * time.Second)
	for b.Hits() < 1+49 {
		select {
		case <-deadline:
			t.Fatalf("b hits = %d, want 50 (1 earlier + 49)", b.Hits())
		case <-time.After(5 * time.Millisecond):
		}
	}
	close(release)
	wg.Wait()
	close(answers)
	fromA := 0
	for ans := range answers {
		if strings.Contains(ans, "from a") {
			fromA++
		}
	}
	if a.Hits() != 2 || fromA != 1 {
		t.Fatalf("a hits=%d answers from a=%d; want 2 hits (failure + one probe) and 1 answer", a.Hits(), fromA)
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("after the probe succeeded: %s", s.State)
	}
}

// Every provider cooling: answer at once, without an upstream hit, with
// Retry-After until the soonest provider admits again.
func TestAllCoolingAnswersAtOnce(t *testing.T) {
	clock := useFakeClock(t)
	p, a, b := startPair(t, "a", replyError(429, "rate_limit_error", "limited", "Retry-After", "90"),
		"b", replyError(429, "rate_limit_error", "limited", "Retry-After", "40"))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	if res.StatusCode != 429 || !strings.Contains(body, "limited") || res.Header.Get("X-LLM-Provider") != "b" {
		t.Fatalf("first: %d %s %v: want b's real 429", res.StatusCode, body, res.Header)
	}
	clock.Advance(10 * time.Second)
	res = post(t, p.URL+"/v1/messages", simpleRequest)
	body = readAll(t, res)
	if res.StatusCode != 429 {
		t.Fatalf("status %d, want 429", res.StatusCode)
	}
	if res.Header.Get("Retry-After") != "30" {
		t.Fatalf("Retry-After = %q, want 30 (b's 40s minus 10s)", res.Header.Get("Retry-After"))
	}
	if !strings.Contains(body, `"type":"rate_limit_error"`) || !strings.Contains(body, "a: rate_limit") || !strings.Contains(body, "b: rate_limit") ||
		!strings.Contains(body, "30 seconds") {
		t.Fatalf("body = %s", body)
	}
	if a.Hits() != 1 || b.Hits() != 1 {
		t.Fatalf("hits a=%d b=%d, want 1 and 1", a.Hits(), b.Hits())
	}

	// one overloaded provider among them: 503
	a.setHandler(replyError(529, "overloaded_error", "Overloaded"))
	clock.Advance(100 * time.Second)
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // a (probe) and b fail again
	res = post(t, p.URL+"/v1/messages", simpleRequest)
	body = readAll(t, res)
	if res.StatusCode != 503 || !strings.Contains(body, "overloaded_error") {
		t.Fatalf("%d %s, want 503 overloaded_error", res.StatusCode, body)
	}
}

// A reload through the admin API keeps a provider's cooldown.
func TestReloadKeepsCooldown(t *testing.T) {
	useFakeClock(t)
	p, a, b := startPair(t, "a", replyError(429, "rate_limit_error", "limited", "Retry-After", "600"),
		"b", replyMessage("from b"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	if a.Hits() != 1 {
		t.Fatal("a not contacted")
	}
	p.reload(failoverSite(a.providerBlock("cooldown server_error 5s"), b.providerBlock()) + "\n\theader X-Reloaded yes")
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	if res.Header.Get("X-Reloaded") != "yes" {
		t.Fatal("the new config is not serving")
	}
	wantHitsAndState(t, a, 1, breaker.Open, "contacted after the reload: cooldown lost")
}

// Every provider receives the client's body byte for byte (only the model
// changes where a provider maps it), whatever it contains.
func TestBodyReplayIsByteIdentical(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyError(500, "api_error", "boom"))
	b := newUpstream(t, "b", replyError(529, "overloaded_error", "busy"))
	c := newUpstream(t, "c", replyMessage("from c"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock(),
		c.providerBlock("model claude-*haiku* glm-4.5-air", "model claude-* glm-4.6")))
	// key order, spacing, escapes and characters Go would re-escape
	body := "{ \"max_tokens\" : 64,\n\"model\":\"claude-sonnet-4-5\", \"messages\":[{\"role\":\"user\",\"content\":\"<b>&amp;</b> \\u00e9 caf\u00e9 \\\"q\\\" \U0001F600\"}],\"metadata\":{\"model\":\"not-this-one\"},\"stream\":false}"
	res := post(t, p.URL+"/v1/messages?beta=true", body)
	if got := readAll(t, res); !strings.Contains(got, "from c") {
		t.Fatalf("answer %s", got)
	}
	want := hashOf([]byte(body))
	if hashOf(a.lastBody()) != want || hashOf(b.lastBody()) != want {
		t.Fatalf("a or b received a different body:\n%s\n%s", a.lastBody(), b.lastBody())
	}
	mapped := strings.Replace(body, `"model":"claude-sonnet-4-5"`, `"model":"glm-4.6"`, 1)
	if hashOf(c.lastBody()) != hashOf([]byte(mapped)) {
		t.Fatalf("c received\n%s\nwant\n%s", c.lastBody(), mapped)
	}
	for _, u := range []*fakeUpstream{a, b, c} {
		if u.paths[0] != "/v1/messages?beta=true" {
			t.Fatalf("%s got path %q", u.name, u.paths[0])
		}
	}
}

// When every attempt fails the client gets the last provider's real
// response, not a synthesized one.
func TestExhaustedReturnsLastRealResponse(t *testing.T) {
	useFakeClock(t)
	p, _, _ := startPair(t, "a", replyError(500, "api_error", "a broke"),
		"b", replyError(529, "overloaded_error", "b is overloaded", "Request-Id", "req_b", "X-Custom", "kept"))
	_, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
	apiErr := wantAPIError(t, err, 529)
	h := apiErr.Response.Header
	if h.Get("Request-Id") != "req_b" || h.Get("X-Custom") != "kept" || h.Get("X-LLM-Provider") != "b" || h.Get("X-LLM-Attempts") != "2" {
		t.Fatalf("headers %v", h)
	}
	if !strings.Contains(apiErr.Error(), "b is overloaded") {
		t.Fatalf("body lost: %v", apiErr)
	}
	if n := len(h.Values("Content-Length")); n > 1 {
		t.Fatalf("Content-Length duplicated: %v", h.Values("Content-Length"))
	}
}
