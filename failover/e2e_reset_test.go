package failover

import (
	"strings"
	"testing"
	"time"
)

// Through the proxy: a provider's far reset is cut to max_reset, and an
// overloaded subscription carrying its window's reset cools for the
// overloaded cooldown.
func TestProviderResetCappedEndToEnd(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "a", replyError(429, "rate_limit_error", "later", "Retry-After", "Fri, 01 Jan 9999 00:00:00 GMT"))
	sub := newUpstream(t, "sub", replyError(529, "overloaded_error", "Overloaded",
		"anthropic-ratelimit-unified-status", "allowed",
		"anthropic-ratelimit-unified-reset", epochSeconds(clock.Now().Add(4*time.Hour))))
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), sub.providerBlock(), b.providerBlock(), "\t\tmax_reset 2d\n"))
	start := clock.Now()
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from b") {
		t.Fatalf("want b's answer, got %s", got)
	}
	if s := snapshot(t, "a"); !s.Until.Equal(start.Add(48 * time.Hour)) {
		t.Errorf("a cools for %v, want max_reset (48h)", s.Until.Sub(start))
	}
	if s := snapshot(t, "sub"); !s.Until.Equal(start.Add(30 * time.Second)) {
		t.Errorf("sub (529, unified allowed) cools for %v, want the overloaded cooldown (30s)", s.Until.Sub(start))
	}
	_, status := adminGet(t, p, "/llm/providers")
	if !strings.Contains(status, `"cooldown_left_seconds":172800`) {
		t.Errorf("status does not show a's 172800s cooldown:\n%s", status)
	}
}
