package failover

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// gateMode is where an attempt's response stands.
type gateMode uint8

const (
	modeUndecided   gateMode = iota // no status yet
	modeHoldError                   // an error status: hold the body to classify it
	modeHoldStream                  // 200 text/event-stream: hold until the first events decide
	modeHoldSuccess                 // another success: hold until its body is complete
	modeCommitted                   // written to the client; the rest streams through
	modeDiscarded                   // a failed attempt: swallow everything
)

// maxHeldError bounds how much of an error body is held. Error bodies are
// small; a larger one is classified by its first maxHeldError bytes.
const maxHeldError = 1 << 20

// maxHeldSuccess bounds how much of a non-streaming success is held until
// its body is complete, so that one that breaks midway can still fail
// over. A larger body is committed at this size and copied through.
const maxHeldSuccess = 4 << 20

// gate is the ResponseWriter a provider's reverse_proxy writes to. It holds
// status, headers and body until a verdict: an error response is held
// whole and classified; an event stream is held until its first events
// prove it healthy; another success is held until its body is complete
// (maxHeldSuccess at most), so one that breaks midway can still fail over;
// a 101 and any other status is committed at once. A failed attempt is
// discarded and the client never sees a byte of it.
//
// A hold timer commits from its own goroutine and an idle watch checks a
// committed stream from another, so the gate locks. Two locks: mu guards
// the gate's state and is never held while writing to the client; wmu
// orders writes to the client (the held prefix before what follows) and
// is taken before mu. The idle watch takes only mu, so a client that
// stops reading cannot park it.
type gate struct {
	wmu    sync.Mutex
	mu     sync.Mutex
	w      http.ResponseWriter // the client's
	header http.Header         // this attempt's own header map, until commit
	status int
	held   *bytes.Buffer

	stream   *StreamConfig // nil: not a model call, passed through untouched
	owner    gateOwner
	inspect  *streaminspect.Inspector // while a stream is held (inspectorPool)
	encoding string                   // Content-Encoding of a held stream
	length   int64                    // Content-Length of a held success, -1 if unknown

	// verdict is set when the gate itself decided the attempt failed
	// (an early stream error) or, for held error bodies, by finish; nil
	// until then (a success never has one, so it takes no room)
	verdict *classify.Verdict

	// The hold timer commits a held stream after stream.HoldWait; the
	// idle timer watches a committed stream or a held success for an
	// upstream that stopped sending. Both are kept across reuse (see
	// reset) and armed with Reset; timerMayRun (below) says a callback
	// may still run, so the gate must not be reused.
	hold, idle gateTimer

	// after commit
	watch     streaminspect.Watcher
	lastWrite atomic.Int64  // monotonic nanoseconds since started of the last upstream write
	tail      *bytes.Buffer // an unfinished event of a committed stream, kept back

	// a committed non-streaming JSON success is kept (up to maxUsageBody)
	// to read its usage once it is complete
	usageBody *bytes.Buffer

	cancel context.CancelFunc // stops the attempt's upstream request

	started                  time.Time
	firstEvent, firstContent time.Duration

	// The mode and the flags sit together, so they share two words: a
	// gate lives as long as its stream.
	mode     gateMode
	isStream bool // the response is text/event-stream
	head     bool // a HEAD request: a success has no body to hold
	// trailing is set when reverse_proxy asks for the header map after
	// WriteHeader while holding: it is about to write trailers into it,
	// so the hold timer must not commit (and copy the map) any more.
	trailing             bool
	timerMayRun          bool // a timer callback may still run
	reportedErr          bool // after commit: an error event reached the owner
	midEvent             bool // an event over maxEventTail was forwarded unfinished
	hijacked             bool // a 101 handed the client's connection on: never reuse
	sawEvent, sawContent bool
	stalled              atomic.Bool // the idle watch found the upstream silent
}

// gateOwner is what a gate asks of the attempt whose response it holds.
// The gate calls it with its lock held: none of these may block.
type gateOwner interface {
	// verdictFor classifies a held error response: a verdict that fails
	// over or asks for a retry (Retry) discards it, any other commits it.
	verdictFor(status int, hdr http.Header, body []byte) classify.Verdict
	// committing is told just before status and headers go to the
	// client; hdr is the client's header map, still writable.
	committing(status int, hdr http.Header)
	// streamFailed is told of an upstream error event in a committed
	// stream, before the client reads it.
	streamFailed(ei streaminspect.ErrorInfo)
}

var heldPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// inspectorPool holds the inspectors of held streams: only holding needs
// one, so an open stream does not keep one.
var inspectorPool = sync.Pool{New: func() any { return new(streaminspect.Inspector) }}

// releaseInspectorLocked returns a held stream's inspector once the hold
// is over.
func (g *gate) releaseInspectorLocked() {
	if g.inspect != nil {
		g.inspect.Reset()
		inspectorPool.Put(g.inspect)
		g.inspect = nil
	}
}

// reset readies a gate for a new attempt (with nothing given, it lets go
// of the last one's for the pool), keeping its header map and timers. The
// caller made sure no timer callback of the last attempt can still run
// (reusable).
func (g *gate) reset(w http.ResponseWriter, stream *StreamConfig, cancel context.CancelFunc, owner gateOwner) {
	header, holdTimer, idleTimer := g.header, g.hold.t, g.idle.t
	if header == nil {
		header = make(http.Header)
	} else {
		clear(header)
	}
	*g = gate{
		w: w, header: header, stream: stream, cancel: cancel, owner: owner,
		hold: gateTimer{t: holdTimer}, idle: gateTimer{t: idleTimer},
		started: time.Now(), // monotonic: latency and idleness are measured on the real clock, never a test's
	}
}

// reusable says whether the gate may serve another attempt: no timer
// callback can still run, and no connection was handed on.
func (g *gate) reusable() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return !g.timerMayRun && !g.hijacked && !g.hold.armed && !g.idle.armed
}

// Header returns the attempt's own header map until commit and the
// client's after it (trailers are added after the body).
func (g *gate) Header() http.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode == modeCommitted {
		return g.w.Header()
	}
	if g.mode != modeUndecided {
		// The body is done and trailers follow: the timer must not copy
		// the map while reverse_proxy writes it. finish decides instead.
		g.trailing = true
		g.stopHoldLocked()
	}
	return g.header
}

// WriteHeader decides how the response is handled.
func (g *gate) WriteHeader(status int) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	if status >= 100 && status < 200 && status != http.StatusSwitchingProtocols {
		// only this goroutine touches the header map before a final status
		g.write1xx(status)
		return
	}
	g.mu.Lock()
	g.writeHeaderLocked(status)
	g.mu.Unlock()
}

func (g *gate) writeHeaderLocked(status int) {
	if g.mode != modeUndecided {
		return
	}
	g.status = status
	switch {
	case status == http.StatusSwitchingProtocols:
		// The connection changes hands (a WebSocket): nothing to hold.
		// Hijack and Unwrap reach the client's connection once committed.
		g.hijacked = true
		g.commitLocked()
	case status >= 400:
		g.mode = modeHoldError
		g.held = heldPool.Get().(*bytes.Buffer)
	case status == http.StatusOK && isEventStream(g.header) && g.stream != nil:
		// (without stream config, not a model call: a stream passes
		// through unwatched, like any other answer)
		g.isStream = true
		if g.stream.Hold == HoldOff {
			g.commitLocked()
			return
		}
		g.mode = modeHoldStream
		g.held = heldPool.Get().(*bytes.Buffer)
		g.encoding = g.header.Get("Content-Encoding")
		g.inspect = inspectorPool.Get().(*streaminspect.Inspector)
		g.inspect.Policy = g.stream.inspectPolicy()
		if g.stream.HoldWait > 0 {
			g.armHoldLocked(time.Duration(g.stream.HoldWait))
		}
	case status >= 200 && status < 300 && status != http.StatusNoContent && !g.head && g.stream != nil:
		g.mode = modeHoldSuccess
		g.held = heldPool.Get().(*bytes.Buffer)
		g.length = -1
		if cl := g.header.Get("Content-Length"); cl != "" {
			if n, err := strconv.ParseInt(cl, 10, 64); err == nil {
				g.length = n
			}
		}
		g.startIdleWatch()
	default:
		g.commitLocked()
	}
}

