package failover

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is an OTLP/HTTP trace receiver on loopback: it decodes
// each ExportTraceServiceRequest (protobuf) and keeps its spans.
type otlpReceiver struct {
	*httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rcv := new(otlpReceiver)
	rcv.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			http.Error(w, "want POST /v1/traces as application/x-protobuf", http.StatusBadRequest)
			return
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			body = zr
		}
		raw, err := io.ReadAll(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rcv.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rcv.spans = append(rcv.spans, ss.Spans...)
			}
		}
		rcv.mu.Unlock()
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(rcv.Close)
	return rcv
}

func (rcv *otlpReceiver) received() []*tracepb.Span {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	return slices.Clone(rcv.spans)
}

// exportTo points Caddy's OTLP exporter at the receiver. The tracing
// handler makes its exporter when it is provisioned, from the environment.
func (rcv *otlpReceiver) exportTo(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rcv.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_TRACES_SAMPLER", "always_on")
	t.Setenv("OTEL_PROPAGATORS", "tracecontext,baggage")
}

// attr is a span attribute's value as a string (ints in decimal), and
// whether the span has it.
func attr(s *tracepb.Span, key string) (string, bool) {
	for _, kv := range s.Attributes {
		if kv.Key != key {
			continue
		}
		switch v := kv.Value.Value.(type) {
		case *commonpb.AnyValue_StringValue:
			return v.StringValue, true
		case *commonpb.AnyValue_IntValue:
			return itoa(int(v.IntValue)), true
		default:
			return kv.Value.String(), true
		}
	}
	return "", false
}

func spanID(b []byte) string { return hex.EncodeToString(b) }

