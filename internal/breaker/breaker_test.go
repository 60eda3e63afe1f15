package breaker

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

var brkT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func brkMustAdmit(t *testing.T, b *Breaker, now time.Time, probe bool) {
	t.Helper()
	a := b.Admit(now, "")
	if !a.OK || a.Probe != probe {
		t.Fatalf("Admit at %v = %+v, want OK with Probe=%v", now.Sub(brkT0), a, probe)
	}
}

func brkMustRefuse(t *testing.T, b *Breaker, now time.Time, retryAt time.Time, class classify.Class) {
	t.Helper()
	a := b.Admit(now, "")
	if a.OK || a.Probe {
		t.Fatalf("Admit at %v = %+v, want refused", now.Sub(brkT0), a)
	}
	if !a.RetryAt.Equal(retryAt) {
		t.Fatalf("Admit at %v: RetryAt = %v, want %v", now.Sub(brkT0), a.RetryAt.Sub(brkT0), retryAt.Sub(brkT0))
	}
	if a.Class != class {
		t.Fatalf("Admit at %v: classify.Class = %q, want %q", now.Sub(brkT0), a.Class, class)
	}
}

func TestBreakerClosedAdmits(t *testing.T) {
	t.Parallel()
	var b Breaker
	for i := range 100 {
		brkMustAdmit(t, &b, brkT0.Add(time.Duration(i)*time.Second), false)
	}
	s := b.Snapshot(brkT0)
	if s.State != Closed || s.Requests != 100 || !s.Until.IsZero() {
		t.Fatalf("snapshot = %+v, want closed with 100 requests", s)
	}
}

func TestBreakerFailureOpensUntilCooldown(t *testing.T) {
	t.Parallel()
	var b Breaker
	brkMustAdmit(t, &b, brkT0, false)
	until := b.Failure(brkT0, Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: 30 * time.Minute, Error: "slow down", FailedOver: true})
	if want := brkT0.Add(time.Minute); !until.Equal(want) {
		t.Fatalf("Failure returned %v, want %v", until, want)
	}
	brkMustRefuse(t, &b, brkT0, until, classify.RateLimit)
	brkMustRefuse(t, &b, brkT0.Add(59*time.Second), until, classify.RateLimit)
	brkMustRefuse(t, &b, until.Add(-time.Nanosecond), until, classify.RateLimit)
	s := b.Snapshot(brkT0.Add(time.Second))
	if s.State != Open || !s.Until.Equal(until) || s.LastClass != classify.RateLimit ||
		s.LastError != "slow down" || !s.LastFailure.Equal(brkT0) || s.ConsecutiveFailures != 1 ||
		s.Failovers != 1 || s.Requests != 1 || s.Successes != 0 {
		t.Fatalf("snapshot = %+v", s)
	}
	// at until exactly the cooldown is over: one probe
	brkMustAdmit(t, &b, until, true)
}

func TestBreakerResetAtWinsOverCooldown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		resetAt time.Time
		want    time.Time
	}{
		{"longer", brkT0.Add(3 * time.Hour), brkT0.Add(3 * time.Hour)},
		{"shorter", brkT0.Add(5 * time.Second), brkT0.Add(5 * time.Second)},
		{"past is ignored", brkT0.Add(-time.Hour), brkT0.Add(time.Hour)},
		{"now is ignored", brkT0, brkT0.Add(time.Hour)},
		{"zero is ignored", time.Time{}, brkT0.Add(time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var b Breaker
			until := b.Failure(brkT0, Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: 30 * time.Minute, ResetAt: tc.resetAt})
			if !until.Equal(tc.want) {
				t.Fatalf("until = %v, want %v", until, tc.want)
			}
			brkMustRefuse(t, &b, tc.want.Add(-time.Millisecond), tc.want, classify.Quota)
			brkMustAdmit(t, &b, tc.want, true)
		})
	}
}

