package failover

import (
	"bytes"
	"context"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// gateMode is where an attempt's response stands.
type gateMode uint8

const (
	modeUndecided  gateMode = iota // no status yet
	modeHoldError                  // an error status: hold the body to classify it
	modeHoldStream                 // 200 text/event-stream: hold until the first events decide
	modeCommitted                  // written to the client; the rest streams through
	modeDiscarded                  // a failed attempt: swallow everything
)

// maxHeldError bounds how much of an error body is held. Error bodies are
// small; a larger one is classified by its first maxHeldError bytes.
const maxHeldError = 1 << 20

// gate is the ResponseWriter a provider's reverse_proxy writes to. It holds
// status, headers and body until a verdict: an error response is held
// whole and classified; an event stream is held until its first events
// prove it healthy; anything else is committed at once. A failed attempt
// is discarded and the client never sees a byte of it.
//
// A hold timer commits from its own goroutine, so every method locks.
type gate struct {
	mu     sync.Mutex
	w      http.ResponseWriter // the client's
	header http.Header         // this attempt's own header map, until commit
	status int
	mode   gateMode
	held   *bytes.Buffer

	hold     *holdPolicy
	inspect  streaminspect.Inspector
	encoding string // Content-Encoding of a held stream
	isStream bool   // the response is text/event-stream
	timer    *time.Timer

	// verdict is set when the gate itself decided the attempt failed
	// (an early stream error) or, for held error bodies, by finish.
	verdict    Verdict
	hasVerdict bool

	// after commit
	watch        streaminspect.Watcher
	streamFailed func(streaminspect.ErrorInfo) // an upstream error event after commit
	reportedErr  bool
	lastWrite    atomic.Int64 // unix nanos of the last upstream write, for the idle check
	stalled      atomic.Bool
	idle         *time.Timer

	// a committed non-streaming JSON success is kept (up to maxUsageBody)
	// to read its usage once it is complete
	usageBody *bytes.Buffer

	cancel   context.CancelFunc // stops the attempt's upstream request
	onCommit func(h http.Header)
	classify func(status int, h http.Header, body []byte) Verdict

	started                  time.Time
	sawEvent, sawContent     bool
	firstEvent, firstContent time.Duration
}

var heldPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func newGate(w http.ResponseWriter, hold *holdPolicy, cancel context.CancelFunc) *gate {
	return &gate{
		w:       w,
		header:  make(http.Header),
		hold:    hold,
		cancel:  cancel,
		started: time.Now(), // latency is measured on the real clock, never a test's
	}
}

// Header returns the attempt's own header map until commit and the
// client's after it (trailers are added after the body).
func (g *gate) Header() http.Header {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode == modeCommitted {
		return g.w.Header()
	}
	if g.mode == modeHoldStream && g.timer != nil {
		// The body is done and trailers follow: the timer must not copy
		// the map while reverse_proxy writes it. finish decides instead.
		g.timer.Stop()
	}
	return g.header
}

// WriteHeader decides how the response is handled.
func (g *gate) WriteHeader(status int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if status >= 100 && status < 200 {
		g.write1xx(status)
		return
	}
	if g.mode != modeUndecided {
		return
	}
	g.status = status
	switch {
	case status >= 400:
		g.mode = modeHoldError
		g.held = heldPool.Get().(*bytes.Buffer)
	case status == http.StatusOK && isEventStream(g.header):
		g.isStream = true
		if g.hold == nil || g.hold.Mode == HoldOff {
			g.commitLocked()
			return
		}
		g.mode = modeHoldStream
		g.held = heldPool.Get().(*bytes.Buffer)
		g.encoding = g.header.Get("Content-Encoding")
		g.inspect.Policy = g.hold.inspectPolicy()
		if g.hold.Wait > 0 {
			g.timer = time.AfterFunc(time.Duration(g.hold.Wait), g.holdExpired)
		}
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
	g.mu.Lock()
	if g.mode == modeUndecided {
		g.mu.Unlock()
		g.WriteHeader(http.StatusOK)
		g.mu.Lock()
	}
	defer g.mu.Unlock()
	switch g.mode {
	case modeCommitted:
		if g.isStream {
			g.lastWrite.Store(timeNow().UnixNano())
			g.watchLocked(p)
		} else if g.usageBody != nil {
			g.keepForUsageLocked(p)
		}
		return g.w.Write(p)
	case modeHoldError:
		room := min(len(p), maxHeldError-g.held.Len())
		g.held.Write(p[:room])
		if g.held.Len() < maxHeldError {
			return len(p), nil
		}
		// too long to hold whole: decide on what is held
		g.decideErrorLocked()
		if g.mode == modeCommitted && room < len(p) {
			if _, err := g.w.Write(p[room:]); err != nil {
				return room, err
			}
		}
		return len(p), nil
	case modeHoldStream:
		g.held.Write(p)
		g.inspectLocked(p)
		return len(p), nil
	}
	return len(p), nil // discarded
}

// inspectLocked feeds held stream bytes to the inspector and acts on its
// verdict.
func (g *gate) inspectLocked(p []byte) {
	var v streaminspect.Verdict
	if g.encoding == "" {
		v = g.inspect.Feed(p)
	} else {
		// A compressed stream is decoded from the start each time: the
		// held prefix is small (hold.Bytes) and this lasts only until the
		// first content event.
		decoded, err := decodeBody(g.encoding, g.held.Bytes(), maxHeldError)
		if err != nil {
			v = streaminspect.Pending
		} else {
			g.inspect = streaminspect.Inspector{Policy: g.hold.inspectPolicy()}
			v = g.inspect.Feed(decoded)
		}
	}
	if !g.sawEvent && g.inspect.Events() > 0 {
		g.sawEvent, g.firstEvent = true, time.Since(g.started)
	}
	switch v {
	case streaminspect.Content, streaminspect.Ended, streaminspect.Invalid:
		if v == streaminspect.Content {
			g.sawContent, g.firstContent = true, time.Since(g.started)
		}
		g.commitLocked()
		g.flushLocked()
	case streaminspect.Failed:
		ei := g.inspect.Error()
		g.verdict = Verdict{Class: ClassOfErrorType(ei.Type), ErrorType: ei.Type, Message: ei.Message}
		g.hasVerdict = true
		g.discardLocked()
	default:
		if g.hold.Bytes > 0 && g.held.Len() >= int(g.hold.Bytes) {
			g.commitLocked()
			g.flushLocked()
		}
	}
}

// decideErrorLocked classifies a held error response.
func (g *gate) decideErrorLocked() {
	if g.hasVerdict {
		return
	}
	body, _ := decodeBody(g.header.Get("Content-Encoding"), g.held.Bytes(), maxClassifiedBody)
	g.verdict = g.classify(g.status, g.header, body)
	g.hasVerdict = true
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
	if g.timer != nil {
		g.timer.Stop()
	}
	if g.cancel != nil {
		g.cancel()
	}
}

func (g *gate) holdExpired() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode == modeHoldStream {
		g.commitLocked()
		g.flushLocked()
	}
}

// commitLocked writes the held status, headers and body to the client.
func (g *gate) commitLocked() {
	if g.mode == modeCommitted {
		return
	}
	if g.timer != nil {
		g.timer.Stop()
	}
	dst := g.w.Header()
	delete(dst, "Server") // as reverse_proxy does: it sends Via instead
	maps.Copy(dst, g.header)
	if g.onCommit != nil {
		g.onCommit(dst)
	}
	status := g.status
	if status == 0 {
		status = http.StatusOK
	}
	g.w.WriteHeader(status)
	g.mode = modeCommitted
	if status == http.StatusOK && !g.isStream && isJSON(g.header) {
		g.usageBody = heldPool.Get().(*bytes.Buffer)
	}
	if g.held != nil && g.held.Len() > 0 {
		if g.isStream {
			g.watchLocked(g.held.Bytes())
		}
		_, _ = g.w.Write(g.held.Bytes())
	}
	// written: a long stream must not pin the held buffer until it ends
	g.releaseHeldLocked()
	if g.isStream {
		g.lastWrite.Store(timeNow().UnixNano())
		g.startIdleWatch()
	}
}

// watchLocked follows a committed stream for its terminal event, usage and
// an upstream error event. The error feeds the breaker before the client
// sees it, so the next request already skips the provider.
func (g *gate) watchLocked(p []byte) {
	if g.encoding != "" {
		return // a compressed stream is passed through without a decoder
	}
	g.watch.Feed(p)
	if g.streamFailed != nil && !g.reportedErr {
		if ei, failed := g.watch.Failed(); failed {
			g.reportedErr = true
			g.streamFailed(ei)
		}
	}
}

// startIdleWatch ends a committed stream whose upstream sends nothing for
// longer than the idle limit: the attempt is cancelled and the handler
// closes the client's stream with an error event.
func (g *gate) startIdleWatch() {
	if g.hold == nil || g.hold.Idle <= 0 {
		return
	}
	idle := time.Duration(g.hold.Idle)
	var check func()
	check = func() {
		since := time.Duration(timeNow().UnixNano() - g.lastWrite.Load())
		if since >= idle {
			g.stalled.Store(true)
			g.cancel()
			return
		}
		g.mu.Lock()
		g.idle.Reset(idle - since)
		g.mu.Unlock()
	}
	g.idle = time.AfterFunc(idle, check)
}

func (g *gate) flushLocked() {
	_ = http.NewResponseController(g.w).Flush()
}

// Flush implements http.Flusher: a no-op while holding, so status and
// headers are not sent early.
func (g *gate) Flush() { _ = g.FlushError() }

// FlushError is what http.ResponseController.Flush looks for first. While
// holding it must not reach the client's writer.
func (g *gate) FlushError() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.mode != modeCommitted {
		return nil
	}
	return http.NewResponseController(g.w).Flush()
}

