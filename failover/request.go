package failover

import (
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// llmRequest is one client request on its way through the providers.
type llmRequest struct {
	r    *http.Request
	out  answerWriter // the client's writer, as every attempt writes to it
	body []byte
	// openBodies counts the attempts' readers over body that their
	// transports have not closed yet (attempt.go)
	openBodies atomic.Int32
	model      string        // the top-level "model" upstreams read (the last one): for mapping, logs and metrics
	fields     requestFields // where that model is in the body, for a provider that maps it
	scanned    []byte        // the body fields were read from
	clientKey  string        // fingerprint of the client's credential, for passthrough breakers
	// clientCred is the client's own credential (Authorization,
	// x-api-key), taken out of r.Header before any attempt: only a
	// passthrough provider's transport sets it back
	clientCred clientCredential
	oauthBeta  bool // the client's anthropic-beta names its OAuth credential's beta
	// uncredentialed: a model call without a credential of its own, so
	// the passthrough providers were passed over (marked tried)
	uncredentialed bool
	kind           requestKind // model call, optional endpoint, or anything else (apipath.go)
	client         *Client     // the client that presented its key; nil without clients
	// conversation identifies the request's conversation for affinity; 0: none
	conversation uint64

	tried       []bool   // per provider index
	authRetried []bool   // per provider index: retried once with a renewed credential
	flags       [16]bool // backs tried and authRetried for up to 8 providers
	renewed     bool     // the last attempt's credential was refused and renewed: retry the same provider
	attempts    int      // sent upstream
	retries     int      // of those, retries of the same provider with a renewed credential

	// fail is what failed attempts left; nil until one fails
	fail *failureState

	// for placeholders and metrics
	answeredBy string
	sentModel  string
	usage      streaminspect.Usage
	finished   bool // the {llm.*} placeholders can be read

	tracer trace.Tracer // the request's span records: attempts are traced (tracing.go); nil: not

	logged loggedRequest // for the request log (requestlog.go)
}

// failureState is what a request keeps once an attempt failed: for the
// exhausted answer, the {llm.*} placeholders and repairs. A request its
// first provider serves never allocates it.
type failureState struct {
	classes      []Class         // of each failed attempt, in order
	failed       []failedAttempt // each failure, in order: named in an exhausted answer
	last         *gateResult     // the last failed attempt's held response
	lastAnswer   heldAnswer      // who gave it, and its class
	lastProvider *Provider

	// repairs (repairs.go)
	repaired      []uint8        // per provider index: bit 1<<RefusalKind set once retried with that repair; nil until one is
	pending       *pendingRepair // asked for by the refusal being held back
	extraBetas    []string       // anthropic-beta values a refusal asked to drop...
	extraBetasFor *Provider      // ...for this provider
}

// failures returns the request's failure state, made on first use.
func (req *llmRequest) failures() *failureState {
	if req.fail == nil {
		req.fail = new(failureState)
	}
	return req.fail
}

// mappingFields says where the model is, for a provider that maps it: the
// last "model" key is the one upstreams read. A body replaced by a repair
// is read again.
func (req *llmRequest) mappingFields() requestFields {
	if len(req.scanned) != len(req.body) || (len(req.body) > 0 && &req.scanned[0] != &req.body[0]) {
		req.fields, req.scanned = requestModel(req.body), req.body
	}
	return req.fields
}

// requestID names the request in logs: the client's own id if it sent one,
// else Caddy's per-request UUID.
func requestID(r *http.Request) string {
	if id := r.Header.Get("X-Request-Id"); id != "" {
		return id
	}
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if v, ok := repl.GetString("http.request.uuid"); ok {
			return v
		}
	}
	return ""
}

// perProvider sizes the per-provider lists for n providers, without an
// allocation for the usual few.
func (req *llmRequest) perProvider(n int) {
	if 2*n <= len(req.flags) {
		req.tried, req.authRetried = req.flags[:n:n], req.flags[n:2*n:2*n]
		return
	}
	req.tried, req.authRetried = make([]bool, n), make([]bool, n)
}

// answerWriter is the client's ResponseWriter, noting whether an answer
// has started: a panic before that can still be answered with a 500.
// http.ResponseController reaches the client's writer through Unwrap.
type answerWriter struct {
	http.ResponseWriter
	wrote  atomic.Bool  // a final status or a byte was written
	status atomic.Int32 // the first final status written, for the request log
}

func (w *answerWriter) WriteHeader(status int) {
	if status >= 200 || status == http.StatusSwitchingProtocols {
		w.wrote.Store(true)
		w.status.CompareAndSwap(0, int32(status))
	}
	w.ResponseWriter.WriteHeader(status)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	w.wrote.Store(true)
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController flush and hijack the client's writer.
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
