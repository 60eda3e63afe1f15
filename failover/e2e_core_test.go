package failover

import (
	"bytes"
	"compress/gzip"
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
	"github.com/anthropics/anthropic-sdk-go/option"
)

// Two providers, the first rate-limited: the SDK gets the second's answer,
// and the first is not contacted again during its cooldown.
func TestRateLimitFailsOverAndCoolsDown(t *testing.T) {
	clock := useFakeClock(t)
	p, a, b := startPair(t, "a", replyError(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit"),
		"b", replyMessage("hello from b"))
	client := sdkClient(p)

	var raw *http.Response
	msg, err := client.Messages.New(context.Background(), userMessage("hi"), option.WithResponseInto(&raw))
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
	if s := snapshot(t, "a"); s.State != StateOpen || s.LastClass != ClassRateLimit {
		t.Fatalf("a: state %s class %s, want open rate_limit", s.State, s.LastClass)
	}

	// During the cooldown a is skipped: not an attempt, not a hit.
	for range 5 {
		clock.Advance(10 * time.Second)
		if _, err := client.Messages.New(context.Background(), userMessage("again"), option.WithResponseInto(&raw)); err != nil {
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
	if s := snapshot(t, "a"); s.State != StateClosed {
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
		{"401 is auth", replyError(401, "authentication_error", "invalid x-api-key"), ClassAuth, true},
		{"403 with a quota body is quota", replyError(403, "permission_error", "Your credit balance is too low to access the Anthropic API."), ClassQuota, true},
		{"529 is overloaded", replyError(529, "overloaded_error", "Overloaded"), ClassOverloaded, true},
		{"503 is overloaded", replyError(503, "api_error", "upstream connect error"), ClassOverloaded, true},
		{"500 is server_error", replyError(500, "api_error", "Internal server error"), ClassServerError, true},
		{"prompt too long is context_window", replyError(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum"), ClassContextWindow, false},
		{"429 with a rejected unified limit is quota", replyError(429, "rate_limit_error", "rate limited",
			"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", clsEpoch(time.Date(2026, 11, 28, 17, 0, 0, 0, time.UTC))), ClassQuota, true},
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
			if tt.cools != (s.State == StateOpen) {
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
			if tt.class == ClassQuota && strings.Contains(tt.name, "unified") {
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
	wantHitsAndState(t, b, 0, StateClosed, "a client error bothers no other provider")
	if s := snapshot(t, "a"); s.State != StateClosed {
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
	if s := snapshot(t, "dead"); s.State != StateOpen || s.LastClass != ClassUnreachable {
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

// A gzip-compressed error body is decoded before it is classified: a 403
// whose compressed body speaks of billing is quota, not auth.
func TestCompressedErrorBodyIsClassified(t *testing.T) {
	useFakeClock(t)
	gz := func(status int, body []byte) func(w http.ResponseWriter, r *http.Request, _ []byte) {
		return func(w http.ResponseWriter, r *http.Request, _ []byte) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(body)
			_ = zw.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(status)
			_, _ = w.Write(buf.Bytes())
		}
	}
	a := newUpstream(t, "a", gz(403, errorJSON("permission_error", "This organization has been disabled for billing reasons")))
	c := newUpstream(t, "c", gz(429, errorJSON("rate_limit_error", "slow down")))
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), c.providerBlock(), b.providerBlock()))
	// the SDK sends Accept-Encoding like Claude Code does
	msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"),
		option.WithHeader("Accept-Encoding", "gzip, deflate, br, zstd"))
	if err != nil || textOf(msg) != "from b" {
		t.Fatalf("got %v %v", msg, err)
	}
	if s := snapshot(t, "a"); s.LastClass != ClassQuota {
		t.Fatalf("a: %s, want quota", s.LastClass)
	}
	if s := snapshot(t, "c"); s.LastClass != ClassRateLimit {
		t.Fatalf("c: %s, want rate_limit", s.LastClass)
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
	if s := snapshot(t, "a"); s.State != StateClosed {
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
	wantHitsAndState(t, a, 1, StateOpen, "contacted after the reload: cooldown lost")
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

// The provider's credential replaces the client's; the upstream URL's path
// is prefixed; GET requests and query strings pass.
func TestCredentialsAndBasePath(t *testing.T) {
	useFakeClock(t)
	t.Setenv("LLMF_TEST_KEY_A", "sk-provider-a")
	t.Setenv("LLMF_TEST_KEY_B", "token-b")
	a := newUpstream(t, "a", replyError(401, "authentication_error", "invalid x-api-key"))
	b := newUpstream(t, "b", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":[{"type":"model","id":"glm-4.6"}],"has_more":false}`)
	})
	p := startProxy(t, failoverSite(
		a.providerBlock("credential env LLMF_TEST_KEY_A"),
		fmt.Sprintf("\t\tprovider b {\n\t\t\tupstream %s/api/anthropic\n\t\t\tcredential env LLMF_TEST_KEY_B\n\t\t\tauth_header bearer\n\t\t}\n", b.URL)))
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/v1/models?limit=5", nil)
	req.Header.Set("X-Api-Key", "sk-client-key-must-not-leak")
	req.Header.Set("Authorization", "Bearer sk-ant-oat01-client")
	req.Header.Set("Anthropic-Beta", "oauth-2025-04-20,interleaved-thinking-2025-05-14")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, res); !strings.Contains(body, "glm-4.6") {
		t.Fatalf("body %s", body)
	}
	ha, hb := a.lastHeader(), b.lastHeader()
	if ha.Get("X-Api-Key") != "sk-provider-a" || ha.Get("Authorization") != "" {
		t.Fatalf("a got x-api-key %q authorization %q", ha.Get("X-Api-Key"), ha.Get("Authorization"))
	}
	if hb.Get("Authorization") != "Bearer token-b" || hb.Get("X-Api-Key") != "" {
		t.Fatalf("b got x-api-key %q authorization %q", hb.Get("X-Api-Key"), hb.Get("Authorization"))
	}
	for _, h := range []http.Header{ha, hb} {
		if h.Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14" {
			t.Fatalf("anthropic-beta = %q: the OAuth beta must go with the client's token", h.Get("Anthropic-Beta"))
		}
	}
	if b.paths[0] != "/api/anthropic/v1/models?limit=5" {
		t.Fatalf("b path %q", b.paths[0])
	}
}

// A missing env var cools its provider as auth and the request fails over,
// without a request to that provider.
func TestMissingCredentialFailsOver(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyMessage("from a"))
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock("credential env LLMF_TEST_UNSET_VAR"), b.providerBlock()))
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from b") {
		t.Fatalf("answer %s", got)
	}
	if a.Hits() != 0 {
		t.Fatal("a was contacted without a credential")
	}
	s := snapshot(t, "a")
	if s.LastClass != ClassAuth || s.State != StateOpen || !strings.Contains(s.LastError, "LLMF_TEST_UNSET_VAR") {
		t.Fatalf("a: %+v", s)
	}
}

// The passthrough provider forwards the client's own credential; its
// breaker is per client, so one client's failure does not cool another.
func TestPassthroughIsPerClient(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "sub", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("Authorization") == "Bearer exhausted" {
			replyError(429, "rate_limit_error", "limited",
				"anthropic-ratelimit-unified-status", "rejected")(w, r, body)
			return
		}
		replyMessage("from sub")(w, r, body)
	})
	b := newUpstream(t, "b", replyMessage("from b"))
	t.Setenv("LLMF_TEST_KEY_B", "sk-b")
	p := startProxy(t, failoverSite(a.providerBlock("credential passthrough"), b.providerBlock("credential env LLMF_TEST_KEY_B")))
	got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer exhausted"))
	if !strings.Contains(got, "from b") {
		t.Fatalf("exhausted client: %s", got)
	}
	got = readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer fresh"))
	if !strings.Contains(got, "from sub") {
		t.Fatalf("other client was cooled too: %s", got)
	}
	if h := a.lastHeader(); h.Get("Authorization") != "Bearer fresh" {
		t.Fatalf("passthrough sent %q", h.Get("Authorization"))
	}
	if h := b.lastHeader(); h.Get("Authorization") != "" || h.Get("X-Api-Key") != "sk-b" {
		t.Fatalf("b got the client's token: %v", h)
	}
	// the exhausted client keeps skipping sub
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer exhausted"))
	if a.Hits() != 2 {
		t.Fatalf("sub hits = %d, want 2", a.Hits())
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

// A body larger than request_buffer is refused with Anthropic's 413.
func TestRequestBufferLimit(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyMessage("from a"))
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\trequest_buffer 1KiB\n"))
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	res := post(t, p.URL+"/v1/messages", big)
	body := readAll(t, res)
	if res.StatusCode != 413 || !strings.Contains(body, `"request_too_large"`) {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	// a chunked body of unknown length is cut at the same limit
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, res); res.StatusCode != 413 {
		t.Fatalf("chunked: %d", res.StatusCode)
	}
	if a.Hits() != 0 {
		t.Fatal("an oversized body reached the provider")
	}
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from a") {
		t.Fatalf("small body: %s", got)
	}
}

// A healthy stream passes through event by event: the upstream sends the
// next event only after the client has received the previous one.
func TestStreamPassesThroughEventByEvent(t *testing.T) {
	useFakeClock(t)
	events := streamEvents("claude-sonnet-4-5", "Hel", "lo", " world")
	next := make(chan struct{})
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for i, ev := range events {
			if i > 3 { // after the first content event, wait for the client
				select {
				case <-next:
				case <-time.After(10 * time.Second):
					return
				}
			}
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	stream := sdkClient(p).Messages.NewStreaming(context.Background(), userMessage("hi"))
	var msg anthropic.Message
	var seen []string
	for stream.Next() {
		ev := stream.Current()
		if err := msg.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ev.Type)
		switch ev.Type {
		case "content_block_delta", "content_block_stop", "message_delta":
			next <- struct{}{} // the client has this event; release the next
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	// the SDK does not surface ping
	if textOf(&msg) != "Hello world" || len(seen) != len(events)-1 || seen[len(seen)-1] != "message_stop" {
		t.Fatalf("text %q events %v", textOf(&msg), seen)
	}
}
