package failover

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// Hostile trace headers, a client that leaves mid-attempt and a stream
// that breaks after commit: every attempt's span ends and is exported,
// with attribute values that are valid UTF-8 and bounded, and one
// request's text does not cost the spans exported with it.
func TestTracingHostileRequests(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rcv.exportTo(t)
	gone := make(chan struct{})
	u := newUpstream(t, "th_a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch {
		case strings.Contains(string(body), `"m-gone"`):
			<-r.Context().Done() // the proxy gave up on it: its client left
			close(gone)
		case strings.Contains(string(body), `"m-broken"`):
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			for _, e := range streamEvents("m-broken", "a", "b", "c")[:4] {
				_, _ = w.Write([]byte(e))
			}
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection breaks mid-stream
		default:
			replyMessage("fine")(w, r, body)
		}
	})
	p := startProxy(t, "\ttracing\n"+failoverSite(u.providerBlock()))
	request := func(model string, stream bool) string {
		return fmt.Sprintf(`{"model":%q,"max_tokens":64,"stream":%v,"messages":[{"role":"user","content":"hi"}]}`, model, stream)
	}

	hostile := [][]string{
		{"traceparent", "00-zzzz-yyyy-01"},
		{"traceparent", "00-" + strings.Repeat("a", 32) + "-" + strings.Repeat("b", 16) + "-01" + strings.Repeat("x", 6000)},
		{"traceparent", "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"traceparent", "00-00000000000000000000000000000000-0000000000000000-01"},
		{"tracestate", strings.Repeat("k=v,", 2000)},
		{"tracestate", "a=\xff\xfe"},
		{"baggage", strings.Repeat("k=v,", 2000)},
		{"baggage", "k=%ff%fe\xff;p=\xff"},
		{"User-Agent", "agent-\xff\xfe-" + strings.Repeat("u", 4000)},
	}
	for i, h := range hostile {
		header := h
		if i == 0 { // many of them at once as well
			for range 100 {
				header = append(header, "traceparent", "00-"+strings.Repeat("c", 32)+"-"+strings.Repeat("d", 16)+"-01")
			}
		}
		res := post(t, p.URL+"/v1/messages", request(fmt.Sprintf("m-hostile-%d", i), false), header...)
		if body := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("hostile header %d: %d %s", i, res.StatusCode, body)
		}
	}

	// refused before it is known who sent it, and a path that is not UTF-8
	res := post(t, p.URL+"/v1/messages", request("m-refused", false), "Origin", "http://evil.example", "User-Agent", "\xff")
	if body := readAll(t, res); res.StatusCode != http.StatusForbidden {
		t.Fatalf("a foreign page's request: %d %s", res.StatusCode, body)
	}
	res = post(t, p.URL+"/v1/%ff%fe", request("m-path", false))
	readAll(t, res)

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/messages", strings.NewReader(request("m-gone", false)))
	if res, err := freshConnClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("the request the client left was answered: %d", res.StatusCode)
	}
	cancel()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream never saw the attempt given up")
	}

	res = post(t, p.URL+"/v1/messages", request("m-broken", true))
	if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, "event: error") {
		t.Fatalf("broken stream: %d %s", res.StatusCode, body)
	}

	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping caddy: %v", err)
	}
	byModel := map[string]*tracepb.Span{}
	for _, s := range rcv.received() {
		for _, kv := range s.Attributes {
			if v := kv.Value.GetStringValue(); !utf8.ValidString(v) {
				t.Errorf("span %q: attribute %s is not UTF-8", s.Name, kv.Key)
			}
		}
		if s.Kind != tracepb.Span_SPAN_KIND_CLIENT {
			continue
		}
		for _, kv := range s.Attributes {
			if v := kv.Value.GetStringValue(); len(v) > 256 {
				t.Errorf("attempt span %q: attribute %s of %d bytes", s.Name, kv.Key, len(v))
			}
		}
		model, _ := attr(s, "gen_ai.request.model")
		if byModel[model] != nil {
			t.Errorf("two attempt spans for %s", model)
		}
		byModel[model] = s
		if s.EndTimeUnixNano < s.StartTimeUnixNano || s.EndTimeUnixNano == 0 {
			t.Errorf("span %q did not end", s.Name)
		}
	}
	for i := range hostile {
		model := fmt.Sprintf("m-hostile-%d", i)
		if s := byModel[model]; s == nil {
			t.Errorf("no attempt span for the request with hostile header %d (%s)", i, hostile[i][0])
		} else if class, _ := attr(s, "llm.class"); class != "success" {
			t.Errorf("%s: class %q", model, class)
		}
	}
	// the client that left is not the provider's failure; the stream that
	// broke after commit is, as the breaker counts it
	for model, want := range map[string]string{"m-gone": "client_gone", "m-broken": "server_error"} {
		s := byModel[model]
		if s == nil {
			t.Errorf("no attempt span for %s", model)
			continue
		}
		class, _ := attr(s, "llm.class")
		errType, _ := attr(s, "error.type")
		failed := s.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR
		if class != want || failed != (want != "client_gone") || (failed && errType != want) {
			t.Errorf("%s: class %q, error.type %q, status %v; want class %q, an error status only for a failure", model, class, errType, s.Status, want)
		}
	}
}

// Wrap mode: an upstream nobody listens on, reverse_proxy's own retries,
// a client that leaves while the upstream holds its answer: each attempt
// span ends, one per attempt, none left open.
func TestTracingWrapModeEnds(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rcv.exportTo(t)
	hold := make(chan struct{})
	b := newUpstream(t, "twe_b", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), `"m-gone"`) {
			select {
			case <-r.Context().Done():
			case <-hold:
			}
			return
		}
		replyMessage("fine")(w, r, body)
	})
	defer close(hold)
	dead := freeAddr(t) // nothing listens here
	p := startProxy(t, "\ttracing\n\tllm_failover\n\treverse_proxy "+dead+" "+hostPort(b)+
		" {\n\t\tlb_policy llm_failover\n\t\tlb_retries 2\n\t}")
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/messages",
		strings.NewReader(`{"model":"m-gone","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`))
	if res, err := freshConnClient.Do(req); err == nil {
		res.Body.Close()
	}
	time.Sleep(100 * time.Millisecond) // the proxy sees the client gone
	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping caddy: %v", err)
	}
	var attempts, servers int
	for _, s := range rcv.received() {
		switch s.Kind {
		case tracepb.Span_SPAN_KIND_CLIENT:
			attempts++
			class, _ := attr(s, "llm.class")
			provider, _ := attr(s, "llm.provider")
			t.Logf("attempt span %q: provider %s, class %s", s.Name, provider, class)
			if class == "" || s.EndTimeUnixNano < s.StartTimeUnixNano {
				t.Errorf("attempt span %q: class %q, start %d, end %d", s.Name, class, s.StartTimeUnixNano, s.EndTimeUnixNano)
			}
		case tracepb.Span_SPAN_KIND_SERVER:
			servers++
		}
	}
	if servers != 2 || attempts < 3 {
		t.Errorf("%d request spans and %d attempt spans; want 2 and at least 3 (the dead upstream, the answer, the one given up)", servers, attempts)
	}
}