func TestBreakerHalfOpenAdmitsOneProbe(t *testing.T) {
	t.Parallel()
	var b Breaker
	until := b.Failure(brkT0, Failure{Class: classify.Overloaded, Cooldown: 30 * time.Second, MaxCooldown: 30 * time.Minute})
	now := until.Add(10 * time.Second)
	if s := b.Snapshot(now); s.State != HalfOpen || !s.Until.IsZero() {
		t.Fatalf("snapshot after until = %+v, want half_open without Until", s)
	}
	brkMustAdmit(t, &b, now, true)
	for i := range 5 {
		at := now.Add(time.Duration(i) * time.Millisecond)
		brkMustRefuse(t, &b, at, at.Add(probeWait), classify.Overloaded)
	}
	if s := b.Snapshot(now); s.State != HalfOpen {
		t.Fatalf("state while probing = %q, want half_open", s.State)
	}
	b.Success(brkT0)
	if s := b.Snapshot(now); s.State != Closed || s.ConsecutiveFailures != 0 || s.Successes != 1 || s.Requests != 1 {
		t.Fatalf("after probe success: %+v", s)
	}
	for range 3 {
		brkMustAdmit(t, &b, now, false)
	}
}

func TestBreakerConcurrentAdmitOneProbe(t *testing.T) {
	t.Parallel()
	for round := range 20 {
		var b Breaker
		until := b.Failure(brkT0, Failure{Class: classify.ServerError, Cooldown: 10 * time.Second, MaxCooldown: time.Minute})
		now := until.Add(time.Second)
		const n = 50
		var (
			start            = make(chan struct{})
			wg               sync.WaitGroup
			ok, probes, refd atomic.Int32
			badRetry         atomic.Int32
		)
		for range n {
			wg.Go(func() {
				<-start
				a := b.Admit(now, "")
				if a.OK {
					ok.Add(1)
					if a.Probe {
						probes.Add(1)
					}
					return
				}
				refd.Add(1)
				if a.RetryAt.IsZero() || !a.RetryAt.After(now) || a.Class != classify.ServerError {
					badRetry.Add(1)
				}
			})
		}
		close(start)
		wg.Wait()
		if ok.Load() != 1 || probes.Load() != 1 || refd.Load() != n-1 || badRetry.Load() != 0 {
			t.Fatalf("round %d: %d admitted (%d probes), %d refused (%d without RetryAt/class); want exactly one probe",
				round, ok.Load(), probes.Load(), refd.Load(), badRetry.Load())
		}
	}
}

func TestBreakerProbeFailureDoublesCooldown(t *testing.T) {
	t.Parallel()
	var b Breaker
	f := Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: 5 * time.Minute}
	now := brkT0
	until := b.Failure(now, f)
	if want := now.Add(time.Minute); !until.Equal(want) {
		t.Fatalf("first failure until %v, want %v", until, want)
	}
	for i, want := range []time.Duration{2 * time.Minute, 4 * time.Minute, 5 * time.Minute, 5 * time.Minute} {
		now = until
		brkMustAdmit(t, &b, now, true)
		until = b.Failure(now, f)
		if got := until.Sub(now); got != want {
			t.Fatalf("failed probe %d: cooldown %v, want %v", i+1, got, want)
		}
		brkMustRefuse(t, &b, now.Add(want-time.Nanosecond), until, classify.RateLimit)
	}
	if s := b.Snapshot(now); s.ConsecutiveFailures != 5 {
		t.Fatalf("consecutive failures = %d, want 5", s.ConsecutiveFailures)
	}
	// a success resets the doubling
	now = until
	brkMustAdmit(t, &b, now, true)
	b.Success(brkT0)
	if got := b.Failure(now, f).Sub(now); got != time.Minute {
		t.Fatalf("cooldown after a success = %v, want the class cooldown 1m", got)
	}
}

func TestBreakerProbeCooldownNeverBelowClass(t *testing.T) {
	t.Parallel()
	// MaxCooldown below the class cooldown: the class cooldown holds
	t.Run("max below class", func(t *testing.T) {
		var b Breaker
		f := Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: 30 * time.Minute}
		until := b.Failure(brkT0, f)
		for range 3 {
			now := until
			brkMustAdmit(t, &b, now, true)
			until = b.Failure(now, f)
			if got := until.Sub(now); got != time.Hour {
				t.Fatalf("probe cooldown = %v, want 1h (the class cooldown; max_cooldown is lower)", got)
			}
		}
	})
	// A probe that fails with a longer-cooling class than the failure
	// that opened the breaker cools at least that class's cooldown.
	t.Run("probe fails with a longer class", func(t *testing.T) {
		var b Breaker
		until := b.Failure(brkT0, Failure{Class: classify.ServerError, Cooldown: 10 * time.Second, MaxCooldown: 30 * time.Minute})
		now := until
		brkMustAdmit(t, &b, now, true)
		until = b.Failure(now, Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: 30 * time.Minute})
		if got := until.Sub(now); got < time.Hour {
			t.Fatalf("probe failed with quota (cooldown 1h) after a server_error (10s): cooled %v, want at least 1h", got)
		}
	})
}

