package failover

import (
	"time"
)

// The gate's two timers: the hold timer commits a held stream after
// stream.hold_wait; the idle watch ends a committed stream, or a held
// success, whose upstream went silent.

// touch records an upstream write for the idle watch.
func (g *gate) touch() { g.lastWrite.Store(int64(time.Since(g.started))) }

// gateTimer is one of the gate's timers. The timer is made once and kept
// across the gate's reuse: arming it again is a Reset, not an allocation.
type gateTimer struct {
	t     *time.Timer
	armed bool
}

// arm starts the timer; start makes it the first time.
func (gt *gateTimer) arm(d time.Duration, start func(time.Duration) *time.Timer) {
	if gt.t == nil {
		gt.t = start(d)
	} else {
		gt.t.Reset(d)
	}
	gt.armed = true
}

// disarm stops an armed timer. It returns false when the callback may be
// under way: the gate must not be reused then.
func (gt *gateTimer) disarm() bool {
	if !gt.armed {
		return true
	}
	gt.armed = false
	return gt.t.Stop()
}

// stopHoldLocked disarms the hold timer.
func (g *gate) stopHoldLocked() {
	if !g.hold.disarm() {
		g.timerMayRun = true
	}
}

// stopIdleLocked disarms the idle watch.
func (g *gate) stopIdleLocked() {
	if !g.idle.disarm() {
		g.timerMayRun = true
	}
}

// armHoldLocked starts the hold timer.
func (g *gate) armHoldLocked(d time.Duration) {
	g.hold.arm(d, g.newHoldTimer)
}

func (g *gate) newHoldTimer(d time.Duration) *time.Timer { return time.AfterFunc(d, g.holdExpired) }

func (g *gate) newIdleTimer(d time.Duration) *time.Timer { return time.AfterFunc(d, g.checkIdle) }

func (g *gate) holdExpired() {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	// this callback is the timer's run, and it ends before finish can
	// take wmu: the gate stays reusable
	g.hold.armed = false
	if g.mode != modeHoldStream || g.trailing {
		g.mu.Unlock()
		return
	}
	g.commitLocked()
	g.mu.Unlock()
	g.writeHeld()
	g.flush()
}

// startIdleWatch ends a committed stream, or a held success, whose
// upstream sends nothing for longer than the idle limit: the attempt is
// cancelled, and the handler closes the client's stream with an error
// event or fails a held success over. Idleness is measured on the
// monotonic clock: a wall-clock step must not end a healthy stream. The
// check takes only mu, never wmu, so a client that stops reading cannot
// park it. The caller holds mu.
func (g *gate) startIdleWatch() {
	if g.stream == nil || g.stream.IdleTimeout <= 0 || g.cancel == nil {
		return
	}
	g.touch()
	g.idle.arm(time.Duration(g.stream.IdleTimeout), g.newIdleTimer)
}

func (g *gate) checkIdle() {
	idle := time.Duration(g.stream.IdleTimeout)
	since := time.Since(g.started) - time.Duration(g.lastWrite.Load())
	if since >= idle {
		g.stalled.Store(true)
		g.cancel()
		return
	}
	g.mu.Lock()
	if g.idle.armed {
		g.idle.t.Reset(idle - since)
	}
	g.mu.Unlock()
}
