package failover

import (
	"net/http/httptest"
	"testing"
)

// Without a tracing handler, finding out that nobody traces costs no
// allocation, per request or per attempt.
func TestUntracedAttemptAllocatesNothing(t *testing.T) {
	r := httptest.NewRequest("POST", "/v1/messages", nil)
	req := &llmRequest{r: r, kind: kindModel}
	a := new(attempt)
	a.req = req
	ctx := r.Context()
	allocs := testing.AllocsPerRun(100, func() {
		req.startTracing()
		if a.startSpan(ctx) != ctx {
			t.Fatal("an untraced attempt got a context of its own")
		}
	})
	if allocs != 0 || req.tracer != nil || a.span != nil {
		t.Errorf("untraced: %v allocations, tracer %v, span %v; want none", allocs, req.tracer, a.span)
	}
}
