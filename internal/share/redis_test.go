package share

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// redisSharer is a running Sharer on r named instance, with its own
// breakers, on the real clock. probe_wait is long: on a loaded machine a
// lease call past it lets the instance probe without the lease, by design,
// which would make the lease tests flaky.
func redisSharer(t *testing.T, r *testredis.Server, instance string, names ...string) (*Sharer, *fakeBreakers) {
	t.Helper()
	bs := newFakeBreakers(names...)
	// a store timeout no loaded CI machine reaches: these tests are about
	// what the fleet shares, not about carrying on when Redis is slow
	// (which the sharer does by probing without a lease)
	s, err := New(Config{Redis: r.URL, Instance: instance, Interval: 100 * time.Millisecond, ProbeWait: 5 * time.Second,
		Timeout: 10 * time.Second}, bs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.Start(ctx)
	t.Cleanup(func() { cancel(); s.Stop() })
	return s, bs
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !ok(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting: " + what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A cooldown decided on one instance reaches another; a shorter one
// decided later does not shorten it, in Redis or on either instance; the
// key expires with the cooldown.
func TestRedisLaterEndWins(t *testing.T) {
	t.Parallel()
	r := testredis.Start(t)
	a, as := redisSharer(t, r, "a", "sub")
	b, bs := redisSharer(t, r, "b", "sub")
	now := time.Now()
	long := as.get("sub").Failure(now, breaker.Failure{Class: classify.Quota, Cooldown: 3 * time.Hour, MaxCooldown: 3 * time.Hour})
	a.Kick()
	waitFor(t, "b adopts a's cooldown", func() bool { return bs.get("sub").Snapshot(time.Now()).Until.Equal(long.Truncate(time.Millisecond)) })

	bs.get("sub").Failure(time.Now(), breaker.Failure{Class: classify.RateLimit, Cooldown: 30 * time.Second, MaxCooldown: time.Hour})
	b.Kick()
	time.Sleep(300 * time.Millisecond)
	if got := as.get("sub").Snapshot(time.Now()).Until; !got.Equal(long) {
		t.Fatalf("a's cooldown moved to %v", got)
	}
	c := r.Client()
	defer c.Close()
	var stored RedisDecision
	if err := json.Unmarshal([]byte(c.Get(t.Context(), "llm_failover:breaker:sub").Val()), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Instance != "a" || stored.Until != long.UnixMilli() {
		t.Fatalf("stored %+v, want a's 3h cooldown", stored)
	}
	if ttl := c.PTTL(t.Context(), "llm_failover:breaker:sub").Val(); ttl < 2*time.Hour || ttl > 3*time.Hour {
		t.Fatalf("the key expires in %v, want with the cooldown", ttl)
	}
}

// One instance of the fleet holds a half-open probe; the other skips the
// provider until the lease lapses or the result is published.
func TestRedisProbeLease(t *testing.T) {
	t.Parallel()
	r := testredis.Start(t)
	a, as := redisSharer(t, r, "a", "sub")
	b, bs := redisSharer(t, r, "b", "sub")
	f := breaker.Failure{Class: classify.Overloaded, Cooldown: time.Second, MaxCooldown: time.Minute}
	now := time.Now()
	at := as.get("sub").Failure(now, f)
	bs.get("sub").Failure(now, f)

	admA := a.ClaimProbe("sub", as.get("sub"), as.get("sub").Admit(at, ""))
	if !admA.OK || !admA.Probe {
		t.Fatalf("a did not get the probe: %+v", admA)
	}
	admB := b.ClaimProbe("sub", bs.get("sub"), bs.get("sub").Admit(at, ""))
	if admB.OK {
		t.Fatal("b probes too")
	}
	if left := time.Until(admB.RetryAt); left < 20*time.Second || left > DefaultProbeLease+time.Second {
		t.Fatalf("b waits %v, want about the lease (%v)", left, DefaultProbeLease)
	}
	// a's probe succeeds: the close reaches b, which admits again
	as.get("sub").Success(time.Now())
	a.Kick()
	waitFor(t, "b hears of the close", func() bool { return bs.get("sub").Admit(time.Now(), "").OK })
}

// Whatever a payload on the channel or in a key holds, applying it never
// panics, and a breaker only ever takes a state the payload names.
func FuzzApplyRedisPayload(f *testing.F) {
	ok, _ := json.Marshal(RedisDecision{Name: "sub", State: breaker.Open, Until: shareT0.Add(time.Hour).UnixMilli(),
		Decided: shareT0.UnixMicro(), Class: classify.Quota, Instance: "x", Token: "x/1"})
	for _, seed := range []string{string(ok), `{"name":"sub","state":"closed","decided_us":1}`, `{"name":"sub","state":"half_open"}`,
		`{"name":"sub","state":"open","until":253402300799000,"decided_us":253402300799000000}`, `[]`, `{`, `null`} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, payload string) {
		bs := newFakeBreakers("sub")
		s, err := New(Config{Redis: "redis://127.0.0.1:1/0", Instance: "me"}, bs)
		if err != nil {
			t.Fatal(err)
		}
		rb := s.backend.(*redisBackend)
		defer rb.client.Close()
		rb.applyJSON(shareT0, payload, false)
		switch st := bs.get("sub").Snapshot(shareT0).State; st {
		case breaker.Closed, breaker.Open, breaker.HalfOpen:
		default:
			t.Fatalf("state %q", st)
		}
	})
}
