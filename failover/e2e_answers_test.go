package failover

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// countingSDK is the official Go SDK with its own retry logic on (up to
// retries), counting every request it sends.
func countingSDK(p *proxy, retries int, sent *atomic.Int32) *anthropic.Client {
	c := anthropic.NewClient(
		option.WithBaseURL(p.URL),
		option.WithAPIKey("sk-client"),
		option.WithMaxRetries(retries),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			sent.Add(1)
			return next(r)
		}),
	)
	return &c
}

// When every provider cools for an hour, the synthesized 429 tells the
// SDK not to retry: it sends one request and reports the error at once.
func TestAllCoolingTellsSDKNotToRetry(t *testing.T) {
	useFakeClock(t)
	p, a, b := startPair(t, "a", replyError(429, "rate_limit_error", "limited", "Retry-After", "3600"),
		"b", replyError(429, "rate_limit_error", "limited", "Retry-After", "7200"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // both cool

	var sent atomic.Int32
	// without x-should-retry the SDK would wait out Retry-After (an hour)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := countingSDK(p, 3, &sent).Messages.New(ctx, userMessage("hi"))
	apiErr := wantAPIError(t, err, 429)
	if n := sent.Load(); n != 1 {
		t.Fatalf("the SDK sent %d requests, want 1 (x-should-retry: false)", n)
	}
	h := apiErr.Response.Header
	for k, want := range map[string]string{
		"Retry-After": "3600", "Retry-After-Ms": "3600000", "X-Should-Retry": "false", "X-LLM-Attempts": "0",
		"X-LLM-Providers": `"a";state=open;class=rate_limit;retry-after=3600, "b";state=open;class=rate_limit;retry-after=7200`,
	} {
		if got := h.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	if a.Hits() != 1 || b.Hits() != 1 {
		t.Fatalf("hits a=%d b=%d, want 1 and 1", a.Hits(), b.Hits())
	}
}

// When a provider admits again soon, the SDK is told to retry after the
// exact wait (retry-after-ms), and does.
func TestAllCoolingSoonLetsSDKRetry(t *testing.T) {
	useFakeClock(t) // stands still: the providers keep cooling while the SDK retries
	a := newUpstream(t, "a", replyError(529, "overloaded_error", "busy", "Retry-After", "0.2"))
	p := startProxy(t, failoverSite(a.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))

	var sent atomic.Int32
	_, err := countingSDK(p, 2, &sent).Messages.New(context.Background(), userMessage("hi"))
	apiErr := wantAPIError(t, err, 503)
	if n := sent.Load(); n != 3 {
		t.Fatalf("the SDK sent %d requests, want 3 (1 + 2 retries: x-should-retry: true)", n)
	}
	h := apiErr.Response.Header
	if h.Get("Retry-After-Ms") != "200" || h.Get("X-Should-Retry") != "true" || h.Get("Retry-After") != "1" {
		t.Fatalf("headers %v", h)
	}
	if a.Hits() != 1 {
		t.Fatalf("a hits %d, want 1: a cooling provider is not contacted", a.Hits())
	}
}

// When every provider failed, the answer names each one's failure, not
// only the last; the states header says the same.
func TestExhaustedNamesEveryFailure(t *testing.T) {
	useFakeClock(t)
	dead := freePort(t)
	nokey := func(name string) string {
		return "\t\tprovider " + name + " {\n\t\t\tupstream http://127.0.0.1:1\n\t\t\tcredential env LLMF_TEST_UNSET_VAR\n\t\t}\n"
	}
	deadBlock := func(name string) string {
		return "\t\tprovider " + name + " {\n\t\t\tupstream http://127.0.0.1:" + itoa(dead) + "\n\t\t}\n"
	}

	// no provider answered: a 502 naming each failure
	p := startProxy(t, failoverSite(nokey("nokey"), deadBlock("dead")))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	if res.StatusCode != http.StatusBadGateway {
		t.Fatalf("%d %s, want 502", res.StatusCode, body)
	}
	for _, want := range []string{"nokey: auth (credential unavailable; see the proxy log)", "dead: unreachable ("} {
		if !strings.Contains(body, want) {
			t.Errorf("body %s lacks %q", body, want)
		}
	}
	if strings.Contains(body, "LLMF_TEST_UNSET_VAR") {
		t.Errorf("body %s tells what the credential source said", body)
	}
	if got := res.Header.Get("X-LLM-Providers"); got != `"nokey";state=open;class=auth;retry-after=1800, "dead";state=open;class=unreachable;retry-after=10` ||
		res.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("X-LLM-Providers %q X-LLM-Attempts %q", got, res.Header.Get("X-LLM-Attempts"))
	}
	if got, ok := res.Header["X-Llm-Provider"]; ok {
		t.Errorf("X-LLM-Provider %q on a 502 that no provider answered", got)
	}

	// a provider answered: its real answer, even when a later one did not
	// answer at all, with every failure in the states header
	b := newUpstream(t, "b", replyError(500, "api_error", "b broke"))
	p2 := startProxy(t, failoverSite(nokey("nokey2"), b.providerBlock(), deadBlock("dead2")))
	res = post(t, p2.URL+"/v1/messages", simpleRequest)
	body = readAll(t, res)
	if res.StatusCode != 500 || !strings.Contains(body, "b broke") || res.Header.Get("X-LLM-Provider") != "b" {
		t.Fatalf("%d %s %v, want b's 500", res.StatusCode, body, res.Header)
	}
	if got := res.Header.Get("X-LLM-Providers"); got != `"nokey2";state=open;class=auth;retry-after=1800, "b";state=open;class=server_error;status=500;retry-after=10, "dead2";state=open;class=unreachable;retry-after=10` {
		t.Fatalf("X-LLM-Providers %q", got)
	}
}

// A request too large for the buffer is answered by the proxy, with the
// attempts header.
func TestTooLargeAnswerHasAttempts(t *testing.T) {
	a := newUpstream(t, "a", replyMessage("a"))
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\trequest_buffer 1KiB\n"))
	res := post(t, p.URL+"/v1/messages", `{"model":"x","pad":"`+strings.Repeat("x", 2048)+`"}`)
	readAll(t, res)
	if res.StatusCode != 413 || res.Header.Get("X-LLM-Attempts") != "0" || res.Header.Get("X-LLM-Providers") != `"a";state=closed` {
		t.Fatalf("%d %v", res.StatusCode, res.Header)
	}
}
