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

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// setT0 is the fixed clock of the breaker set tests.
var setT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// sweep sweeps the set's idle per-client breakers now (force: whenever
// the last sweep was).
func (s *breakerSet) sweep(now time.Time, force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sweepLocked(now, force)
}

// Past the cap, the least recently used client's breaker goes first, and
// its counters stay in the provider's totals.
func TestBreakerSetCapped(t *testing.T) {
	var s breakerSet
	now := setT0
	first := s.client("client-0", now)
	first.Admit(now, "")
	s.client("client-1", now).Admit(now, "")
	for i := 2; i < maxClientBreakers; i++ {
		s.client(fmt.Sprint("client-", i), now)
	}
	// client-0 used again: client-1 is now the least recently used
	if s.client("client-0", now) != first {
		t.Fatal("client-0 got a new breaker while kept")
	}
	s.client("one-more", now)
	if n, retired := s.clientsKept(); n != maxClientBreakers || retired.requests != 1 {
		t.Fatalf("%d breakers kept (%d requests retired), want the cap %d (1)", n, retired.requests, maxClientBreakers)
	}
	if s.knownClient("client-1") != nil {
		t.Fatal("client-1, the least recently used, was kept past the cap")
	}
	if s.knownClient("client-0") != first {
		t.Fatal("client-0, used recently, was dropped")
	}
	if sum := s.summary(now, true); sum.Clients != maxClientBreakers || sum.Requests != 2 {
		t.Fatalf("summary %+v: want %d clients and both requests counted", sum, maxClientBreakers)
	}
}

// Idle breakers that cool nothing are dropped; one still cooling, or in
// use, is kept; the counters of dropped ones are kept.
func TestBreakerSetSwept(t *testing.T) {
	var s breakerSet
	now := setT0
	closed := s.client("closed", now)
	closed.Admit(now, "")
	closed.Success(now)
	cooling := s.client("cooling", now)
	cooling.Admit(now, "")
	cooling.Failure(now, breaker.Failure{Class: classify.Quota, Cooldown: clientIdle + 5*time.Minute, MaxCooldown: time.Hour, FailedOver: true})
	ended := s.client("ended", now)
	ended.Admit(now, "")
	ended.Failure(now, breaker.Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour, FailedOver: true})

	s.sweep(now.Add(clientIdle-time.Second), true)
	if n, _ := s.clientsKept(); n != 3 {
		t.Fatalf("%d kept before they are idle, want 3", n)
	}
	later := now.Add(clientIdle)
	s.client("busy", later)
	s.sweep(later, true)
	n, retired := s.clientsKept()
	if n != 2 || s.knownClient("cooling") == nil || s.knownClient("busy") == nil {
		t.Fatalf("kept %d: %v; want cooling and busy", n, keysOf(&s, later))
	}
	if retired != (breakerCounts{requests: 2, successes: 1, failovers: 1}) {
		t.Fatalf("retired counters %+v, want 2 requests, 1 success, 1 failover", retired)
	}
	// the walk sweeps too: the cooling one goes once its cooldown has passed
	if keys := keysOf(&s, now.Add(clientIdle+5*time.Minute)); len(keys) != 1 || keys[0] != "busy" {
		t.Fatalf("kept %v after the cooldown passed, want busy only", keys)
	}
}

func keysOf(s *breakerSet, now time.Time) []string {
	var out []string
	s.eachClient(now, func(k string, _ *providerBreaker) { out = append(out, k) })
	return out
}