// write1xx passes an informational response straight through.
func (g *gate) write1xx(status int) {
	dst := g.w.Header()
	saved := dst.Clone()
	maps.Copy(dst, g.header)
	g.w.WriteHeader(status)
	clear(dst)
	maps.Copy(dst, saved)
	clear(g.header)
}

// Write holds, inspects, forwards or swallows upstream bytes. It never
// returns an error for a discarded attempt.
func (g *gate) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	if g.mode == modeUndecided {
		g.writeHeaderLocked(http.StatusOK)
	}
	switch g.mode {
	case modeCommitted:
		g.mu.Unlock()
		return g.writeCommitted(p)
	case modeHoldError:
		room := min(len(p), maxHeldError-g.held.Len())
		g.held.Write(p[:room])
		if g.held.Len() < maxHeldError {
			g.mu.Unlock()
			return len(p), nil
		}
		// too long to hold whole: decide on what is held
		g.decideErrorLocked()
		committed := g.mode == modeCommitted
		g.mu.Unlock()
		if committed {
			g.writeHeld()
			if room < len(p) {
				if _, err := g.w.Write(p[room:]); err != nil {
					return room, err
				}
			}
		}
		return len(p), nil
	case modeHoldStream:
		g.touch()
		g.held.Write(p)
		committed := g.inspectLocked(p)
		g.mu.Unlock()
		if committed {
			g.writeHeld()
			g.flush()
		}
		return len(p), nil
	case modeHoldSuccess:
		g.touch()
		g.held.Write(p)
		complete := g.length >= 0 && int64(g.held.Len()) >= g.length
		if !complete && g.held.Len() < maxHeldSuccess {
			g.mu.Unlock()
			return len(p), nil
		}
		// the whole body (known by its length), or more than is held
		g.commitLocked()
		g.mu.Unlock()
		if _, err := g.writeHeld(); err != nil {
			return len(p), err
		}
		return len(p), nil
	}
	g.mu.Unlock()
	return len(p), nil // discarded
}

// inspectLocked feeds held stream bytes to the inspector and acts on the
// state it reports. It reports whether it committed: the caller then writes the
// held bytes.
func (g *gate) inspectLocked(p []byte) bool {
	var state streaminspect.State
	if g.encoding == "" {
		state = g.inspect.Feed(p)
	} else {
		// A compressed stream is decoded from the start each time: the
		// held prefix is small (stream.HoldBytes) and this lasts only until the
		// first content event.
		decoded, err := classify.DecodeBody(g.encoding, g.held.Bytes(), maxHeldError)
		if err != nil {
			state = streaminspect.Pending
		} else {
			*g.inspect = streaminspect.Inspector{Policy: g.stream.inspectPolicy()}
			state = g.inspect.Feed(decoded)
		}
	}
	if !g.sawEvent && g.inspect.Events() > 0 {
		g.sawEvent, g.firstEvent = true, time.Since(g.started)
	}
	switch state {
	case streaminspect.Content, streaminspect.Ended, streaminspect.Invalid:
		if state == streaminspect.Content {
			g.sawContent, g.firstContent = true, time.Since(g.started)
		}
		g.commitLocked()
		return true
	case streaminspect.Failed:
		ei := g.inspect.Error()
		g.verdict = &classify.Verdict{Class: classify.OfErrorType(ei.Type), ErrorType: ei.Type, Message: ei.Message}
		if !g.verdict.Class.FailsOver() {
			// the request's fault (invalid_request_error): no provider
			// would take it; the client gets it as the provider sent it
			g.commitLocked()
			return true
		}
		g.discardLocked()
	default:
		if g.stream.HoldBytes > 0 && g.held.Len() >= int(g.stream.HoldBytes) {
			g.commitLocked()
			return true
		}
	}
	return false
}

// decideErrorLocked classifies a held error response.
func (g *gate) decideErrorLocked() {
	if g.verdict != nil {
		return
	}
	body, _ := classify.DecodeBody(g.header.Get("Content-Encoding"), g.held.Bytes(), classify.MaxBody)
	g.verdict = new(classify.Verdict)
	if g.owner != nil {
		*g.verdict = g.owner.verdictFor(g.status, g.header, body)
	}
	if g.verdict.Class.FailsOver() || g.verdict.Retry {
		g.discardLocked()
		return
	}
	g.commitLocked()
}