// attemptEnd is what the handler learns when an attempt's reverse_proxy
// has returned.
type attemptEnd struct {
	committed bool
	verdict   Verdict // meaningful when !committed, or for a held error passed through
	// held response of a failed attempt, kept in case no other provider
	// can answer: the client then gets the last real response.
	status int
	header http.Header
	body   *bytes.Buffer
}

// finish decides what is still undecided once reverse_proxy returned.
func (g *gate) finish(clientGone bool) attemptEnd {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.timer != nil {
		g.timer.Stop()
	}
	if g.idle != nil {
		g.idle.Stop()
	}
	if clientGone && g.mode != modeCommitted {
		// nobody to answer: reverse_proxy's 499 is not a verdict
		g.mode = modeDiscarded
		g.status = 0
		g.releaseHeldLocked()
		return attemptEnd{}
	}
	switch g.mode {
	case modeHoldError:
		g.decideErrorLocked()
	case modeHoldStream:
		// the stream ended while held: before any content or error
		if g.inspect.Verdict() == streaminspect.Ended || g.inspect.Verdict() == streaminspect.Content {
			g.commitLocked()
		} else {
			g.verdict = Verdict{Class: ClassServerError, ErrorType: "api_error",
				Message: "the upstream event stream ended before any content"}
			g.hasVerdict = true
			g.mode = modeDiscarded
		}
	}
	end := attemptEnd{committed: g.mode == modeCommitted, verdict: g.verdict}
	if g.mode == modeCommitted {
		g.releaseHeldLocked()
	} else if g.mode == modeDiscarded && g.status != 0 {
		end.status, end.header, end.body = g.status, g.header, g.held
		g.held = nil
	}
	return end
}

