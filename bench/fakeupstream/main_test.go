package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	o := opts{status: 200}
	if err := o.apply("status=429,retry-after=60,latency=2ms,events=3,event-delay=0s,stream=true"); err != nil {
		t.Fatal(err)
	}
	if o.status != 429 || o.retryAfter != "60" || o.latency != 2*time.Millisecond || o.events != 3 || o.stream != 1 {
		t.Fatalf("%+v", o)
	}
	if err := o.apply("nope=1"); err == nil {
		t.Fatal("unknown option accepted")
	}
}

func TestHandler(t *testing.T) {
	srv := httptest.NewServer(&handler{base: opts{status: 200, size: 600, events: 2}})
	defer srv.Close()
	post := func(path, body string, hdr ...string) (*http.Response, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+path, strings.NewReader(body))
		if len(hdr) == 2 {
			req.Header.Set(hdr[0], hdr[1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, string(b)
	}
	resp, body := post("/v1/messages", `{"model":"m","stream":false}`)
	if resp.StatusCode != 200 || len(body) < 550 || len(body) > 650 || !strings.Contains(body, `"model":"m"`) {
		t.Fatalf("json: %d %d %s", resp.StatusCode, len(body), body)
	}
	resp, body = post("/v1/messages", `{"model":"m","stream":true}`)
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") ||
		strings.Count(body, "event: content_block_delta") != 2 || !strings.HasSuffix(body, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") {
		t.Fatalf("stream: %s", body)
	}
	resp, body = post("/_fake/status=429,retry-after=60/v1/messages", `{}`)
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "60" || !strings.Contains(body, "rate_limit_error") {
		t.Fatalf("429: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, _ = post("/v1/messages", `{}`, "X-Fake-Opts", "status=529")
	if resp.StatusCode != 529 {
		t.Fatalf("header switch: %d", resp.StatusCode)
	}
}