// discardLocked stops the attempt: its bytes are swallowed and its
// upstream request is cancelled, so a large error body is not read.
func (g *gate) discardLocked() {
	g.mode = modeDiscarded
	g.stopHoldLocked()
	if g.cancel != nil {
		g.cancel()
	}
}

// commitLocked writes the held status and headers to the client; the
// caller then writes the held body with writeHeld once it has released mu
// (it holds wmu throughout, so nothing overtakes the held body).
func (g *gate) commitLocked() {
	if g.mode == modeCommitted {
		return
	}
	g.stopHoldLocked()
	if g.mode == modeHoldSuccess {
		g.stopIdleLocked()
	}
	dst := g.w.Header()
	delete(dst, "Server") // as reverse_proxy does: it sends Via instead
	var trailers []string
	if g.trailing {
		// the map holds trailers too: declared ones go after the status,
		// or net/http would send them twice
		trailers = g.header["Trailer"]
	}
	maps.Copy(dst, g.header)
	for _, v := range trailers {
		for _, k := range strings.Split(v, ",") {
			delete(dst, http.CanonicalHeaderKey(strings.TrimSpace(k)))
		}
	}
	status := g.status
	if status == 0 {
		status = http.StatusOK
	}
	if g.owner != nil {
		g.owner.committing(status, dst)
	}
	g.w.WriteHeader(status)
	for _, v := range trailers {
		for _, k := range strings.Split(v, ",") {
			k = http.CanonicalHeaderKey(strings.TrimSpace(k))
			if vv, ok := g.header[k]; ok {
				dst[k] = vv
			}
		}
	}
	g.mode = modeCommitted
	if status == http.StatusOK && !g.isStream && isJSON(g.header) {
		g.usageBody = heldPool.Get().(*bytes.Buffer)
	}
	if g.isStream {
		g.touch()
		g.startIdleWatch()
		g.shedHoldState()
	}
}

// shedHoldState lets go of what only holding needed, once a stream is
// committed: a stream may stay open for many minutes, and what it keeps is
// kept once per open stream. The next attempt that uses this gate makes a
// header map and hold timer anew.
func (g *gate) shedHoldState() {
	g.releaseInspectorLocked()
	g.header = nil // Header returns the client's from now on
	if !g.hold.armed && !g.timerMayRun {
		g.hold.t = nil // stopped before it could fire: nothing refers to it
	}
}

// writeHeld writes what was held to the client after commit and lets the
// buffer go: a long stream must not pin it until it ends. The caller holds
// wmu, not mu.
func (g *gate) writeHeld() (int, error) {
	if g.held == nil {
		return 0, nil
	}
	var n int
	var err error
	if g.held.Len() > 0 {
		if g.isStream {
			g.watchStream(g.held.Bytes())
			if g.encoding == "" {
				err = g.writeEvents(g.held.Bytes())
			} else {
				n, err = g.w.Write(g.held.Bytes())
			}
		} else {
			if g.usageBody != nil {
				g.keepForUsage(g.held.Bytes())
			}
			n, err = g.w.Write(g.held.Bytes())
		}
	}
	g.mu.Lock()
	g.releaseHeldLocked()
	g.mu.Unlock()
	return n, err
}

// flush sends what was written to the client. The caller holds wmu.
func (g *gate) flush() {
	_ = http.NewResponseController(g.w).Flush()
}

// Flush implements http.Flusher: a no-op while holding, so status and
// headers are not sent early.
func (g *gate) Flush() { _ = g.FlushError() }

// FlushError is what http.ResponseController.Flush looks for first. While
// holding it must not reach the client's writer.
func (g *gate) FlushError() error {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	committed := g.mode == modeCommitted
	g.mu.Unlock()
	if !committed {
		return nil
	}
	return http.NewResponseController(g.w).Flush()
}

// Unwrap gives http.ResponseController the client's writer once the
// response is committed, for Hijack (a 101 Switching Protocols: the
// WebSocket tunnel takes the client's connection) and deadlines. While
// holding there is nothing to unwrap to: nothing may reach the client.
func (g *gate) Unwrap() http.ResponseWriter {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode != modeCommitted {
		return nil
	}
	return g.w
}