// The summary of a passthrough provider sums its clients (dropped ones
// too), counts those cooling, and reports the most recent failure; without
// per-client breakers it is the shared breaker's own.
func TestBreakerSetSummary(t *testing.T) {
	var s breakerSet
	now := setT0
	s.whole.Admit(now, "")
	s.whole.Failure(now, breaker.Failure{Class: classify.Overloaded, Cooldown: time.Second, MaxCooldown: time.Hour, Error: "shared"})
	a := s.client("a", now)
	a.Admit(now, "")
	a.Failure(now.Add(time.Second), breaker.Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour, FailedOver: true, Error: "a quota"})
	b := s.client("b", now)
	b.Admit(now, "")
	b.Success(now)
	s.client("gone", now).Admit(now, "")
	s.sweep(now.Add(clientIdle), true) // drops gone and b; a still cools

	at := now.Add(clientIdle)
	sum := s.summary(at, true)
	if sum.Clients != 1 || sum.ClientsCooling != 1 {
		t.Fatalf("summary %+v: want 1 client kept, 1 cooling", sum)
	}
	if sum.Requests != 4 || sum.Successes != 1 || sum.Failovers != 1 {
		t.Fatalf("summary %+v: want 4 requests, 1 success, 1 failover", sum)
	}
	if sum.LastClass != classify.Quota || sum.LastError != "a quota" {
		t.Fatalf("summary %+v: want the most recent failure, a's quota", sum)
	}
	// the shared breaker's cooldown has ended: it reads half-open
	if sum.State != breaker.HalfOpen {
		t.Fatalf("state %s, want the shared breaker's half_open", sum.State)
	}
	shared := s.summary(at, false)
	if shared.Clients != 0 || shared.Requests != 1 || shared.LastError != "shared" {
		t.Fatalf("summary without clients %+v: want the shared breaker's alone", shared)
	}
}

// A client meets the shared breaker when it is open (it drains everyone),
// else its own; peek answers the same way without counting.
func TestBreakerSetSnapshotForAndPeek(t *testing.T) {
	var s breakerSet
	now := setT0
	own := s.client("a", now)
	own.Admit(now, "")
	until := own.Failure(now, breaker.Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour})
	if snap := s.snapshotFor(now, "a", true); snap.State != breaker.Open || !snap.Until.Equal(until) {
		t.Fatalf("client a sees %+v, want its own open breaker", snap)
	}
	if snap := s.snapshotFor(now, "b", true); snap.State != breaker.Closed {
		t.Fatalf("client b sees %+v, want its own closed breaker", snap)
	}
	if snap := s.snapshotFor(now, "a", false); snap.State != breaker.Closed {
		t.Fatalf("without per-client breakers a sees %+v, want the shared closed one", snap)
	}
	if adm := s.peek(now, "a", true); adm.OK || !adm.RetryAt.Equal(until) {
		t.Fatalf("peek for a = %+v, want refused until %v", adm, until)
	}
	if adm := s.peek(now, "b", true); !adm.OK {
		t.Fatalf("peek for b = %+v, want admitted", adm)
	}

	s.whole.CoolFor(now, time.Hour, classify.Manual)
	if snap := s.snapshotFor(now, "b", true); snap.State != breaker.Open || snap.LastClass != classify.Manual {
		t.Fatalf("client b sees %+v, want the shared breaker drained by hand", snap)
	}
	if adm := s.peek(now, "b", true); adm.OK || adm.Class != classify.Manual {
		t.Fatalf("peek for b = %+v, want refused by the drained shared breaker", adm)
	}
	if n := s.summary(now, true).Requests; n != 1 {
		t.Fatalf("%d requests counted, want 1: snapshots and peeks count nothing", n)
	}
}

// Reset and cool-all reach the shared breaker and every client's.
func TestBreakerSetResetAndCoolAll(t *testing.T) {
	var s breakerSet
	now := setT0
	for _, k := range []string{"a", "b"} {
		b := s.client(k, now)
		b.Admit(now, "")
		b.Failure(now, breaker.Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour})
	}
	s.whole.CoolFor(now, time.Hour, classify.Manual)
	s.resetAll(now)
	if st := s.whole.Snapshot(now).State; st != breaker.Closed {
		t.Fatalf("shared breaker %s after reset, want closed", st)
	}
	if sum := s.summary(now, true); sum.ClientsCooling != 0 || sum.Clients != 2 {
		t.Fatalf("after reset %+v: want 2 clients, none cooling", sum)
	}

	s.coolAll(now, 10*time.Minute)
	want := now.Add(10 * time.Minute)
	for _, b := range []*providerBreaker{s.shared(), s.knownClient("a"), s.knownClient("b")} {
		if snap := b.Snapshot(now); snap.State != breaker.Open || snap.LastClass != classify.Manual || !snap.Until.Equal(want) {
			t.Fatalf("after cool-all %+v, want open by hand until %v", snap, want)
		}
	}
}