func TestBreakerProbeResetAtInsteadOfDoubling(t *testing.T) {
	t.Parallel()
	var b Breaker
	f := Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: 30 * time.Minute}
	until := b.Failure(brkT0, f)
	now := until
	brkMustAdmit(t, &b, now, true)
	f.ResetAt = now.Add(7 * time.Second)
	if got := b.Failure(now, f); !got.Equal(f.ResetAt) {
		t.Fatalf("failed probe with ResetAt now+7s: until now+%v, want now+7s", got.Sub(now))
	}
	brkMustRefuse(t, &b, now.Add(6*time.Second), f.ResetAt, classify.RateLimit)
	brkMustAdmit(t, &b, f.ResetAt, true)
	// a long ResetAt is used too (not capped by MaxCooldown)
	f.ResetAt = f.ResetAt.Add(5 * time.Hour)
	if got := b.Failure(now.Add(7*time.Second), f); !got.Equal(f.ResetAt) {
		t.Fatalf("failed probe with ResetAt +5h: until %v, want %v", got, f.ResetAt)
	}
}

func TestBreakerReleaseFreesProbe(t *testing.T) {
	t.Parallel()
	var b Breaker
	until := b.Failure(brkT0, Failure{Class: classify.Overloaded, Cooldown: 30 * time.Second, MaxCooldown: time.Hour})
	now := until
	brkMustAdmit(t, &b, now, true)
	brkMustRefuse(t, &b, now, now.Add(probeWait), classify.Overloaded)
	b.Release(false) // not the probe: nothing changes
	brkMustRefuse(t, &b, now, now.Add(probeWait), classify.Overloaded)
	b.Release(true)
	brkMustAdmit(t, &b, now, true)
	brkMustRefuse(t, &b, now, now.Add(probeWait), classify.Overloaded)
	// a released probe counts no success and no failure
	if s := b.Snapshot(now); s.State != HalfOpen || s.Successes != 0 || s.ConsecutiveFailures != 1 {
		t.Fatalf("snapshot = %+v", s)
	}
	// Release on a closed breaker is harmless
	var c Breaker
	brkMustAdmit(t, &c, now, false)
	c.Release(true)
	c.Release(false)
	brkMustAdmit(t, &c, now, false)
}

func TestBreakerNonCoolingClasses(t *testing.T) {
	t.Parallel()
	for _, class := range []classify.Class{classify.ContextWindow, classify.ClientError, classify.Repairable, classify.None} {
		t.Run(string(class), func(t *testing.T) {
			var b Breaker
			brkMustAdmit(t, &b, brkT0, false)
			until := b.Failure(brkT0, Failure{Class: class, Cooldown: time.Hour, MaxCooldown: time.Hour,
				ResetAt: brkT0.Add(time.Hour), Error: "bad request", FailedOver: class == classify.ContextWindow})
			if !until.IsZero() {
				t.Fatalf("Failure(%q) = %v, want zero", class, until)
			}
			brkMustAdmit(t, &b, brkT0, false)
			s := b.Snapshot(brkT0)
			if s.State != Closed || s.ConsecutiveFailures != 0 || s.LastClass != class {
				t.Fatalf("snapshot = %+v", s)
			}
		})
	}
	// a probe answered with a request's own fault closes the breaker:
	// the provider is answering
	var b Breaker
	until := b.Failure(brkT0, Failure{Class: classify.ServerError, Cooldown: 10 * time.Second, MaxCooldown: time.Minute})
	brkMustAdmit(t, &b, until, true)
	b.Failure(until, Failure{Class: classify.ClientError})
	brkMustAdmit(t, &b, until, false)
	brkMustAdmit(t, &b, until, false)
}

