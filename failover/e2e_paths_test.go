package failover

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Claude Code's `HEAD /` preconnect is not a model call: it goes to the
// first provider, whose 501 reaches the client untouched and cools
// nothing, so the next model call still goes to that provider.
func TestNonModelRequestCoolsNothing(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.URL.Path != "/v1/messages" {
			w.Header().Set("X-From", "a")
			w.WriteHeader(http.StatusNotImplemented)
			return
		}
		replyMessage("hello from a")(w, r, body)
	})
	b := newUpstream(t, "b", replyMessage("hello from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	attempts := func(outcome string) string {
		_, text := adminGet(t, p, "/metrics")
		v, _ := metricValue(t, text, "caddy_llm_attempts_total", `provider="a"`, `outcome="`+outcome+`"`)
		return v
	}
	passedBefore, successBefore := attempts("passed_through"), attempts("success")

	res := headRoot(t, p.URL)
	if res.StatusCode != http.StatusNotImplemented || res.Header.Get("X-From") != "a" {
		t.Fatalf("HEAD /: %d from %q, want a's 501", res.StatusCode, res.Header.Get("X-From"))
	}
	// an error answer to some other path: passed through, not failed over
	res = post(t, p.URL+"/v1/messages/batches", simpleRequest)
	readAll(t, res)
	if res.StatusCode != http.StatusNotImplemented || b.Hits() != 0 {
		t.Fatalf("POST /v1/messages/batches: %d, b hits %d; want a's 501 and no failover", res.StatusCode, b.Hits())
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed || s.LastClass != classify.None || s.Requests != 0 {
		t.Fatalf("a after non-model requests: %+v, want closed, untouched", s)
	}
	// counted for what they were: error answers passed through, not successes
	if got := attempts("passed_through"); got != addToMetric(t, passedBefore, 2) || attempts("success") != successBefore {
		t.Fatalf("attempts_total for a: passed_through %q (was %q), success %q (was %q); want +2 and unchanged",
			got, passedBefore, attempts("success"), successBefore)
	}
	msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != "hello from a" {
		t.Fatalf("model call: %v %v, want a's answer", msg, err)
	}
}

// headRoot sends Claude Code's preconnect, HEAD /, to the site at base.
func headRoot(t *testing.T, base string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest(http.MethodHead, base+"/", nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	return res
}

// A non-model request whose first provider cannot be reached goes to the
// next one, and still cools nothing.
func TestNonModelRequestSkipsUnreachable(t *testing.T) {
	useFakeClock(t)
	b := newUpstream(t, "b", func(w http.ResponseWriter, r *http.Request, _ []byte) { w.WriteHeader(http.StatusNoContent) })
	dead := freePort(t)
	p := startProxy(t, failoverSite(
		"\t\tprovider dead {\n\t\t\tupstream http://127.0.0.1:"+itoa(dead)+"\n\t\t}\n", b.providerBlock()))
	res := headRoot(t, p.URL)
	if res.StatusCode != http.StatusNoContent || res.Header.Get("X-LLM-Provider") != "b" {
		t.Fatalf("HEAD /: %d from %q, want b's 204", res.StatusCode, res.Header.Get("X-LLM-Provider"))
	}
	if s := snapshot(t, "dead"); s.State != breaker.Closed {
		t.Fatalf("dead after a non-model request: %s, want closed", s.State)
	}
}

// 501 Not Implemented on a model call fails over and cools nothing.
func TestNotImplementedFailsOverWithoutCooling(t *testing.T) {
	useFakeClock(t)
	p, a, _ := startPair(t, "a", replyError(501, "api_error", "not implemented here"),
		"b", replyMessage("hello from b"))
	for i := range 2 {
		msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
		if err != nil || textOf(msg) != "hello from b" {
			t.Fatalf("request %d: %v %v, want b's answer", i, msg, err)
		}
	}
	wantHitsAndState(t, a, 2, breaker.Closed, "a 501 must not cool a")
}

// count_tokens and models: a provider that lacks the endpoint (404, 405,
// 501) is skipped without cooling; when none has it, the client gets the
// first provider's answer.
func TestOptionalEndpointFailsOver(t *testing.T) {
	useFakeClock(t)
	lacks := func(status int, who string) func(http.ResponseWriter, *http.Request, []byte) {
		return func(w http.ResponseWriter, r *http.Request, body []byte) {
			if r.URL.Path == "/v1/messages" {
				replyMessage("hello from "+who)(w, r, body)
				return
			}
			replyError(status, "not_found_error", who+" has no "+r.URL.Path)(w, r, body)
		}
	}
	a := newUpstream(t, "a", lacks(404, "a"))
	b := newUpstream(t, "b", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"input_tokens":42}`))
	})
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	client := sdkClient(p)
	count, err := client.Messages.CountTokens(context.Background(), anthropic.MessageCountTokensParams{
		Model:    "claude-sonnet-4-5",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	if err != nil || count.InputTokens != 42 {
		t.Fatalf("count_tokens: %v %v, want b's 42", count, err)
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("a after lacking count_tokens: %s, want closed", s.State)
	}
	if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "hello from a" {
		t.Fatalf("model call after: %v %v, want a's answer", msg, err)
	}

	// no provider has it: the first provider's answer
	b.setHandler(lacks(405, "b"))
	_, err = client.Messages.CountTokens(context.Background(), anthropic.MessageCountTokensParams{
		Model:    "claude-sonnet-4-5",
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hi"))},
	})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 404 || !strings.Contains(apiErr.Error(), "a has no") ||
		apiErr.Response.Header.Get("X-LLM-Provider") != "a" || apiErr.Response.Header.Get("X-LLM-Attempts") != "2" {
		t.Fatalf("err = %v, want a's 404 after 2 attempts", err)
	}
	for _, name := range []string{"a", "b"} {
		if s := snapshot(t, name); s.State != breaker.Closed {
			t.Fatalf("%s: %s, want closed", name, s.State)
		}
	}
}

// Model discovery (`GET /v1/models`): a provider whose list request
// fails is left out of the list, and the failure cools nothing (a list
// request says nothing of how the provider serves models).
func TestModelsListLeavesOutAFailingProvider(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyError(429, "rate_limit_error", "limited"))
	b := newUpstream(t, "b", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/models" {
			http.Error(w, "unexpected "+r.Method+" "+r.URL.Path, http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":[{"id":"claude-sonnet-4-5","type":"model","display_name":"Claude Sonnet 4.5","created_at":"2025-09-29T00:00:00Z"}],"has_more":false,"first_id":"claude-sonnet-4-5","last_id":"claude-sonnet-4-5"}`))
	})
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	page, err := sdkClient(p).Models.List(context.Background(), anthropic.ModelListParams{})
	if err != nil || len(page.Data) != 1 || page.Data[0].ID != "claude-sonnet-4-5" || page.Data[0].DisplayName != "Claude Sonnet 4.5" {
		t.Fatalf("models: %v %v", page, err)
	}
	if a.Hits() != 1 {
		t.Fatalf("a asked %d times, want once", a.Hits())
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed || s.ConsecutiveFailures != 0 {
		t.Fatalf("a: %s %s, want closed: a list request feeds no breaker", s.State, s.LastClass)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// addToMetric adds n to a sample value as metricValue returns it ("" for
// a series not there yet).
func addToMetric(t *testing.T, v string, n float64) string {
	t.Helper()
	f := 0.0
	if v != "" {
		var err error
		if f, err = strconv.ParseFloat(v, 64); err != nil {
			t.Fatalf("metric value %q: %v", v, err)
		}
	}
	return strconv.FormatFloat(f+n, 'g', -1, 64)
}
