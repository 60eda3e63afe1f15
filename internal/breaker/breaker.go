// Package breaker is the state machine that decides whether a provider may
// take a request: closed, open (cooling down) or half-open (one probe).
// Pure: it reads no clock (every method that needs the time takes it) and
// never asks a credential source, so nothing slow runs under its lock, and
// tests drive it with a fake clock.
package breaker

import (
	"sync"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// State is where a provider's breaker stands.
type State string

// Breaker states.
const (
	Closed   State = "closed"    // admits every request
	Open     State = "open"      // cooling down: admits none
	HalfOpen State = "half_open" // cooldown over: admits exactly one probe
)

// Breaker decides whether a provider may take a request. Pure logic: the
// caller passes the time, so tests drive it with a fake clock.
//
// After a cooldown ends the breaker is half-open and exactly one request
// probes the provider; success closes it, failure reopens it with a doubled
// cooldown (at most maxCooldown), unless the provider said how long to wait.
type Breaker struct {
	mu sync.Mutex

	state       State
	until       time.Time // end of the cooldown while open
	lastClass   classify.Class
	lastFailure time.Time
	lastError   string
	cooldown    time.Duration // the cooldown last applied, doubled by a failed probe
	consecutive int           // failures since the last success
	probing     bool          // a half-open probe is in flight
	// failedCredential is the version of the credential an auth failure
	// refused; a different credential ends the auth cooldown early.
	failedCredential string

	requests, successes, failovers uint64

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
	Class   classify.Class // the class that opened the breaker (when !OK)
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
	case "", Closed:
		b.requests++
		return Admission{OK: true}
	case Open:
		if now.Before(b.until) && !b.credentialRenewedLocked(credential) {
			return Admission{RetryAt: b.until, Class: b.lastClass}
		}
		b.state = HalfOpen
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

// RefusedCredential returns the version of the credential whose refusal
// keeps the breaker open now, or "" when no credential could end the
// cooldown early: the caller looks the current version up only then.
func (b *Breaker) RefusedCredential(now time.Time) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state != Open || b.lastClass != classify.Auth || !now.Before(b.until) {
		return ""
	}
	return b.failedCredential
}

// Peek answers like Admit for an open breaker, without taking a probe or
// counting a request; any other state admits.
func (b *Breaker) Peek(now time.Time) Admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Open && now.Before(b.until) {
		return Admission{RetryAt: b.until, Class: b.lastClass}
	}
	return Admission{OK: true}
}

// Idle reports whether the breaker cools nothing now and no probe is in
// flight: dropping it changes nothing for its client.
func (b *Breaker) Idle(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case "", Closed:
		return true
	case Open:
		return !now.Before(b.until)
	}
	return !b.probing // half-open
}

func credentialChanged(current, failed string) bool {
	return current != "" && current != failed
}

// Success records a response that was delivered at now: the breaker
// closes. It reports whether that changed the state (a probe succeeded).
func (b *Breaker) Success(now time.Time) bool {
	return b.answered(now, true)
}

// Answered records a response that was delivered at now but is not a
// success (a client error passed on): the breaker closes, as the provider
// answered, and the success count stays. It reports what Success does.
func (b *Breaker) Answered(now time.Time) bool {
	return b.answered(now, false)
}

// Retract takes back a success counted for a response that then failed
// (a stream that broke after it was delivered).
func (b *Breaker) Retract() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.successes > 0 {
		b.successes--
	}
}

func (b *Breaker) answered(now time.Time, success bool) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if success {
		b.successes++
	}
	changed := b.state == Open || b.state == HalfOpen
	if changed {
		b.decidedAt, b.origin = now, ""
	}
	b.closeLocked()
	return changed
}

