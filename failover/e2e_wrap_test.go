package failover

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

func hostPort(u *fakeUpstream) string { return strings.TrimPrefix(u.URL, "http://") }

// wrapSite is llm_failover in wrap mode in front of a reverse_proxy with
// lb_policy llm_failover.
func wrapSite(ups ...*fakeUpstream) string {
	addrs := make([]string, len(ups))
	for i, u := range ups {
		addrs[i] = hostPort(u)
	}
	return "\tllm_failover\n\treverse_proxy " + strings.Join(addrs, " ") + " {\n\t\tlb_policy llm_failover\n\t}"
}

// Wrap mode: a 429 from the first upstream is replayed to the second; the
// first is skipped during its cooldown and probed once after it.
func TestWrapModeFailsOverAndCools(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "a", replyError(429, "rate_limit_error", "limited", "Retry-After", "60"))
	b := newUpstream(t, "b", replyMessage("from b"))
	c := newUpstream(t, "c", replyMessage("from c"))
	p := startProxy(t, wrapSite(a, b, c))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	if !strings.Contains(body, "from b") || res.Header.Get("X-LLM-Provider") != hostPort(b) {
		t.Fatalf("%s %v", body, res.Header)
	}
	if res.Header.Get("X-LLM-Attempts") != "2" {
		t.Fatalf("attempts %q", res.Header.Get("X-LLM-Attempts"))
	}
	if hashOf(b.lastBody()) != hashOf([]byte(simpleRequest)) {
		t.Fatal("the replayed body differs")
	}
	for range 3 {
		clock.Advance(10 * time.Second)
		if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from b") {
			t.Fatal(got)
		}
	}
	if a.Hits() != 1 {
		t.Fatalf("a contacted during its cooldown: %d hits", a.Hits())
	}
	if s := snapshot(t, hostPort(a)); s.State != breaker.Open || s.LastClass != classify.RateLimit {
		t.Fatalf("a: %+v", s)
	}
	// past the cooldown: probed once, and it answers now
	a.setHandler(replyMessage("from a"))
	clock.Advance(31 * time.Second)
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from a") {
		t.Fatalf("after the cooldown: %s", got)
	}
	if a.Hits() != 2 || c.Hits() != 0 {
		t.Fatalf("hits a=%d c=%d", a.Hits(), c.Hits())
	}
	// status shows the upstreams like providers, in order
	st := providerStatuses(t, p)
	if st["_order"]["names"] != strings.Join([]string{hostPort(a), hostPort(b)}, ",") &&
		st["_order"]["names"] != strings.Join([]string{hostPort(a), hostPort(b), hostPort(c)}, ",") {
		t.Fatalf("status order %v", st["_order"])
	}
	// the wrapped reverse_proxy sent the client's credential on: the status says so
	if got := st[hostPort(a)]; got["credential"] != "client's" || !strings.Contains(got["credential_reason"].(string), "sends the client's credential on") {
		t.Fatalf("wrap mode credential: %v %v", got["credential"], got["credential_reason"])
	}
}

// A streaming early error in wrap mode fails over too.
func TestWrapModeStreamEarlyError(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		writeStream(w, []string{streamEvents("m")[0],
			sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}})})
	})
	b := newUpstream(t, "b", replyEvents(streamEvents("m", "wrapped ", "b")))
	p := startProxy(t, wrapSite(a, b))
	msg, _, err := streamRequest(t, sdkClient(p))
	if err != nil || textOf(&msg) != "wrapped b" {
		t.Fatalf("%q %v", textOf(&msg), err)
	}
	if s := snapshot(t, hostPort(a)); s.LastClass != classify.Overloaded {
		t.Fatalf("a: %s", s.LastClass)
	}
}

