package failover

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// Past the cap, the least recently used client's breaker goes first.
func TestClientBreakersCapped(t *testing.T) {
	var c clientBreakers
	now := brkT0
	first := c.get("client-0", now)
	for i := 1; i < maxClientBreakers; i++ {
		c.get(fmt.Sprint("client-", i), now)
	}
	// client-0 used again: client-1 is now the least recently used
	if c.get("client-0", now) != first {
		t.Fatal("client-0 got a new breaker while kept")
	}
	c.get("one-more", now)
	if n, _, _, _ := c.counts(); n != maxClientBreakers {
		t.Fatalf("%d breakers kept, want the cap %d", n, maxClientBreakers)
	}
	if _, ok := c.byKey["client-1"]; ok {
		t.Fatal("client-1, the least recently used, was kept past the cap")
	}
	if _, ok := c.byKey["client-0"]; !ok {
		t.Fatal("client-0, used recently, was dropped")
	}
}

// Idle breakers that cool nothing are dropped; one still cooling, or in
// use, is kept; the counters of dropped ones are kept.
func TestClientBreakersSwept(t *testing.T) {
	var c clientBreakers
	now := brkT0
	closed := c.get("closed", now)
	closed.Admit(now, "")
	closed.Success()
	cooling := c.get("cooling", now)
	cooling.Admit(now, "")
	cooling.Failure(now, Failure{Class: ClassQuota, Cooldown: clientIdle + 5*time.Minute, MaxCooldown: time.Hour, FailedOver: true})
	ended := c.get("ended", now)
	ended.Admit(now, "")
	ended.Failure(now, Failure{Class: ClassRateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour, FailedOver: true})

	c.sweep(now.Add(clientIdle-time.Second), true)
	if n, _, _, _ := c.counts(); n != 3 {
		t.Fatalf("%d kept before they are idle, want 3", n)
	}
	later := now.Add(clientIdle)
	c.get("busy", later)
	c.sweep(later, true)
	n, req, succ, fo := c.counts()
	if n != 2 || c.byKey["cooling"] == nil || c.byKey["busy"] == nil {
		t.Fatalf("kept %d: %v; want cooling and busy", n, keysOf(&c))
	}
	if req != 2 || succ != 1 || fo != 1 {
		t.Fatalf("retired counters %d/%d/%d, want 2 requests, 1 success, 1 failover", req, succ, fo)
	}
	// the cooling one goes once its cooldown has passed
	c.sweep(now.Add(clientIdle+5*time.Minute), true)
	if n, _, _, _ := c.counts(); n != 1 {
		t.Fatalf("kept %v after the cooldown passed, want busy only", keysOf(&c))
	}
}

func keysOf(c *clientBreakers) []string {
	var out []string
	c.each(func(k string, _ *Breaker) { out = append(out, k) })
	return out
}

// Through Caddy: distinct client tokens on a passthrough provider are
// counted, cooled per client, swept once idle with their cooldowns over,
// and the provider's totals stay.
func TestPassthroughClientBreakersSwept(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "pc_sub", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer limited-") {
			replyError(429, "rate_limit_error", "limited")(w, r, body)
			return
		}
		replyMessage("from pc_sub")(w, r, body)
	})
	b := newUpstream(t, "pc_b", replyMessage("from pc_b"))
	t.Setenv("LLMF_PC_KEY", "sk-b")
	p := startProxy(t, failoverSite(a.providerBlock("credential passthrough"), b.providerBlock("credential env LLMF_PC_KEY")))
	const n = 40
	for i := range n {
		tok := fmt.Sprint("Bearer fresh-", i)
		if i%2 == 0 {
			tok = fmt.Sprint("Bearer limited-", i)
		}
		readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", tok))
	}
	st := passthroughStatus(t, p, "pc_sub")
	if st.Clients != n || st.ClientsCooling != n/2 || st.Requests != n || st.Failovers != n/2 {
		t.Fatalf("status %+v; want %d clients, %d cooling, %d requests, %d failovers", st, n, n/2, n, n/2)
	}
	clock.Advance(clientIdle)
	st = passthroughStatus(t, p, "pc_sub")
	if st.Clients != 0 || st.ClientsCooling != 0 {
		t.Fatalf("status %+v; want every idle client dropped once its cooldown passed", st)
	}
	if st.Requests != n || st.Failovers != n/2 || st.Successes != n/2 {
		t.Fatalf("status %+v: the totals of dropped clients were lost", st)
	}
}

func passthroughStatus(t *testing.T, p *proxy, name string) ProviderStatus {
	t.Helper()
	_, body := adminGet(t, p, "/llm/providers")
	var sr StatusResponse
	if err := json.Unmarshal([]byte(body), &sr); err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	for _, s := range sr.Providers {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no provider %s in %s", name, body)
	return ProviderStatus{}
}

// 100k distinct client tokens, a quarter of them cooled: the kept breakers
// stay within the cap, and none is left once the cooldowns have passed.
// With LLMF_MEASURE=1 it logs the heap before, at the peak and after.
func TestPassthroughManyClientsBounded(t *testing.T) {
	clock := useFakeClock(t)
	p := &Provider{Name: "many_clients", passthrough: true, state: new(providerState)}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	start := heap()
	const n = 100_000
	for i := range n {
		key := fmt.Sprintf("%016x", i)
		now := timeNow()
		adm := p.admit(t.Context(), now, key)
		b := p.breaker(key)
		if !adm.OK {
			t.Fatalf("client %d refused: %+v", i, adm)
		}
		if i%4 == 0 {
			b.Failure(now, Failure{Class: ClassRateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour, FailedOver: true})
		} else {
			b.Success()
		}
	}
	peak := heap()
	if kept, _, _, _ := p.state.clients.counts(); kept > maxClientBreakers {
		t.Fatalf("%d breakers kept, want at most %d", kept, maxClientBreakers)
	}
	clock.Advance(clientIdle)
	p.state.eachClient(func(string, *Breaker) {})
	after := heap()
	if kept, req, _, _ := p.state.clients.counts(); kept != 0 || req != n {
		t.Fatalf("%d breakers kept after the cooldowns passed (%d requests counted), want 0 (%d)", kept, req, n)
	}
	runtime.KeepAlive(p)
	if os.Getenv("LLMF_MEASURE") != "" {
		t.Logf("heap: start %.1f MB, after %d clients %.1f MB, once idle %.1f MB",
			float64(start)/1e6, n, float64(peak)/1e6, float64(after)/1e6)
	}
}
