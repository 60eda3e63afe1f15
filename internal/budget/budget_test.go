package budget

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParsePrice(t *testing.T) {
	t.Parallel()
	p, err := ParsePrice(strings.Fields("claude-sonnet-* input 3 output 15 cache_read 0.30 cache_write 3.75"))
	if err != nil {
		t.Fatal(err)
	}
	if p != (Price{Model: "claude-sonnet-*", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75}) {
		t.Errorf("got %+v", p)
	}
	p, err = ParsePrice(strings.Fields("claude-opus-* input 15 output 75"))
	if err != nil {
		t.Fatal(err)
	}
	if p.CacheRead != 1.5 || p.CacheWrite != 18.75 {
		t.Errorf("cache prices not taken from input: %+v", p)
	}
	for _, bad := range []string{
		"", "x", "x input 3", "x input 3 output", "x input -1 output 2", "x input 3 output 15 colour 2",
		"x input 3 input 4", "x input NaN output 1", "x input 3 cache_read 1", "x input 1e9 output 1",
	} {
		if _, err := ParsePrice(strings.Fields(bad)); err == nil {
			t.Errorf("ParsePrice(%q) accepted", bad)
		}
	}
}

func TestCost(t *testing.T) {
	t.Parallel()
	ps := Prices{
		{Model: "claude-sonnet-*", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75},
		{Model: "*", Input: 100, Output: 100},
	}
	u := Usage{Input: 1000, Output: 2000, CacheRead: 10000, CacheWrite: 100}
	// 1000×3 + 2000×15 + 10000×0.3 + 100×3.75 micro-dollars
	if got := ps.Cost("claude-sonnet-4-5", u); got != 3000+30000+3000+375 {
		t.Errorf("sonnet cost %d", got)
	}
	if got := ps.Cost("glm-4.6", Usage{Input: 1}); got != 100 {
		t.Errorf("first matching glob should win in order: %d", got)
	}
	if got := (Prices{}).Cost("claude", u); got != 0 {
		t.Errorf("no prices should cost nothing: %d", got)
	}
	if got := ps[:1].Cost("claude-opus-4", u); got != 0 {
		t.Errorf("no matching glob should cost nothing: %d", got)
	}
	if got := ps.Cost("claude-sonnet-4", Usage{Input: -5}); got != 0 {
		t.Errorf("negative counts should cost nothing: %d", got)
	}
}

func TestParseLimit(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in   string
		want Limit
		text string
	}{
		{"tokens 2000000 per 5h", Limit{Tokens, 2_000_000, 5 * time.Hour}, "2,000,000 tokens per 5h"},
		{"requests 600 per 1h", Limit{Requests, 600, time.Hour}, "600 requests per 1h"},
		{"spend 20 per 1d", Limit{Spend, 20_000_000, 24 * time.Hour}, "$20 per 1d"},
		{"spend 2.5 per 30d", Limit{Spend, 2_500_000, 30 * 24 * time.Hour}, "$2.50 per 30d"},
		{"tokens 1_000 per 90m", Limit{Tokens, 1000, 90 * time.Minute}, "1,000 tokens per 1h30m"},
		{"requests 1 per 1m", Limit{Requests, 1, time.Minute}, "1 requests per 1m"},
		{"requests 1 per 31d", Limit{Requests, 1, 31 * 24 * time.Hour}, "1 requests per 31d"},
	}
	for _, c := range cases {
		got, err := ParseLimit(strings.Fields(c.in))
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("%q: got %+v, want %+v", c.in, got, c.want)
		}
		if got.String() != c.text {
			t.Errorf("%q: says %q, want %q", c.in, got.String(), c.text)
		}
		if err := got.Validate(); err != nil {
			t.Errorf("%q: %v", c.in, err)
		}
	}
	for _, bad := range []string{
		"", "tokens 5 per", "tokens 5 each 5h", "tokens 0 per 1h", "tokens -3 per 1h", "tokens 1.5 per 1h",
		"spend 0 per 1h", "spend x per 1h", "watts 5 per 1h", "tokens 5 per 59s", "tokens 5 per 32d",
		"tokens 5 per 0d", "tokens 5 per 745h", "tokens 5 per forever", "tokens 99999999999999999999 per 1h",
	} {
		if _, err := ParseLimit(strings.Fields(bad)); err == nil {
			t.Errorf("ParseLimit(%q) accepted", bad)
		}
	}
}