// A refusal of one request (a cooling class, request scope) is recorded
// and cools nothing; a probe it answers closes the breaker.
func TestBreakerRequestOnlyCoolsNothing(t *testing.T) {
	t.Parallel()
	var b Breaker
	brkMustAdmit(t, &b, brkT0, false)
	until := b.Failure(brkT0, Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour,
		ResetAt: brkT0.Add(time.Hour), Error: "long context", FailedOver: true, RequestOnly: true})
	if !until.IsZero() {
		t.Fatalf("Failure = %v, want zero", until)
	}
	brkMustAdmit(t, &b, brkT0, false)
	if s := b.Snapshot(brkT0); s.State != Closed || s.LastClass != classify.RateLimit || s.Failovers != 1 {
		t.Fatalf("snapshot = %+v", s)
	}
	until = b.Failure(brkT0, Failure{Class: classify.ServerError, Cooldown: 10 * time.Second, MaxCooldown: time.Minute})
	brkMustAdmit(t, &b, until, true)
	b.Failure(until, Failure{Class: classify.Quota, Cooldown: time.Hour, RequestOnly: true})
	brkMustAdmit(t, &b, until, false)
}

func TestBreakerAuthEndsEarlyOnNewCredential(t *testing.T) {
	t.Parallel()
	var b Breaker
	until := b.Failure(brkT0, Failure{Class: classify.Auth, Cooldown: 30 * time.Minute, MaxCooldown: time.Hour, Credential: "v1"})
	now := brkT0.Add(time.Minute)
	if got := b.RefusedCredential(now); got != "v1" {
		t.Fatalf("refusedCredential = %q, want v1", got)
	}
	if got := b.RefusedCredential(until); got != "" {
		t.Fatalf("refusedCredential after the cooldown = %q, want none", got)
	}
	for _, v := range []string{"v1", ""} {
		a := b.Admit(now, v)
		if a.OK || !a.RetryAt.Equal(until) || a.Class != classify.Auth {
			t.Fatalf("credential %q: Admit = %+v, want refused until %v", v, a, until)
		}
	}
	a := b.Admit(now, "v2")
	if !a.OK || !a.Probe {
		t.Fatalf("new credential: Admit = %+v, want the probe", a)
	}
	// the probe is in flight: nobody else
	if a := b.Admit(now, "v2"); a.OK {
		t.Fatalf("second request with the new credential: Admit = %+v, want refused", a)
	}
	b.Success(brkT0)
	brkMustAdmit(t, &b, now, false)
}

func TestBreakerAuthWithoutCredentialVersion(t *testing.T) {
	t.Parallel()
	// an auth failure whose refused credential is unknown ends only with
	// its cooldown
	var b Breaker
	until := b.Failure(brkT0, Failure{Class: classify.Auth, Cooldown: 30 * time.Minute, MaxCooldown: time.Hour})
	if got := b.RefusedCredential(brkT0.Add(time.Minute)); got != "" {
		t.Fatalf("refusedCredential = %q, want none", got)
	}
	if a := b.Admit(brkT0.Add(time.Minute), "v2"); a.OK {
		t.Fatalf("Admit = %+v, want refused", a)
	}
	brkMustAdmit(t, &b, until, true)
}

func TestBreakerNonAuthIgnoresCredential(t *testing.T) {
	t.Parallel()
	var b Breaker
	until := b.Failure(brkT0, Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour, Credential: "v1"})
	if got := b.RefusedCredential(brkT0.Add(time.Second)); got != "" {
		t.Fatalf("refusedCredential of a rate_limit cooldown = %q, want none", got)
	}
	a := b.Admit(brkT0.Add(time.Second), "v2")
	if a.OK || !a.RetryAt.Equal(until) {
		t.Fatalf("rate_limit with a new credential: Admit = %+v, want refused until %v", a, until)
	}
}

