package failover

import (
	"context"
	"net/http"
	"slices"
	"strings"
	"sync"
	"unicode/utf8"

	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// Spans per attempt. Caddy's `tracing` handler, when it runs around this
// one, puts the request's span in the request's context; each attempt at
// a provider is then a child span of it, and the provider's request
// carries that child's trace context. Without a recording span nothing
// here runs past one context lookup per request.

// tracerName is the instrumentation scope of the attempt spans.
const tracerName = "github.com/caddy-llm-failover/caddy-llm-failover/failover"

// Attribute keys: the plugin's own, then OpenTelemetry's HTTP and GenAI
// semantic conventions.
const (
	attrProvider     = attribute.Key("llm.provider")
	attrClass        = attribute.Key("llm.class")
	attrStatus       = attribute.Key("http.response.status_code")
	attrErrorType    = attribute.Key("error.type")
	attrOperation    = attribute.Key("gen_ai.operation.name")
	attrModel        = attribute.Key("gen_ai.request.model")
	attrInputTokens  = attribute.Key("gen_ai.usage.input_tokens")
	attrOutputTokens = attribute.Key("gen_ai.usage.output_tokens")
)

// tracePropagator writes the attempt's trace context into the provider's
// request: the propagators OTEL_PROPAGATORS names (default W3C
// traceparent and baggage), as Caddy's tracing handler reads them.
var tracePropagator = sync.OnceValue(func() propagation.TextMapPropagator {
	return autoprop.NewTextMapPropagator()
})

// startTracing takes the tracer of the request's span, when a tracing
// handler records one; the request's attempts are then traced. It runs
// before anything else of the request, refusals included, so that the
// request span's client text is made valid first (validSpanText).
func (req *llmRequest) startTracing() {
	if span := trace.SpanFromContext(req.r.Context()); span.IsRecording() {
		req.tracer = span.TracerProvider().Tracer(tracerName)
		validSpanText(span)
	}
}

// readableSpan is what the OpenTelemetry SDK's spans offer besides
// trace.Span: their name and attributes as recorded so far.
type readableSpan interface {
	Name() string
	Attributes() []attribute.KeyValue
}

// validSpanText makes the request span's name and string attributes
// valid UTF-8. The tracing handler records client text there (the
// User-Agent, the decoded path) as it came, and OTLP refuses a whole
// batch with a string that is not UTF-8: one client's \xff would cost
// every span exported with its request, other clients' attempts
// included. A later value of a key replaces the earlier one.
func validSpanText(span trace.Span) {
	rs, ok := span.(readableSpan)
	if !ok {
		return
	}
	if name := rs.Name(); !utf8.ValidString(name) {
		span.SetName(strings.ToValidUTF8(name, "\uFFFD"))
	}
	var fixed []attribute.KeyValue
	for _, kv := range rs.Attributes() {
		switch kv.Value.Type() {
		case attribute.STRING:
			if v := kv.Value.AsString(); !utf8.ValidString(v) {
				fixed = append(fixed, kv.Key.String(strings.ToValidUTF8(v, "\uFFFD")))
			}
		case attribute.STRINGSLICE:
			vs := kv.Value.AsStringSlice()
			if !slices.ContainsFunc(vs, func(v string) bool { return !utf8.ValidString(v) }) {
				continue
			}
			for i, v := range vs {
				vs[i] = strings.ToValidUTF8(v, "\uFFFD")
			}
			fixed = append(fixed, kv.Key.StringSlice(vs))
		}
	}
	if len(fixed) > 0 {
		span.SetAttributes(fixed...)
	}
}

// startSpan starts the attempt's span under the request's span and
// returns the context that carries it; without tracing, parent as it is.
func (a *attempt) startSpan(parent context.Context) context.Context {
	if a.req.tracer == nil {
		return parent
	}
	operation := "llm_failover"
	if a.req.kind == kindModel {
		operation = "chat"
	}
	ctx, span := a.req.tracer.Start(parent, operation, trace.WithSpanKind(trace.SpanKindClient))
	a.span = span
	return ctx
}

// traceWrapped starts, in wrap mode, the span of the attempt the selector
// just gave an upstream, and sets its trace context on r, reverse_proxy's
// own copy of the request. reverse_proxy's retry (lb_retries) picking
// again stays in the same attempt, and so in the same span.
func (a *attempt) traceWrapped(r *http.Request) {
	if a.req.tracer == nil {
		return
	}
	ctx := r.Context()
	if a.span == nil {
		ctx = a.startSpan(ctx)
	} else {
		ctx = trace.ContextWithSpan(ctx, a.span)
	}
	tracePropagator().Inject(ctx, propagation.HeaderCarrier(r.Header))
}

// injectTraceContext sets the attempt span's trace context on the
// provider's request, in place of the request span's that the tracing
// handler set on the client's headers. ar.Header must be the attempt's
// own copy.
func injectTraceContext(ar *http.Request) {
	tracePropagator().Inject(ar.Context(), propagation.HeaderCarrier(ar.Header))
}

// endSpan ends the attempt's span with what came of the attempt: its
// class (as the request log words it), the status the provider answered
// with, the model it was sent and, for the answer, its token usage. An
// attempt that failed over is an error span.
func (a *attempt) endSpan(class string, status int, answered, failed bool, usage streaminspect.Usage) {
	span := a.span
	attrs := make([]attribute.KeyValue, 0, 8)
	if a.p != nil {
		attrs = append(attrs, attrProvider.String(a.p.Name))
	}
	attrs = append(attrs, attrClass.String(class))
	if status != 0 {
		attrs = append(attrs, attrStatus.Int(status))
	}
	if a.model != "" {
		// client text: cut and made valid UTF-8 (OTLP refuses a whole
		// batch with a string that is not)
		model := boundedString(a.model)
		attrs = append(attrs, attrModel.String(model))
		if a.req.kind == kindModel {
			attrs = append(attrs, attrOperation.String("chat"))
			span.SetName("chat " + model)
		}
	}
	if answered && usage != (streaminspect.Usage{}) {
		attrs = append(attrs, attrInputTokens.Int64(usage.InputTokens), attrOutputTokens.Int64(usage.OutputTokens))
	}
	if failed {
		attrs = append(attrs, attrErrorType.String(class))
		span.SetStatus(codes.Error, class)
	}
	span.SetAttributes(attrs...)
	span.End()
}
