package failover

import (
	"time"
)

// The gate's two timers: the hold timer commits a held stream after
// stream.hold_wait; the idle watch ends a committed stream, or a held
// success, whose upstream went silent.

// touch records an upstream write for the idle watch.
func (g *gate) touch() { g.lastWrite.Store(int64(time.Since(g.started))) }

// stopHoldLocked disarms the hold timer.
func (g *gate) stopHoldLocked() {
	if g.holdArmed {
		g.holdArmed = false
		if !g.holdTimer.Stop() {
			g.timerMayRun = true
		}
	}
}

// stopIdleLocked disarms the idle watch.
func (g *gate) stopIdleLocked() {
	if g.idleArmed {
		g.idleArmed = false
		if !g.idleTimer.Stop() {
			g.timerMayRun = true
		}
	}
}

// armHoldLocked starts the hold timer.
func (g *gate) armHoldLocked(d time.Duration) {
	if g.holdTimer == nil {
		g.holdTimer = time.AfterFunc(d, g.holdExpired)
	} else {
		g.holdTimer.Reset(d)
	}
	g.holdArmed = true
}

func (g *gate) holdExpired() {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	// this callback is the timer's run, and it ends before finish can
	// take wmu: the gate stays reusable
	g.holdArmed = false
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
	d := time.Duration(g.stream.IdleTimeout)
	if g.idleTimer == nil {
		g.idleTimer = time.AfterFunc(d, g.checkIdle)
	} else {
		g.idleTimer.Reset(d)
	}
	g.idleArmed = true
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
	if g.idleArmed {
		g.idleTimer.Reset(idle - since)
	}
	g.mu.Unlock()
}
