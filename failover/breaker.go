package failover

import (
	"sync"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// BreakerState is where a provider's breaker stands.
type BreakerState string

// Breaker states.
const (
	StateClosed   BreakerState = "closed"    // admits every request
	StateOpen     BreakerState = "open"      // cooling down: admits none
	StateHalfOpen BreakerState = "half_open" // cooldown over: admits exactly one probe
)

// Breaker decides whether a provider may take a request. Pure logic: the
// caller passes the time, so tests drive it with a fake clock.
//
// After a cooldown ends the breaker is half-open and exactly one request
// probes the provider; success closes it, failure reopens it with a doubled
// cooldown (at most maxCooldown), unless the provider said how long to wait.
type Breaker struct {
	mu sync.Mutex

	state       BreakerState
	until       time.Time // end of the cooldown while open
	lastClass   Class
	lastFailure time.Time
	lastError   string
	cooldown    time.Duration // the cooldown last applied, doubled by a failed probe
	consecutive int           // failures since the last success
	probing     bool          // a half-open probe is in flight
	// failedCredential is the version of the credential an auth failure
	// refused; a different credential ends the auth cooldown early.
	failedCredential string

	requests, successes, failovers uint64

	// capacity is what the provider last reported about its own usage
	// to requests through this breaker (headroom.go).
	capacity capacityCell

	// decidedAt is when the state was last decided (opened, closed by a
	// probe, reset, drained), by origin: "" for this instance, else the
	// instance that shared the decision (see adopt).
	decidedAt time.Time
	origin    string
}

// Admission is the answer to "may this request go to the provider?".
type Admission struct {
	OK    bool
	Probe bool // the request is the half-open probe; it must end with Success, Failure or Release
	// RetryAt is when the provider may admit again (when !OK).
	RetryAt time.Time
	Class   Class // the class that opened the breaker (when !OK)
}

// probeWait is how long other requests assume a probe in flight takes,
// for the Retry-After of an "every provider is cooling" answer.
const probeWait = time.Second

// Admit answers whether a request may go to the provider now. credential
// is the version of the provider's current credential as the caller found
// it, without waiting ("" when unknown): a version other than the refused
// one ends an auth cooldown early. The breaker never asks a credential
// source itself, so nothing slow or fallible runs under (or around) its
// lock.
func (b *Breaker) Admit(now time.Time, credential string) Admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case "", StateClosed:
		b.requests++
		return Admission{OK: true}
	case StateOpen:
		if now.Before(b.until) && !b.credentialRenewedLocked(credential) {
			return Admission{RetryAt: b.until, Class: b.lastClass}
		}
		b.state = StateHalfOpen
		b.probing = false
	}
	// half-open
	if b.probing {
		return Admission{RetryAt: now.Add(probeWait), Class: b.lastClass}
	}
	b.probing = true
	b.requests++
	return Admission{OK: true, Probe: true}
}

// credentialRenewedLocked reports whether an auth cooldown may end early
// because the credential is now another than the one refused.
func (b *Breaker) credentialRenewedLocked(current string) bool {
	return b.lastClass == classify.Auth && b.failedCredential != "" && credentialChanged(current, b.failedCredential)
}

// refusedCredential returns the version of the credential whose refusal
// keeps the breaker open now, or "" when no credential could end the
// cooldown early: the caller looks the current version up only then.
func (b *Breaker) refusedCredential(now time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != StateOpen || b.lastClass != classify.Auth || !now.Before(b.until) {
		return ""
	}
	return b.failedCredential
}

// peek answers like Admit for an open breaker, without taking a probe or
// counting a request; any other state admits.
func (b *Breaker) peek(now time.Time) Admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == StateOpen && now.Before(b.until) {
		return Admission{RetryAt: b.until, Class: b.lastClass}
	}
	return Admission{OK: true}
}

// idle reports whether the breaker cools nothing now and no probe is in
// flight: dropping it changes nothing for its client.
func (b *Breaker) idle(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case "", StateClosed:
		return true
	case StateOpen:
		return !now.Before(b.until)
	}
	return !b.probing // half-open
}

func credentialChanged(current, failed string) bool {
	return current != "" && current != failed
}

// Success records a response that was delivered: the breaker closes. It
// reports whether that changed the state (a probe succeeded).
func (b *Breaker) Success() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.successes++
	changed := b.state == StateOpen || b.state == StateHalfOpen
	if changed {
		b.decidedAt, b.origin = timeNow(), ""
	}
	b.closeLocked()
	return changed
}

// closeLocked closes the breaker and forgets its cooldown: what a success
// and a reset both do.
func (b *Breaker) closeLocked() {
	b.state = StateClosed
	b.until = time.Time{}
	b.cooldown = 0
	b.consecutive = 0
	b.probing = false
	b.failedCredential = ""
}