func TestFormat(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_000_000, 0)
	for d, want := range map[time.Duration]string{
		45 * time.Second: "45s", 12 * time.Minute: "12m", 11*time.Minute + time.Second: "12m",
		2*time.Hour + 5*time.Minute: "2h5m", 3*24*time.Hour + 3*time.Hour + time.Minute: "3d4h", 0: "0s",
	} {
		if got := FormatWait(now, now.Add(d)); got != want {
			t.Errorf("FormatWait(%v) = %q, want %q", d, got, want)
		}
	}
	for micro, want := range map[int64]string{20_000_000: "$20", 420_000: "$0.42", 1_234_500_000: "$1,234.50", 4200: "$0.0042", 0: "$0"} {
		if got := Dollars(micro); got != want {
			t.Errorf("Dollars(%d) = %q, want %q", micro, got, want)
		}
	}
}

// A rolling window never lets through twice the limit across a boundary,
// as a fixed window would: what was counted just before the boundary
// still counts just after it.
func TestCounterRolls(t *testing.T) {
	t.Parallel()
	c := NewCounter("t", time.Hour)  // buckets of 1 minute
	start := time.Unix(3600*1000, 0) // on a bucket boundary
	c.Add(start.Add(59*time.Minute+30*time.Second), 100)
	at := start.Add(60*time.Minute + 30*time.Second) // a fixed hour window would have reset
	if got := c.Used(at); got != 100 {
		t.Fatalf("used just after the hour: %d, want 100", got)
	}
	used, freeAt := c.Check(at, 100)
	if used != 100 || !freeAt.Equal(start.Add(119*time.Minute)) {
		t.Errorf("check: used %d, frees at +%v; want 100 at +119m", used, freeAt.Sub(start))
	}
	if got := c.Used(start.Add(119 * time.Minute)); got != 0 {
		t.Errorf("used once the bucket left the window: %d", got)
	}
	// the ring reuses slots: an old bucket is never counted again
	c.Add(start.Add(200*time.Minute), 7)
	if got := c.Used(start.Add(200 * time.Minute)); got != 7 {
		t.Errorf("used after the ring wrapped: %d, want 7", got)
	}
}

// When enough frees up depends on how much must leave the window: the
// oldest buckets first.
func TestCounterFreeAt(t *testing.T) {
	t.Parallel()
	c := NewCounter("t", time.Hour)
	start := time.Unix(3600*1000, 0)
	c.Add(start, 50)                     // bucket 0, leaves at +60m
	c.Add(start.Add(10*time.Minute), 30) // leaves at +70m
	c.Add(start.Add(20*time.Minute), 30) // leaves at +80m
	now := start.Add(30 * time.Minute)
	if _, freeAt := c.Check(now, 111); !freeAt.IsZero() {
		t.Errorf("under the limit, yet a free time: %v", freeAt)
	}
	if _, freeAt := c.Check(now, 100); !freeAt.Equal(start.Add(60 * time.Minute)) {
		t.Errorf("limit 100: frees at +%v, want +60m", freeAt.Sub(start))
	}
	if _, freeAt := c.Check(now, 20); !freeAt.Equal(start.Add(80 * time.Minute)) {
		t.Errorf("limit 20: frees at +%v, want +80m", freeAt.Sub(start))
	}
}

func TestBudgetCheck(t *testing.T) {
	t.Parallel()
	now := time.Unix(3600*1000, 0)
	tokens, _ := ParseLimit(strings.Fields("tokens 1000 per 5h"))
	reqs, _ := ParseLimit(strings.Fields("requests 2 per 1h"))
	spend, _ := ParseLimit(strings.Fields("spend 1 per 1d"))
	b := &Budget{Name: "alice", Meters: []Meter{
		{tokens, NewCounter("a", tokens.Window)}, {reqs, NewCounter("b", reqs.Window)}, {spend, NewCounter("c", spend.Window)},
	}}
	if _, over := b.Check(now); over {
		t.Fatal("over before anything was counted")
	}
	b.Admit(now)
	b.Record(now, 999, 999_999)
	if _, over := b.Check(now); over {
		t.Fatal("over while under every limit")
	}
	b.Admit(now)
	r, over := b.Check(now)
	if !over || r.Meter.Kind != Requests {
		t.Fatalf("two requests in 1h: over %v by %v", over, r.Meter.Kind)
	}
	if got := r.Message("alice", now); got != "alice: 2 requests per 1h; more free in 1h" {
		t.Errorf("message %q", got)
	}
	b.Record(now, 1, 1)
	r, _ = b.Check(now)
	if r.Meter.Kind != Spend {
		t.Errorf("over three limits, the refusal should name the one that frees up last: %v", r.Meter.Kind)
	}
	st := b.Statuses(now)
	if len(st) != 3 || st[0].Used != 1000 || st[0].Ratio != 1 || st[0].FreesUpIn != "5h" || st[2].Text != "$1 of $1 per 1d" || st[2].Used != 1 || !st[0].Reached {
		t.Errorf("statuses %+v", st)
	}
}