// With Caddy's tracing handler around llm_failover, each attempt is a
// child span of the request's span with its provider, class, status, model
// and (for the answer) tokens; each upstream gets a traceparent naming
// its own attempt's span. Spans reach a real OTLP/HTTP receiver, flushed
// by stopping Caddy. span_attributes are worked out when the request's
// span ends, so {llm.*} placeholders there have their values; the span
// name is worked out when it starts, before any provider was tried.
func TestTracingSpanPerAttempt(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rcv.exportTo(t)
	a := newUpstream(t, "tr_a", replyError(529, "overloaded_error", "busy"))
	b := newUpstream(t, "tr_b", replyMessage("fine"))
	p := startProxy(t, `	tracing {
		span "llm {llm.provider}"
		span_attributes {
			llm.answered_by {llm.provider}
			llm.failover_classes {llm.failover_classes}
			llm.attempts {llm.attempts}
		}
	}
`+failoverSite(a.providerBlock(), b.providerBlock()))

	// the client's trace goes on through the proxy
	const clientTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	res := post(t, p.URL+"/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`,
		"traceparent", "00-"+clientTrace+"-00f067aa0ba902b7-01")
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	// unloading the config shuts the tracer provider down, which exports
	// what its batch processor still holds
	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping caddy: %v", err)
	}

	spans := rcv.received()
	var server *tracepb.Span
	for _, s := range spans {
		if s.Kind == tracepb.Span_SPAN_KIND_SERVER {
			server = s
		}
	}
	if server == nil {
		t.Fatalf("no server span among %d spans: %v", len(spans), spans)
	}
	if spanID(server.TraceId) != clientTrace || spanID(server.ParentSpanId) != "00f067aa0ba902b7" {
		t.Errorf("server span in trace %x under %x, want the client's", server.TraceId, server.ParentSpanId)
	}
	if server.Name != "llm " {
		t.Errorf("server span name %q, want %q ({llm.*} is empty when the span starts)", server.Name, "llm ")
	}
	for key, want := range map[string]string{"llm.answered_by": "tr_b", "llm.failover_classes": "overloaded", "llm.attempts": "2"} {
		if got, _ := attr(server, key); got != want {
			t.Errorf("server span attribute %s = %q, want %q", key, got, want)
		}
	}

	var children []*tracepb.Span
	for _, s := range spans {
		if bytes.Equal(s.ParentSpanId, server.SpanId) {
			children = append(children, s)
		}
	}
	slices.SortFunc(children, func(x, y *tracepb.Span) int { return int(x.StartTimeUnixNano - y.StartTimeUnixNano) })
	if len(children) != 2 {
		t.Fatalf("%d child spans of the server span, want 2: %v", len(children), spans)
	}
	wants := []map[string]string{
		{"llm.provider": "tr_a", "llm.class": "overloaded", "http.response.status_code": "529",
			"gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.operation.name": "chat", "error.type": "overloaded"},
		{"llm.provider": "tr_b", "llm.class": "success", "http.response.status_code": "200",
			"gen_ai.request.model": "claude-sonnet-4-5", "gen_ai.usage.input_tokens": "12", "gen_ai.usage.output_tokens": "7"},
	}
	for i, s := range children {
		if !bytes.Equal(s.TraceId, server.TraceId) {
			t.Errorf("attempt %d: trace %x, want the server span's %x", i+1, s.TraceId, server.TraceId)
		}
		if s.Kind != tracepb.Span_SPAN_KIND_CLIENT || s.Name != "chat claude-sonnet-4-5" {
			t.Errorf("attempt %d: kind %v name %q, want a client span named %q", i+1, s.Kind, s.Name, "chat claude-sonnet-4-5")
		}
		for key, want := range wants[i] {
			if got, ok := attr(s, key); !ok || got != want {
				t.Errorf("attempt %d: attribute %s = %q (present %v), want %q", i+1, key, got, ok, want)
			}
		}
	}
	if _, ok := attr(children[0], "gen_ai.usage.input_tokens"); ok {
		t.Errorf("the failed attempt reports tokens")
	}
	if _, ok := attr(children[1], "error.type"); ok {
		t.Errorf("the answered attempt has an error.type")
	}
	if children[0].Status.GetCode() != tracepb.Status_STATUS_CODE_ERROR || children[1].Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
		t.Errorf("span statuses %v, %v: want the failed attempt's an error, the answer's not", children[0].Status, children[1].Status)
	}

	// each upstream saw a traceparent naming its own attempt's span
	traceID := spanID(server.TraceId)
	for i, u := range []*fakeUpstream{a, b} {
		want := "00-" + traceID + "-" + spanID(children[i].SpanId) + "-01"
		if got := u.lastHeader().Get("Traceparent"); got != want {
			t.Errorf("%s saw traceparent %q, want %q", u.name, got, want)
		}
	}
}

// Without a tracing handler nothing is added to the upstream request: a
// client's own traceparent reaches the provider as it was sent.
func TestNoTracingLeavesTraceparent(t *testing.T) {
	u := newUpstream(t, "nt_a", replyMessage("fine"))
	p := startProxy(t, failoverSite(u.providerBlock()))
	const sent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
	res := post(t, p.URL+"/v1/messages", simpleRequest, "traceparent", sent)
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	if got := u.lastHeader().Get("Traceparent"); got != sent {
		t.Errorf("upstream saw traceparent %q, want the client's %q", got, sent)
	}
}

// A streamed answer's span has the tokens its events reported, and the
// model the provider was sent (after its model mapping).
func TestTracingStreamedAttempt(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rcv.exportTo(t)
	u := newUpstream(t, "ts_a", replyEvents(streamEvents("glm-4.6", "a", "b", "c")))
	p := startProxy(t, "\ttracing\n"+failoverSite(u.providerBlock("model claude-* glm-4.6")))
	res := post(t, p.URL+"/v1/messages", `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`)
	if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, "message_stop") {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping caddy: %v", err)
	}
	var attempts []*tracepb.Span
	for _, s := range rcv.received() {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			attempts = append(attempts, s)
		}
	}
	if len(attempts) != 1 {
		t.Fatalf("%d attempt spans, want 1: %v", len(attempts), rcv.received())
	}
	s := attempts[0]
	for key, want := range map[string]string{"llm.provider": "ts_a", "llm.class": "success", "http.response.status_code": "200",
		"gen_ai.request.model": "glm-4.6", "gen_ai.usage.input_tokens": "25", "gen_ai.usage.output_tokens": "3"} {
		if got, ok := attr(s, key); !ok || got != want {
			t.Errorf("attribute %s = %q (present %v), want %q", key, got, ok, want)
		}
	}
	if s.Name != "chat glm-4.6" {
		t.Errorf("span name %q", s.Name)
	}
	if got := u.lastHeader().Get("Traceparent"); !strings.Contains(got, spanID(s.SpanId)) {
		t.Errorf("upstream saw traceparent %q, want one naming span %x", got, s.SpanId)
	}
}