// Release ends a request that reached no verdict (the client went away):
// a probe gives its place to the next request, nothing is counted.
func (b *Breaker) Release(wasProbe bool) {
	if !wasProbe {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
}

// Failure is one failed attempt to feed into the breaker.
type Failure struct {
	Class Class
	// Cooldown is the configured cooldown for Class.
	Cooldown time.Duration
	// MaxCooldown caps the doubled cooldown of failed probes.
	MaxCooldown time.Duration
	// ResetAt is the provider's own "come back at"; it wins over Cooldown.
	ResetAt time.Time
	// Credential is the version of the credential that was refused (auth).
	Credential string
	Error      string
	FailedOver bool
}

// Failure records a failed attempt and returns the end of the cooldown
// (zero when the class cools nothing).
func (b *Breaker) Failure(now time.Time, f Failure) time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.lastClass = f.Class
	b.lastFailure = now
	b.lastError = f.Error
	if f.FailedOver {
		b.failovers++
	}
	wasProbe := b.state == StateHalfOpen
	b.probing = false
	if !f.Class.Cools() {
		if wasProbe {
			// the provider answered; the request was at fault
			b.state = StateClosed
		}
		return time.Time{}
	}
	b.consecutive++
	cooldown := f.Cooldown
	if wasProbe && b.cooldown > 0 {
		// doubled, capped, and never below this class's own cooldown
		cooldown = max(f.Cooldown, min(2*b.cooldown, f.MaxCooldown))
	}
	b.cooldown = cooldown
	until := now.Add(cooldown)
	if !f.ResetAt.IsZero() && f.ResetAt.After(now) {
		until = f.ResetAt
	}
	// a concurrent failure must not shorten a longer cooldown already set
	if b.state == StateOpen && b.until.After(until) {
		until = b.until
	}
	b.state = StateOpen
	b.until = until
	b.decidedAt, b.origin = now, ""
	if f.Class == classify.Auth {
		b.failedCredential = f.Credential
	}
	return until
}

// Reset closes the breaker now (admin API).
func (b *Breaker) Reset() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.decidedAt, b.origin = timeNow(), ""
	b.closeLocked()
}

// CoolFor opens the breaker by hand until now+d (admin API: drain).
func (b *Breaker) CoolFor(now time.Time, d time.Duration, class Class) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state = StateOpen
	b.until = now.Add(d)
	b.decidedAt, b.origin = now, ""
	b.lastClass = class
	b.lastFailure = now
	b.lastError = "cooled down by hand through the admin API"
	b.probing = false
}

// BreakerSnapshot is a consistent copy of a breaker's state.
type BreakerSnapshot struct {
	State               BreakerState
	Until               time.Time
	LastClass           Class
	LastFailure         time.Time
	LastError           string
	ConsecutiveFailures int
	Requests            uint64
	Successes           uint64
	Failovers           uint64
}

// Snapshot returns the breaker's state as of now: an open breaker whose
// cooldown has passed reads as half-open.
func (b *Breaker) Snapshot(now time.Time) BreakerSnapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := BreakerSnapshot{
		State: b.state, Until: b.until, LastClass: b.lastClass, LastFailure: b.lastFailure,
		LastError: b.lastError, ConsecutiveFailures: b.consecutive,
		Requests: b.requests, Successes: b.successes, Failovers: b.failovers,
	}
	if s.State == "" {
		s.State = StateClosed
	}
	if s.State == StateOpen && !now.Before(b.until) {
		s.State = StateHalfOpen
	}
	if s.State != StateOpen {
		s.Until = time.Time{}
	}
	return s
}

// SharedState is the part of a breaker that instances share through
// storage: never a credential, never a request.
type SharedState struct {
	State     BreakerState `json:"state"` // open or closed
	Until     time.Time    `json:"until,omitzero"`
	Class     Class        `json:"class,omitempty"`
	DecidedAt time.Time    `json:"decided_at"`
}

// export returns the breaker's last decision, if this instance made it.
func (b *Breaker) export() (SharedState, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.decidedAt.IsZero() || b.origin != "" {
		return SharedState{}, false
	}
	st := SharedState{State: StateClosed, DecidedAt: b.decidedAt}
	if b.state == StateOpen || b.state == StateHalfOpen {
		st.State, st.Until, st.Class = StateOpen, b.until, b.lastClass
	}
	return st, true
}

// adopt takes another instance's decision. A cooldown never shortens one
// that is running here: between two cooldowns the later end wins,
// whichever was decided last. Otherwise the later decision wins, so a
// close after a successful probe ends a cooldown here too. A cooldown
// whose end has passed (on this clock) is ignored. It reports whether it
// changed anything.
func (b *Breaker) adopt(now time.Time, st SharedState, origin string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch st.State {
	case StateOpen:
		if !st.Until.After(now) {
			return false
		}
		if b.state == StateOpen || b.state == StateHalfOpen {
			if !st.Until.After(b.until) {
				return false
			}
		} else if !st.DecidedAt.After(b.decidedAt) {
			return false
		}
		b.state, b.until, b.lastClass = StateOpen, st.Until, st.Class
		b.lastFailure = st.DecidedAt
		b.lastError = "shared by instance " + origin
		b.probing = false
	case StateClosed:
		if !st.DecidedAt.After(b.decidedAt) {
			return false
		}
		if b.state == StateClosed || b.state == "" {
			b.decidedAt, b.origin = st.DecidedAt, origin
			return false
		}
		b.state, b.until, b.cooldown, b.consecutive, b.probing = StateClosed, time.Time{}, 0, 0, false
	default:
		return false
	}
	if st.DecidedAt.After(b.decidedAt) {
		b.decidedAt = st.DecidedAt
	}
	b.origin = origin
	return true
}

// yieldProbe gives up the half-open probe Admit just granted, because
// another instance of the fleet holds it until the given time: until then,
// or until that instance's result arrives, the breaker admits nothing.
// Waiting for someone else's probe is no decision of this instance, so
// nothing here is shared.
func (b *Breaker) yieldProbe(until time.Time) Admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == StateHalfOpen && b.probing {
		b.state, b.until, b.probing = StateOpen, until, false
		b.requests--
		b.lastError = "another instance is probing the provider"
	}
	return Admission{RetryAt: until, Class: b.lastClass}
}

// provenance says where the breaker's state came from: "" (this instance)
// or the instance that shared it, and when it was decided.
func (b *Breaker) provenance() (string, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.origin, b.decidedAt
}