// capacity.Report reads make no per-client breaker; the latest report is the most
// recently learned among the shared and the clients' ones.
func TestBreakerSetCapacity(t *testing.T) {
	var s breakerSet
	now := setT0
	old := &capacity.Report{Learned: now, Status: "shared"}
	s.whole.reported.Store(old)
	if c := s.capacityFor("a", true); c != nil {
		t.Fatalf("capacity for unknown client a = %+v, want none", c)
	}
	if n, _ := s.clientsKept(); n != 0 {
		t.Fatalf("a capacity read made %d breakers", n)
	}
	if c := s.capacityFor("a", false); c != old {
		t.Fatalf("capacity without per-client breakers = %+v, want the shared one", c)
	}
	newer := &capacity.Report{Learned: now.Add(time.Second), Status: "a"}
	s.client("a", now).reported.Store(newer)
	s.client("b", now).reported.Store(&capacity.Report{Learned: now.Add(-time.Second), Status: "b"})
	s.client("c", now) // reports nothing
	if c := s.capacityFor("a", true); c != newer {
		t.Fatalf("capacity for a = %+v, want a's own", c)
	}
	if c := s.latestCapacity(now, true); c != newer {
		t.Fatalf("latest capacity = %+v, want a's, the most recent", c)
	}
	if c := s.latestCapacity(now, false); c != old {
		t.Fatalf("latest capacity without per-client breakers = %+v, want the shared one", c)
	}
	var seen []string
	s.eachCapacity(now, true, func(c *capacity.Report) { seen = append(seen, c.Status) })
	if strings.Join(seen, ",") != "shared,b,a" {
		t.Fatalf("eachCapacity walked %v, want shared then each client reporting, most recent use first", seen)
	}
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
		b := p.breakerFor(key)
		if !adm.OK {
			t.Fatalf("client %d refused: %+v", i, adm)
		}
		if i%4 == 0 {
			b.Failure(now, breaker.Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour, FailedOver: true})
		} else {
			b.Success(now)
		}
	}
	peak := heap()
	if kept, _ := p.state.breakers.clientsKept(); kept > maxClientBreakers {
		t.Fatalf("%d breakers kept, want at most %d", kept, maxClientBreakers)
	}
	clock.Advance(clientIdle)
	p.state.breakers.eachClient(timeNow(), func(string, *providerBreaker) {})
	after := heap()
	if kept, retired := p.state.breakers.clientsKept(); kept != 0 || retired.requests != n {
		t.Fatalf("%d breakers kept after the cooldowns passed (%d requests counted), want 0 (%d)", kept, retired.requests, n)
	}
	runtime.KeepAlive(p)
	if os.Getenv("LLMF_MEASURE") != "" {
		t.Logf("heap: start %.1f MB, after %d clients %.1f MB, once idle %.1f MB",
			float64(start)/1e6, n, float64(peak)/1e6, float64(after)/1e6)
	}
}

// Past the cap, a cooling breaker is not what goes: 12,000 new clients
// (closed, or cooling for a shorter auth cooldown) do not push out a
// victim's 3h quota cooldown.
func TestBreakerSetCapKeepsCooling(t *testing.T) {
	var s breakerSet
	now := setT0
	victim := s.client("victim", now)
	victim.Failure(now, breaker.Failure{Class: classify.Quota, Cooldown: 3 * time.Hour})
	for i := range 12000 {
		b := s.client(fmt.Sprint("random-", i), now)
		if i%2 == 0 {
			b.Failure(now, breaker.Failure{Class: classify.Auth, Cooldown: time.Hour})
		}
	}
	if s.knownClient("victim") != victim {
		t.Fatal("the victim's cooling breaker was evicted by new clients")
	}
	if snap := victim.Snapshot(now.Add(time.Hour)); snap.State != breaker.Open {
		t.Fatalf("victim: %+v", snap)
	}
	if n, _ := s.clientsKept(); n != maxClientBreakers {
		t.Fatalf("%d breakers kept, want the cap %d", n, maxClientBreakers)
	}
}