// A model a client makes long, or not valid UTF-8, reaches the span cut
// and made valid: OTLP refuses a whole batch with a string that is not
// UTF-8, so one request must not cost every span exported with it.
func TestTracingBoundsTheModel(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rcv.exportTo(t)
	u := newUpstream(t, "tb_a", replyMessage("fine"))
	p := startProxy(t, "\ttracing\n"+failoverSite(u.providerBlock()))
	model := "claude-" + strings.Repeat("x", 300) + "\xff"
	res := post(t, p.URL+"/v1/messages", `{"model":"`+model+`","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping caddy: %v", err)
	}
	var attempt *tracepb.Span
	for _, s := range rcv.received() {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			attempt = s
		}
	}
	if attempt == nil {
		t.Fatalf("no attempt span exported: %v", rcv.received())
	}
	got, _ := attr(attempt, "gen_ai.request.model")
	if want := model[:128] + "…"; got != want {
		t.Errorf("gen_ai.request.model = %q (%d bytes), want %q", got, len(got), want)
	}
	if len(attempt.Name) > len("chat ")+128+len("…") {
		t.Errorf("span name of %d bytes", len(attempt.Name))
	}
}

// Wrap mode: each attempt the wrapped reverse_proxy sends is a span too,
// and its upstream gets that span's traceparent.
func TestTracingWrapMode(t *testing.T) {
	rcv := newOTLPReceiver(t)
	rcv.exportTo(t)
	a := newUpstream(t, "tw_a", replyError(529, "overloaded_error", "busy"))
	b := newUpstream(t, "tw_b", replyMessage("fine"))
	p := startProxy(t, "\ttracing\n"+wrapSite(a, b))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if body := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	if err := caddy.Stop(); err != nil {
		t.Fatalf("stopping caddy: %v", err)
	}
	var attempts []*tracepb.Span
	for _, s := range rcv.received() {
		if s.Kind == tracepb.Span_SPAN_KIND_CLIENT {
			attempts = append(attempts, s)
		}
	}
	slices.SortFunc(attempts, func(x, y *tracepb.Span) int { return int(x.StartTimeUnixNano - y.StartTimeUnixNano) })
	if len(attempts) != 2 {
		t.Fatalf("%d attempt spans, want 2: %v", len(attempts), rcv.received())
	}
	for i, want := range []struct {
		u             *fakeUpstream
		class, status string
	}{{a, "overloaded", "529"}, {b, "success", "200"}} {
		s := attempts[i]
		if got, _ := attr(s, "llm.provider"); got != hostPort(want.u) {
			t.Errorf("attempt %d: llm.provider %q, want %q", i+1, got, hostPort(want.u))
		}
		if got, _ := attr(s, "llm.class"); got != want.class {
			t.Errorf("attempt %d: llm.class %q, want %q", i+1, got, want.class)
		}
		if got, _ := attr(s, "http.response.status_code"); got != want.status {
			t.Errorf("attempt %d: status %q, want %q", i+1, got, want.status)
		}
		if got, wantTP := want.u.lastHeader().Get("Traceparent"), "00-"+spanID(s.TraceId)+"-"+spanID(s.SpanId)+"-01"; got != wantTP {
			t.Errorf("%s saw traceparent %q, want %q", want.u.name, got, wantTP)
		}
	}
}