// memStore is a Store in memory that can be made to fail.
type memStore struct {
	mu   sync.Mutex
	m    map[string]int64
	fail bool
}

func (s *memStore) Add(_ context.Context, ds []Delta) ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, errors.New("down")
	}
	out := make([]int64, len(ds))
	for i, d := range ds {
		s.m[d.Key] += d.N
		out[i] = s.m[d.Key]
	}
	return out, nil
}

func (s *memStore) Get(_ context.Context, keys []string) ([]int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail {
		return nil, errors.New("down")
	}
	out := make([]int64, len(keys))
	for i, k := range keys {
		out[i] = s.m[k]
	}
	return out, nil
}

// Two instances sharing a store each see the fleet's count after a round;
// while the store fails each counts locally, and nothing is lost when it
// answers again.
func TestSyncerFleet(t *testing.T) {
	t.Parallel()
	store := &memStore{m: map[string]int64{}}
	now := time.Unix(3600*1000, 0)
	clock := func() time.Time { return now }
	a, b := NewCounter("client:alice:tokens:1h", time.Hour), NewCounter("client:alice:tokens:1h", time.Hour)
	var downs, ups int
	mk := func(c *Counter) *Syncer {
		return &Syncer{Store: store, Prefix: "p:", Timeout: time.Second, Now: clock,
			Counters: func() []*Counter { return []*Counter{c} },
			Down:     func(error) { downs++ }, Up: func() { ups++ }}
	}
	sa, sb := mk(a), mk(b)
	a.Add(now, 10)
	b.Add(now, 5)
	sa.Round(context.Background())
	sb.Round(context.Background())
	sa.Round(context.Background())
	if a.Used(now) != 15 || b.Used(now) != 15 {
		t.Fatalf("after sync: a %d, b %d, want 15 each", a.Used(now), b.Used(now))
	}
	sa.Round(context.Background())
	if a.Used(now) != 15 {
		t.Errorf("a second round counted twice: %d", a.Used(now))
	}
	store.fail = true
	a.Add(now, 3)
	sa.Round(context.Background())
	sa.Round(context.Background())
	if a.Used(now) != 18 || sa.Healthy() || downs != 1 {
		t.Errorf("store down: used %d (want 18 counted locally), healthy %v, downs %d (want 1)", a.Used(now), sa.Healthy(), downs)
	}
	store.fail = false
	sa.Round(context.Background())
	sb.Round(context.Background())
	if b.Used(now) != 18 || !sa.Healthy() || ups != 1 {
		t.Errorf("store back: b sees %d (want 18), healthy %v, ups %d", b.Used(now), sa.Healthy(), ups)
	}
	for k := range store.m {
		if !strings.HasPrefix(k, "p:client:alice:tokens:1h:") {
			t.Errorf("unexpected key %q", k)
		}
	}
}

func FuzzParseLimit(f *testing.F) {
	for _, s := range []string{"tokens 2000000 per 5h", "spend 2.50 per 30d", "requests 1 per 1m", "spend 1e300 per 1h", "tokens 5 per 99999999999d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLimit(strings.Fields(s))
		if err != nil {
			return
		}
		if err := l.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid limit %+v: %v", s, l, err)
		}
		_ = l.String()
	})
}

func FuzzParsePrice(f *testing.F) {
	for _, s := range []string{"claude-* input 3 output 15", "x input 1 output 2 cache_read 0.1 cache_write 9", "x input Inf output 1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePrice(strings.Fields(s))
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("%q parsed to an invalid price %+v: %v", s, p, err)
		}
		if c := (Prices{p}).Cost(p.Model, Usage{Input: 1 << 40, Output: 1 << 40}); c < 0 {
			t.Fatalf("negative cost %d", c)
		}
	})
}