// closeLocked closes the breaker and forgets its cooldown: what a success
// and a reset both do.
func (b *Breaker) closeLocked() {
	b.state = Closed
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
	Class classify.Class
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
	// RequestOnly marks a refusal of this request, not of the provider
	// (classify.ScopeRequest): recorded, but nothing cools.
	RequestOnly bool
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
	wasProbe := b.state == HalfOpen
	b.probing = false
	if !f.Class.Cools() || f.RequestOnly {
		if wasProbe {
			// the provider answered; the request was at fault
			b.state = Closed
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
	if b.state == Open && b.until.After(until) {
		until = b.until
	}
	b.state = Open
	b.until = until
	b.decidedAt, b.origin = now, ""
	if f.Class == classify.Auth {
		b.failedCredential = f.Credential
	}
	return until
}

// Reset closes the breaker at now (admin API).
func (b *Breaker) Reset(now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.decidedAt, b.origin = now, ""
	if b.lastClass == classify.Manual {
		// a cooldown by hand ended by hand: no failure is left to report
		b.lastClass, b.lastError, b.lastFailure = "", "", time.Time{}
	}
	b.closeLocked()
}

// CoolFor opens the breaker by hand until now+d (admin API: drain).
func (b *Breaker) CoolFor(now time.Time, d time.Duration, class classify.Class) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.state = Open
	b.until = now.Add(d)
	b.decidedAt, b.origin = now, ""
	b.lastClass = class
	b.lastFailure = now
	b.lastError = "cooled down by hand through the admin API"
	b.probing = false
}

// Snapshot is a consistent copy of a breaker's state.
type Snapshot struct {
	State               State
	Until               time.Time
	LastClass           classify.Class
	LastFailure         time.Time
	LastError           string
	ConsecutiveFailures int
	Requests            uint64
	Successes           uint64
	Failovers           uint64
}

// Snapshot returns the breaker's state as of now: an open breaker whose
// cooldown has passed reads as half-open.
func (b *Breaker) Snapshot(now time.Time) Snapshot {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := Snapshot{
		State: b.state, Until: b.until, LastClass: b.lastClass, LastFailure: b.lastFailure,
		LastError: b.lastError, ConsecutiveFailures: b.consecutive,
		Requests: b.requests, Successes: b.successes, Failovers: b.failovers,
	}
	if s.State == "" {
		s.State = Closed
	}
	if s.State == Open && !now.Before(b.until) {
		s.State = HalfOpen
	}
	if s.State != Open {
		s.Until = time.Time{}
	}
	return s
}

// Decision is the part of a breaker that instances share through
// storage: never a credential, never a request.
type Decision struct {
	State     State          `json:"state"` // open or closed
	Until     time.Time      `json:"until,omitzero"`
	Class     classify.Class `json:"class,omitempty"`
	DecidedAt time.Time      `json:"decided_at"`
}

// Export returns the breaker's last decision, if this instance made it.
func (b *Breaker) Export() (Decision, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.decidedAt.IsZero() || b.origin != "" {
		return Decision{}, false
	}
	st := Decision{State: Closed, DecidedAt: b.decidedAt}
	if b.state == Open || b.state == HalfOpen {
		st.State, st.Until, st.Class = Open, b.until, b.lastClass
	}
	return st, true
}

// Adopt takes another instance's decision. A cooldown never shortens one
// that is running here: between two cooldowns the later end wins,
// whichever was decided last. Otherwise the later decision wins, so a
// close after a successful probe ends a cooldown here too. A cooldown
// whose end has passed (on this clock) is ignored. It reports whether it
// changed anything.
func (b *Breaker) Adopt(now time.Time, st Decision, origin string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch st.State {
	case Open:
		if !st.Until.After(now) {
			return false
		}
		if b.state == Open || b.state == HalfOpen {
			if !st.Until.After(b.until) {
				return false
			}
		} else if !st.DecidedAt.After(b.decidedAt) {
			return false
		}
		b.state, b.until, b.lastClass = Open, st.Until, st.Class
		b.lastFailure = st.DecidedAt
		b.lastError = "shared by instance " + origin
		b.probing = false
	case Closed:
		if !st.DecidedAt.After(b.decidedAt) {
			return false
		}
		if b.state == Closed || b.state == "" {
			b.decidedAt, b.origin = st.DecidedAt, origin
			return false
		}
		b.state, b.until, b.cooldown, b.consecutive, b.probing = Closed, time.Time{}, 0, 0, false
	default:
		return false
	}
	if st.DecidedAt.After(b.decidedAt) {
		b.decidedAt = st.DecidedAt
	}
	b.origin = origin
	return true
}

// YieldProbe gives up the half-open probe Admit just granted, because
// another instance of the fleet holds it until the given time: until then,
// or until that instance's result arrives, the breaker admits nothing.
// Waiting for someone else's probe is no decision of this instance, so
// nothing here is shared.
func (b *Breaker) YieldProbe(until time.Time) Admission {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == HalfOpen && b.probing {
		b.state, b.until, b.probing = Open, until, false
		b.requests--
		b.lastError = "another instance is probing the provider"
	}
	return Admission{RetryAt: until, Class: b.lastClass}
}

// Provenance says where the breaker's state came from: "" (this instance)
// or the instance that shared it, and when it was decided.
func (b *Breaker) Provenance() (string, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.origin, b.decidedAt
}