// Every upstream cooling: the immediate answer with Retry-After, as in
// provider mode.
func TestWrapModeAllCooling(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "a", replyError(529, "overloaded_error", "busy"))
	b := newUpstream(t, "b", replyError(429, "rate_limit_error", "limited", "Retry-After", "20"))
	p := startProxy(t, wrapSite(a, b))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if readAll(t, res); res.StatusCode != 429 {
		t.Fatalf("first: %d, want b's real 429", res.StatusCode)
	}
	clock.Advance(5 * time.Second)
	res = post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	if res.StatusCode != 503 || res.Header.Get("Retry-After") != "15" || !strings.Contains(body, hostPort(a)+": overloaded") {
		t.Fatalf("%d %q %s", res.StatusCode, res.Header.Get("Retry-After"), body)
	}
	if a.Hits() != 1 || b.Hits() != 1 {
		t.Fatalf("hits %d %d", a.Hits(), b.Hits())
	}
}

// Wrap mode beside an ordinary lb_policy in the same config.
func TestWrapModeBesidePlainReverseProxy(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyError(429, "rate_limit_error", "limited"))
	b := newUpstream(t, "b", replyMessage("from b"))
	plain := newUpstream(t, "plain", replyError(429, "rate_limit_error", "plain limited"))
	site := fmt.Sprintf(`	handle /plain/* {
		reverse_proxy %s %s {
			lb_policy first
		}
	}
	handle {
%s
	}`, hostPort(plain), hostPort(b), strings.ReplaceAll(wrapSite(a, b), "\n\t", "\n\t\t"))
	p := startProxy(t, site)
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from b") {
		t.Fatalf("wrapped: %s", got)
	}
	res := post(t, p.URL+"/plain/v1/messages", simpleRequest)
	if body := readAll(t, res); res.StatusCode != 429 || !strings.Contains(body, "plain limited") {
		t.Fatalf("plain reverse_proxy: %d %s", res.StatusCode, body)
	}
	if res.Header.Get("X-LLM-Provider") != "" {
		t.Fatal("the plain reverse_proxy went through llm_failover")
	}
}

func countAnswers(t *testing.T, p *proxy, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		readAll(t, res)
		got[res.Header.Get("X-LLM-Provider")]++
	}
	return got
}

// policy spread rotates across providers that admit requests; a cooling
// one's share goes to the others; tiers keep requests in tier one until
// all of it is cooling.
func TestSpreadPolicyAndTiers(t *testing.T) {
	clock := useFakeClock(t)
	s1 := newUpstream(t, "s1", replyMessage("s1"))
	s2 := newUpstream(t, "s2", replyMessage("s2"))
	s3 := newUpstream(t, "s3", replyMessage("s3"))
	key := newUpstream(t, "key", replyMessage("key"))
	p := startProxy(t, failoverSite(s1.providerBlock("tier 1"), s2.providerBlock("tier 1"), s3.providerBlock("tier 1"),
		key.providerBlock("tier 2"), "\t\tpolicy spread\n"))

	got := countAnswers(t, p, 300)
	for _, name := range []string{"s1", "s2", "s3"} {
		if got[name] < 95 || got[name] > 105 {
			t.Fatalf("three healthy: %v, want 100 +- 5 each", got)
		}
	}
	if got["key"] != 0 {
		t.Fatalf("tier 2 used while tier 1 is healthy: %v", got)
	}

	s1.setHandler(replyError(429, "rate_limit_error", "limited", "Retry-After", "3600"))
	got = countAnswers(t, p, 301) // the first meets s1's 429 and fails over
	if got["s1"] != 0 || got["s2"] < 145 || got["s3"] < 145 || got["key"] != 0 {
		t.Fatalf("s1 cooling: %v, want an even split between s2 and s3", got)
	}

	s2.setHandler(replyError(529, "overloaded_error", "busy"))
	s3.setHandler(replyError(529, "overloaded_error", "busy"))
	clock.Advance(time.Second)
	got = countAnswers(t, p, 10)
	if got["key"] != 10 {
		t.Fatalf("tier 1 all cooling: %v, want tier 2", got)
	}
}
