package failover

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// requestLogEntries reads GET /llm/requests.
func requestLogEntries(t *testing.T, p *proxy, query string) []RequestLogEntry {
	t.Helper()
	code, body := adminGet(t, p, "/llm/requests"+query)
	if code != 200 {
		t.Fatalf("GET /llm/requests%s: %d %s", query, code, body)
	}
	var resp RequestLogResponse
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return resp.Requests
}

// A request that failed over is logged with each attempt, the provider
// that answered, its status, timings and tokens; never its prompt or the
// client's credential.
func TestRequestLogRecordsAttempts(t *testing.T) {
	p, a, b := startPair(t, "rl_a", replyError(529, "overloaded_error", "busy"), "rl_b", replyMessage("fine"))
	_ = a
	_ = b
	res := post(t, p.URL+"/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"secret prompt text"}]}`,
		"x-api-key", "sk-client-secret")
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	// a second request: rl_a is cooling, rl_b answers at once
	res = post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)

	entries := requestLogEntries(t, p, "")
	if len(entries) != 2 {
		t.Fatalf("%d entries, want 2: %+v", len(entries), entries)
	}
	newest, first := entries[0], entries[1]
	if len(newest.Attempts) != 1 || len(first.Attempts) != 2 {
		t.Fatalf("not newest first, or attempts missing: %+v", entries)
	}
	if first.Model != "claude-sonnet-4-5" || first.Path != "/v1/messages" || first.Streamed {
		t.Errorf("entry = %+v", first)
	}
	if at := first.Attempts[0]; at.Provider != "rl_a" || at.Class != "overloaded" || at.Status != 529 {
		t.Errorf("first attempt = %+v, want rl_a overloaded 529", at)
	}
	if at := first.Attempts[1]; at.Provider != "rl_b" || at.Class != "success" || at.Status != 200 {
		t.Errorf("second attempt = %+v, want rl_b success 200", at)
	}
	if first.Provider != "rl_b" || first.Status != 200 {
		t.Errorf("answered by %q with %d, want rl_b 200", first.Provider, first.Status)
	}
	if first.Tokens.Input != 12 || first.Tokens.Output != 7 {
		t.Errorf("tokens = %+v, want 12 in, 7 out", first.Tokens)
	}
	if first.TotalMs < first.FirstByteMs || first.FirstByteMs <= 0 || first.Time.IsZero() {
		t.Errorf("timings: total %v, first byte %v, time %v", first.TotalMs, first.FirstByteMs, first.Time)
	}
	_, raw := adminGet(t, p, "/llm/requests")
	for _, secret := range []string{"secret prompt text", "sk-client-secret"} {
		if strings.Contains(raw, secret) {
			t.Errorf("the request log holds %q: %s", secret, raw)
		}
	}
	if e := requestLogEntries(t, p, "?limit=1"); len(e) != 1 || len(e[0].Attempts) != 1 {
		t.Errorf("limit=1: %+v", e)
	}
	if code, body := adminGet(t, p, "/llm/requests?limit=x"); code != 400 || !strings.Contains(body, "limit") {
		t.Errorf("limit=x: %d %s", code, body)
	}
}

// Every provider cooling: the request is logged with no attempt and the
// status the client got.
func TestRequestLogAllCooling(t *testing.T) {
	a := newUpstream(t, "rl_c", replyError(429, "rate_limit_error", "slow down", "retry-after", "600"))
	p := startProxy(t, failoverSite(a.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	entries := requestLogEntries(t, p, "")
	if len(entries) != 2 || len(entries[0].Attempts) != 0 || entries[0].Status != http.StatusTooManyRequests {
		t.Fatalf("entries = %+v, want the newest with no attempt and 429", entries)
	}
	if at := entries[1].Attempts; len(at) != 1 || at[0].Class != "rate_limit" || entries[1].Status != 429 || entries[1].Provider != "" {
		t.Fatalf("first entry = %+v", entries[1])
	}
}

// The ring keeps the newest n requests.
func TestRequestLogBound(t *testing.T) {
	a := newUpstream(t, "rl_d", replyMessage("ok"))
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\trequest_log 3\n"))
	for range 10 {
		readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	}
	if e := requestLogEntries(t, p, "?limit=100"); len(e) != 3 {
		t.Fatalf("%d entries with request_log 3, want 3", len(e))
	}
}

// `request_log off` keeps none.
func TestRequestLogOff(t *testing.T) {
	a := newUpstream(t, "rl_e", replyMessage("ok"))
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\trequest_log off\n"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	if e := requestLogEntries(t, p, ""); len(e) != 0 {
		t.Fatalf("request_log off: %d entries", len(e))
	}
}

// The streamed flag and a stream's usage.
func TestRequestLogStream(t *testing.T) {
	a := newUpstream(t, "rl_s", replyEvents(streamEvents("claude-sonnet-4-5", "Hel", "lo")))
	p := startProxy(t, failoverSite(a.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", `{"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,"messages":[]}`))
	e := requestLogEntries(t, p, "")
	if len(e) != 1 || !e[0].Streamed || e[0].Provider != "rl_s" || e[0].FirstByteMs <= 0 {
		t.Fatalf("entries = %+v", e)
	}
}

// A request the proxy refuses itself once the client is known (over its
// limit, a dot segment, a body too large) is logged with the client, the
// status and why; one refused before the client is known (a wrong client
// key) is not, so that anyone cannot push the real entries out.
func TestRequestLogRefused(t *testing.T) {
	a := newUpstream(t, "rl_r", replyMessage("ok"))
	p := startProxy(t, limitsSite(t, a.providerBlock(), "\t\t\tlimit requests 1 per 1h\n", "\t\trequest_buffer 1KiB\n"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...))
	for _, c := range []struct {
		path, body string
		key        string
		status     int
	}{
		{"/v1/messages", simpleRequest, "alice-key", http.StatusTooManyRequests},
		{"/v1/x/../messages", simpleRequest, "bob-key", http.StatusBadRequest},
		{"/v1/messages", strings.Repeat("x", 4096), "bob-key", http.StatusRequestEntityTooLarge},
		{"/v1/messages", simpleRequest, "wrong-key", http.StatusUnauthorized},
	} {
		res := post(t, p.URL+c.path, c.body, asClient(c.key)...)
		readAll(t, res)
		if res.StatusCode != c.status {
			t.Fatalf("%s as %s: %d, want %d", c.path, c.key, res.StatusCode, c.status)
		}
	}
	var got []string
	for _, e := range requestLogEntries(t, p, "") {
		got = append(got, fmt.Sprintf("%s %d %s %d", e.Client, e.Status, e.Refused, len(e.Attempts)))
	}
	want := []string{"bob 413 body 0", "bob 400 path 0", "alice 429 limit 0", "alice 200  1"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("log:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if a.Hits() != 1 {
		t.Fatalf("the provider got %d requests, want 1", a.Hits())
	}
}