func (g *gate) releaseHeldLocked() {
	releaseHeld(g.held)
	g.held = nil
}

// keepForUsageLocked keeps what the usage reader needs of a committed JSON
// body: its last usageTail bytes (usage comes last in Anthropic's and
// OpenAI's responses), or, when compressed, the whole body up to
// maxUsageBody, since a compressed tail cannot be decoded alone.
func (g *gate) keepForUsageLocked(p []byte) {
	b := g.usageBody
	if g.header.Get("Content-Encoding") != "" {
		if b.Len()+len(p) > maxUsageBody {
			g.releaseUsageLocked()
			return
		}
		b.Write(p)
		return
	}
	if len(p) >= usageTail {
		b.Reset()
		b.Write(p[len(p)-usageTail:])
		return
	}
	if over := b.Len() + len(p) - usageTail; over > 0 {
		kept := b.Bytes()[over:]
		b.Reset()
		b.Write(kept) // shifts within the same array: copy handles overlap
	}
	b.Write(p)
}

func (g *gate) releaseUsageLocked() {
	releaseHeld(g.usageBody)
	g.usageBody = nil
}

// usage returns the token usage of a committed response: from the stream's
// message_start/message_delta events, or the JSON body's usage object.
func (g *gate) usage() (streaminspect.Usage, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isStream {
		u := g.watch.Usage()
		return u, u != (streaminspect.Usage{})
	}
	if g.usageBody == nil {
		return streaminspect.Usage{}, false
	}
	defer g.releaseUsageLocked()
	body := g.usageBody.Bytes()
	if enc := g.header.Get("Content-Encoding"); enc != "" {
		var err error
		if body, err = decodeBody(enc, body, maxUsageBody); err != nil {
			return streaminspect.Usage{}, false
		}
	}
	return usageFromTail(body)
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
	_ http.ResponseWriter = (*gate)(nil)
	_ http.Flusher        = (*gate)(nil)
)