func TestBreakerReset(t *testing.T) {
	t.Parallel()
	var b Breaker
	f := Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour}
	until := b.Failure(brkT0, f)
	brkMustAdmit(t, &b, until, true)
	b.Failure(until, f) // doubled to 2m
	b.Reset(brkT0)
	now := brkT0.Add(90 * time.Second)
	if s := b.Snapshot(now); s.State != Closed || !s.Until.IsZero() || s.ConsecutiveFailures != 0 {
		t.Fatalf("after Reset: %+v", s)
	}
	brkMustAdmit(t, &b, now, false)
	brkMustAdmit(t, &b, now, false)
	// the doubling is forgotten
	if got := b.Failure(now, f).Sub(now); got != time.Minute {
		t.Fatalf("cooldown after Reset = %v, want 1m", got)
	}
	// Reset during a probe frees everything
	var c Breaker
	u := c.Failure(brkT0, f)
	brkMustAdmit(t, &c, u, true)
	c.Reset(brkT0)
	brkMustAdmit(t, &c, u, false)
	brkMustAdmit(t, &c, u, false)
}

func TestBreakerCoolFor(t *testing.T) {
	t.Parallel()
	var b Breaker
	brkMustAdmit(t, &b, brkT0, false)
	b.CoolFor(brkT0, 10*time.Minute, classify.Overloaded)
	until := brkT0.Add(10 * time.Minute)
	brkMustRefuse(t, &b, brkT0.Add(time.Minute), until, classify.Overloaded)
	if s := b.Snapshot(brkT0.Add(time.Minute)); s.State != Open || !s.Until.Equal(until) || s.LastClass != classify.Overloaded {
		t.Fatalf("snapshot = %+v", s)
	}
	if s := b.Snapshot(until); s.State != HalfOpen {
		t.Fatalf("snapshot at until = %+v, want half_open", s)
	}
	brkMustAdmit(t, &b, until, true)
	b.Success(brkT0)
	brkMustAdmit(t, &b, until, false)
	// CoolFor replaces a longer cooldown (an admin's decision)
	var c Breaker
	c.Failure(brkT0, Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour})
	c.CoolFor(brkT0, time.Minute, classify.Auth)
	brkMustRefuse(t, &c, brkT0, brkT0.Add(time.Minute), classify.Auth)
	brkMustAdmit(t, &c, brkT0.Add(time.Minute), true)
}

func TestBreakerSnapshot(t *testing.T) {
	t.Parallel()
	var b Breaker
	if s := b.Snapshot(brkT0); s.State != Closed || s.Requests != 0 || !s.Until.IsZero() {
		t.Fatalf("zero breaker snapshot = %+v", s)
	}
	brkMustAdmit(t, &b, brkT0, false)
	brkMustAdmit(t, &b, brkT0, false)
	b.Success(brkT0)
	until := b.Failure(brkT0, Failure{Class: classify.ServerError, Cooldown: 10 * time.Second, MaxCooldown: time.Minute, Error: "boom", FailedOver: true})
	s := b.Snapshot(brkT0.Add(5 * time.Second))
	want := Snapshot{State: Open, Until: until, LastClass: classify.ServerError, LastFailure: brkT0,
		LastError: "boom", ConsecutiveFailures: 1, Requests: 2, Successes: 1, Failovers: 1}
	if s != want {
		t.Fatalf("open snapshot = %+v\nwant %+v", s, want)
	}
	s = b.Snapshot(until)
	want.State, want.Until = HalfOpen, time.Time{}
	if s != want {
		t.Fatalf("snapshot at until = %+v\nwant %+v", s, want)
	}
	// Snapshot does not move the breaker: a request before until is
	// still refused
	brkMustRefuse(t, &b, until.Add(-time.Second), until, classify.ServerError)
	// failures that do not fail over are not counted as failovers
	b.Failure(until, Failure{Class: classify.ClientError})
	if s := b.Snapshot(until); s.Failovers != 1 || s.LastClass != classify.ClientError {
		t.Fatalf("after a client error: %+v", s)
	}
}

