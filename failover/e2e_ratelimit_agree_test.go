package failover

import (
	"regexp"
	"sync/atomic"
	"testing"
	"time"
)

// Retry-After and X-LLM-Providers' retry-after come from one reading of
// the clock: with a clock that moves between any two readings, they still
// name the same second on every answer.
func TestRetryAfterAgreesWithProvidersHeader(t *testing.T) {
	a := newUpstream(t, "agree_a", replyError(429, "rate_limit_error", "slow down", "Retry-After", "600"))
	var ns atomic.Int64
	ns.Store(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC).UnixNano())
	ticking := func() time.Time { return time.Unix(0, ns.Add(int64(170*time.Millisecond))) }
	clockOverride.Store(&ticking)
	t.Cleanup(func() { clockOverride.Store(nil) })
	p := startProxy(t, failoverSite(a.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	header := regexp.MustCompile(`retry-after=(\d+)`)
	for i := range 20 {
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		readAll(t, res)
		m := header.FindStringSubmatch(res.Header.Get("X-LLM-Providers"))
		if res.StatusCode != 429 || m == nil {
			t.Fatalf("request %d: %d, X-LLM-Providers %q", i, res.StatusCode, res.Header.Get("X-LLM-Providers"))
		}
		if got := res.Header.Get("Retry-After"); got != m[1] {
			t.Fatalf("request %d: Retry-After %s, X-LLM-Providers retry-after=%s", i, got, m[1])
		}
	}
	if a.Hits() != 1 {
		t.Fatalf("the cooling provider was asked again: %d requests", a.Hits())
	}
}