// gateResult is what the handler learns when an attempt's reverse_proxy
// has returned.
type gateResult struct {
	committed bool
	verdict   classify.Verdict // meaningful when !committed, or for a held error passed through
	// held response of a failed attempt, kept in case no other provider
	// can answer: the client then gets the last real response.
	status int
	header http.Header
	body   *bytes.Buffer
	// bodyBroke: a success whose body broke before its end (nothing kept)
	bodyBroke bool
	// detail is why no response came, for the log only
	detail string
}

// finish decides what is still undecided once reverse_proxy returned.
// aborted says the upstream body broke (reverse_proxy panicked with
// http.ErrAbortHandler).
func (g *gate) finish(clientGone, aborted bool) gateResult {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	g.stopHoldLocked()
	g.stopIdleLocked()
	if clientGone && g.mode != modeCommitted {
		// nobody to answer: reverse_proxy's 499 is not a verdict
		g.mode = modeDiscarded
		g.status = 0
		g.releaseHeldLocked()
		g.releaseInspectorLocked()
		g.mu.Unlock()
		return gateResult{}
	}
	commit := false
	switch g.mode {
	case modeHoldError:
		g.decideErrorLocked()
		commit = g.mode == modeCommitted
	case modeHoldStream:
		// the stream ended while held: before any content or error
		if !aborted && (g.inspect.State() == streaminspect.Ended || g.inspect.State() == streaminspect.Content) {
			g.commitLocked()
			commit = true
		} else {
			g.verdict = &classify.Verdict{Class: classify.ServerError, ErrorType: "api_error",
				Message: "the upstream event stream ended before any content"}
			g.mode = modeDiscarded
		}
	case modeHoldSuccess:
		if !aborted && (g.length < 0 || int64(g.held.Len()) >= g.length) {
			g.commitLocked()
			commit = true
			break
		}
		// The body broke before its end: a failed attempt. Nothing of it
		// is kept: a cut success is no answer to give anyone.
		g.verdict = &classify.Verdict{Class: classify.ServerError, ErrorType: "api_error",
			Message: "the upstream connection broke before the response body was complete"}
		if g.stalled.Load() {
			g.verdict = &classify.Verdict{Class: classify.Unreachable, ErrorType: "api_error",
				Message: "the upstream stopped sending the response body"}
		}
		g.mode = modeDiscarded
		g.status = 0
		g.releaseHeldLocked()
		g.mu.Unlock()
		return gateResult{verdict: *g.verdict, bodyBroke: true}
	}
	g.mu.Unlock()
	if commit {
		g.writeHeld()
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.releaseInspectorLocked()
	end := gateResult{committed: g.mode == modeCommitted}
	if g.verdict != nil {
		end.verdict = *g.verdict
	}
	if g.mode == modeCommitted {
		g.releaseHeldLocked()
	} else if g.mode == modeDiscarded && g.status != 0 {
		end.status, end.header, end.body = g.status, g.header, g.held
		g.held, g.header = nil, nil // the handler keeps them
	}
	return end
}

func (g *gate) releaseHeldLocked() {
	releaseHeld(g.held)
	g.held = nil
}

func releaseHeld(b *bytes.Buffer) {
	if b != nil && b.Cap() <= 4*maxHeldError {
		b.Reset()
		heldPool.Put(b)
	}
}

func isJSON(h http.Header) bool {
	ct := h.Get("Content-Type")
	return strings.HasPrefix(ct, "application/json") || strings.Contains(ct, "+json")
}

func isEventStream(h http.Header) bool {
	// no mime.ParseMediaType: it allocates, and this runs on every response
	const sse = "text/event-stream"
	ct := strings.TrimSpace(h.Get("Content-Type"))
	return len(ct) >= len(sse) && strings.EqualFold(ct[:len(sse)], sse) &&
		(len(ct) == len(sse) || ct[len(sse)] == ';' || ct[len(sse)] == ' ')
}

// Interface guards
var (
	_ http.ResponseWriter                       = (*gate)(nil)
	_ http.Flusher                              = (*gate)(nil)
	_ interface{ Unwrap() http.ResponseWriter } = (*gate)(nil)
)