func TestBreakerShorterFailureKeepsLongerCooldown(t *testing.T) {
	t.Parallel()
	var b Breaker
	// two requests in flight when the provider runs out of quota
	brkMustAdmit(t, &b, brkT0, false)
	brkMustAdmit(t, &b, brkT0, false)
	long := b.Failure(brkT0, Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour,
		ResetAt: brkT0.Add(4 * time.Hour)})
	got := b.Failure(brkT0.Add(time.Second), Failure{Class: classify.ServerError, Cooldown: 10 * time.Second, MaxCooldown: time.Hour})
	if !got.Equal(long) {
		t.Fatalf("a later 10s failure returned until %v, want the 4h cooldown %v kept", got, long)
	}
	a := b.Admit(brkT0.Add(time.Minute), "")
	if a.OK || !a.RetryAt.Equal(long) {
		t.Fatalf("Admit = %+v, want refused until %v", a, long)
	}
	// and a longer one extends it
	longer := b.Failure(brkT0.Add(2*time.Second), Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour,
		ResetAt: brkT0.Add(6 * time.Hour)})
	if !longer.Equal(brkT0.Add(6 * time.Hour)) {
		t.Fatalf("a longer failure: until %v, want +6h", longer)
	}
}

func TestBreakerConcurrentFailuresAndAdmits(t *testing.T) {
	t.Parallel()
	// run under -race: no data race, and the breaker ends consistent
	var b Breaker
	var wg sync.WaitGroup
	for i := range 32 {
		wg.Go(func() {
			for j := range 200 {
				now := brkT0.Add(time.Duration(i*200+j) * time.Millisecond)
				a := b.Admit(now, "v")
				switch {
				case !a.OK:
				case j%3 == 0:
					b.Failure(now, Failure{Class: classify.ServerError, Cooldown: time.Millisecond, MaxCooldown: 10 * time.Millisecond})
				case j%3 == 1:
					b.Success(brkT0)
				default:
					b.Release(a.Probe)
				}
				_ = b.Snapshot(now)
			}
		})
	}
	wg.Wait()
	b.Reset(brkT0)
	brkMustAdmit(t, &b, brkT0, false)
}

// Every decision carries the time the caller passed, never a clock of the
// breaker's own: what is shared says when it was decided.
func TestBreakerDecisionsCarryTheCallersTime(t *testing.T) {
	t.Parallel()
	var b Breaker
	if _, ok := b.Export(); ok {
		t.Fatal("a new breaker exports a decision")
	}
	f := Failure{Class: classify.Overloaded, Cooldown: time.Minute, MaxCooldown: time.Hour}
	t1 := brkT0.Add(time.Hour)
	until := b.Failure(t1, f)
	if d, ok := b.Export(); !ok || d.State != Open || !d.DecidedAt.Equal(t1) || !d.Until.Equal(until) {
		t.Fatalf("after Failure at t1: %+v %v", d, ok)
	}
	brkMustAdmit(t, &b, until, true)
	t2 := until.Add(time.Second)
	if !b.Success(t2) {
		t.Fatal("a successful probe did not change the state")
	}
	if d, ok := b.Export(); !ok || d.State != Closed || !d.DecidedAt.Equal(t2) {
		t.Fatalf("after Success at t2: %+v %v", d, ok)
	}
	if b.Success(t2.Add(time.Second)) {
		t.Fatal("a success of a closed breaker changed the state")
	}
	if d, _ := b.Export(); !d.DecidedAt.Equal(t2) {
		t.Fatalf("a success that changed nothing moved the decision to %v", d.DecidedAt)
	}
	t3 := t2.Add(time.Hour)
	b.Reset(t3)
	if d, ok := b.Export(); !ok || d.State != Closed || !d.DecidedAt.Equal(t3) {
		t.Fatalf("after Reset at t3: %+v %v", d, ok)
	}
}

// Answered closes the breaker as Success does without counting a
// success; Retract takes one back, never below zero.
func TestBreakerAnsweredAndRetract(t *testing.T) {
	t.Parallel()
	var b Breaker
	f := Failure{Class: classify.RateLimit, Cooldown: time.Minute, MaxCooldown: time.Hour}
	until := b.Failure(brkT0, f)
	brkMustAdmit(t, &b, until, true)
	if !b.Answered(until) {
		t.Fatal("Answered after a probe did not report the change")
	}
	if s := b.Snapshot(until); s.State != Closed || s.Successes != 0 {
		t.Fatalf("after Answered: %+v", s)
	}
	b.Success(until)
	b.Retract()
	b.Retract()
	if s := b.Snapshot(until); s.Successes != 0 {
		t.Fatalf("after Success and two Retracts: %d successes", s.Successes)
	}
}
