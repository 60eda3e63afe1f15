package failover

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Bounds of the request body.
const (
	// initialBodyBuffer is the first allocation for a body; the buffer
	// doubles only as bytes arrive, so a declared Content-Length claims
	// nothing by itself.
	initialBodyBuffer = 16 << 10
	// maxRequestBuffer is the largest request_buffer accepted.
	maxRequestBuffer = 1 << 30
	// defaultBodyTimeout bounds the time to receive a whole request body.
	defaultBodyTimeout = time.Minute
	// refusedBodyDrain and refusedBodyDrainTime bound what is read (and
	// dropped) of a body over request_buffer before the 413 is written:
	// a client that sends its whole body before reading would otherwise
	// see the connection reset instead of the answer.
	refusedBodyDrain     = 4 << 20
	refusedBodyDrainTime = 5 * time.Second
	// maxPooledBody keeps a rare multi-MB body's buffer out of the pool.
	maxPooledBody = 4 << 20
)

// requestBody is a pooled request body buffer.
type requestBody struct {
	b        []byte
	reserved int64 // bytes counted against the handler's RequestBufferTotal
}

var bodyPool = sync.Pool{New: func() any { return new(requestBody) }}

func (h *Handler) releaseBody(rb *requestBody) {
	if rb == nil {
		return
	}
	reserved := rb.reserved
	rb.reserved = 0
	if cap(rb.b) <= maxPooledBody {
		if reserved != 0 {
			h.buffered.Add(-reserved)
		}
		rb.b = rb.b[:0]
		bodyPool.Put(rb)
		return
	}
	// a big buffer is garbage now, and counted until collected
	h.dropped(reserved)
}

// releaseRequestBody gives back the buffer of a request that was served:
// to the pool once every attempt's transport has closed its reader over
// it, else as garbage, counted until collected. A transport that got its
// answer before it wrote the whole body may still be writing from the
// buffer for a moment after the attempt returned.
func (h *Handler) releaseRequestBody(rb *requestBody, open *atomic.Int32) {
	if open.Load() > 0 {
		unpooledWhileOpen.Add(1)
		h.dropBody(rb)
		return
	}
	h.releaseBody(rb)
}

// unpooledWhileOpen counts the buffers kept out of the pool because a
// transport had not closed its reader over them yet.
var unpooledWhileOpen atomic.Uint64

// dropBody lets go of the buffer of a body that was not received whole
// (refused, timed out, broken) without pooling it: many such bodies at
// once (a crowd past request_buffer_total) would fill the pool with
// buffers no budget counts. It is garbage, counted until collected.
func (h *Handler) dropBody(rb *requestBody) {
	h.dropped(rb.reserved)
	rb.reserved, rb.b = 0, nil
}

// Waiting for room in RequestBufferTotal.
const (
	bufferRoomWait = 250 * time.Millisecond
	bufferRoomPoll = 10 * time.Millisecond
)

// reserveBuffer counts n more bytes of a body against RequestBufferTotal,
// waiting up to bufferRoomWait for room (and asking for the collection of
// dropped buffers that would make it). It reports whether they fit.
func (h *Handler) reserveBuffer(rb *requestBody, n int64) bool {
	if n <= 0 || h.buffered == nil {
		return true
	}
	var deadline time.Time
	for {
		if cur := h.buffered.Load(); cur+n <= h.RequestBufferTotal {
			if h.buffered.CompareAndSwap(cur, cur+n) {
				rb.reserved += n
				return true
			}
			continue
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(bufferRoomWait)
		} else if time.Now().After(deadline) {
			return false
		}
		uncollected.collect(false)
		time.Sleep(bufferRoomPoll)
	}
}

// Dropped buffers count until collected. The Go runtime collects when its
// heap has grown by as much as was live after its last collection: with
// request_buffer_total held by bodies, the heap could reach twice that
// before dropped buffers (a body answered or refused, a buffer outgrown as
// it doubled) were collected. So a dropped buffer stays counted against
// request_buffer_total after it is dropped, until a collection the proxy
// asks for once dropBeforeCollect bytes are dropped, or once a body waits
// for room they hold: what bodies hold, live or not yet collected, stays
// within the budget. A collection runs in the background, one at a time,
// and costs little here (bytes hold no pointers to follow); it also gives
// the freed memory back to the system (debug.FreeOSMemory), which the
// runtime would otherwise keep for a heap it expects to grow back.
const dropBeforeCollect = 32 << 20

// Forced collections are spaced: a crowd of bodies that wait for room
// while others drop what they outgrow would otherwise have the proxy
// collect back to back, a core spent on collections for as long as the
// crowd keeps coming. The next one starts collectGapFactor times as long
// after one as it took, at least minCollectGap after it (at most 20 a
// second, a tenth of a core while one takes under 14 ms), and at most
// maxCollectGap after it: a body that waits bufferRoomWait for room must
// see a collection give back what the garbage holds, or a crowd of big
// bodies is refused whole while the budget holds nothing but garbage.
const (
	collectGapFactor = 9
	minCollectGap    = 50 * time.Millisecond
	maxCollectGap    = bufferRoomWait / 2
)

// uncollected is the bytes of dropped buffers, per handler's counter,
// still counted against its request_buffer_total.
var uncollected collector

type collector struct {
	mu      sync.Mutex
	pending map[*atomic.Int64]int64
	total   int64
	running bool
	// notBefore is when the next collection may start
	notBefore time.Time
}

// dropped notes that n bytes counted on h's budget are garbage now.
func (h *Handler) dropped(n int64) {
	if n <= 0 || h.buffered == nil {
		return
	}
	c := &uncollected
	c.mu.Lock()
	if c.pending == nil {
		c.pending = make(map[*atomic.Int64]int64)
	}
	c.pending[h.buffered] += n
	c.total += n
	c.mu.Unlock()
	c.collect(true)
}

// collect starts a collection of what is pending, unless one runs or
// waits to run; when onlyPast, only once dropBeforeCollect bytes are
// pending.
func (c *collector) collect(onlyPast bool) {
	c.mu.Lock()
	if c.running || c.total == 0 || (onlyPast && c.total < dropBeforeCollect) {
		c.mu.Unlock()
		return
	}
	c.running = true
	c.mu.Unlock()
	go c.run()
}

// run collects, once the gap after the last collection has passed, what
// is pending by then.
func (c *collector) run() {
	c.mu.Lock()
	wait := time.Until(c.notBefore)
	c.mu.Unlock()
	if wait > 0 {
		time.Sleep(wait)
	}
	c.mu.Lock()
	taken := c.pending
	c.pending, c.total = nil, 0
	c.mu.Unlock()
	start := time.Now()
	debug.FreeOSMemory()
	took := time.Since(start)
	for counter, n := range taken {
		counter.Add(-n)
	}
	c.mu.Lock()
	c.running = false
	c.notBefore = time.Now().Add(min(maxCollectGap, max(minCollectGap, collectGapFactor*took)))
	c.mu.Unlock()
	c.collect(true) // what was dropped meanwhile
}

// bodyResult is how reading a request body ended.
type bodyResult uint8

const (
	bodyComplete   bodyResult = iota
	bodyTooLarge              // over request_buffer (or Caddy's request_body max_size)
	bodyTimedOut              // not received within body_timeout
	bodyBroken                // the client's connection failed
	bodyOverBudget            // no room in request_buffer_total
)

// readBody buffers the request body once, up to RequestBuffer bytes and
// within BodyTimeout. The buffer grows only as bytes arrive.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (*requestBody, bodyResult, error) {
	rb := bodyPool.Get().(*requestBody)
	rb.b = rb.b[:0]
	if r.Body == nil || r.Body == http.NoBody {
		return rb, bodyComplete, nil
	}
	if !h.reserveBuffer(rb, int64(cap(rb.b))) {
		rb.b = nil // a pooled buffer with no room for it: start anew
	}
	limit := h.RequestBuffer
	if r.ContentLength > limit {
		return rb, bodyTooLarge, nil
	}
	deadline := time.Now().Add(h.bodyTimeout(r))
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(deadline) == nil {
		// the ceiling is this handler's: lift it once the body is in,
		// so it never cuts a later read (or cancels the request)
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	b := rb.b
	for {
		if len(b) == cap(b) {
			grown, old := bodyCapacity(b, r.ContentLength, limit), int64(cap(b))
			// the outgrown buffer stays counted until collected, so the
			// new one needs room beside it; only where the budget could
			// never hold both (a body near request_buffer_total) does it
			// take the old one's room, passing the budget until collected
			strict := old+grown <= h.RequestBufferTotal
			need := grown
			if !strict {
				need = grown - old
			}
			if !h.reserveBuffer(rb, need) {
				return rb, bodyOverBudget, nil
			}
			b = growBody(b, grown)
			rb.b = b
			if h.buffered != nil && old > 0 {
				if strict {
					rb.reserved -= old
				} else {
					h.buffered.Add(old)
				}
				h.dropped(old)
			}
		}
		n, err := r.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		rb.b = b
		if int64(len(b)) > limit {
			return rb, bodyTooLarge, nil
		}
		if errors.Is(err, io.EOF) {
			return rb, bodyComplete, nil
		}
		if err != nil {
			var tooLarge *http.MaxBytesError
			switch {
			case errors.As(err, &tooLarge):
				return rb, bodyTooLarge, nil
			case errors.Is(err, os.ErrDeadlineExceeded):
				return rb, bodyTimedOut, err
			}
			return rb, bodyBroken, err
		}
		// where read deadlines are not supported, a client that trickles
		// bytes is still caught between reads
		if time.Now().After(deadline) {
			return rb, bodyTimedOut, os.ErrDeadlineExceeded
		}
	}
}

// growBody returns b grown to capacity want.
func growBody(b []byte, want int64) []byte {
	grown := make([]byte, len(b), want)
	copy(grown, b)
	return grown
}

// bodyCapacity is the capacity b grows to for more bytes: double (at
// least initialBodyBuffer), never past the declared length or the limit,
// plus the one byte that reveals the end (or a body over the limit).
func bodyCapacity(b []byte, declared, limit int64) int64 {
	want := int64(2 * cap(b))
	if want < initialBodyBuffer {
		want = initialBodyBuffer
	}
	most := limit + 1
	if declared >= 0 && declared+1 < most {
		most = declared + 1
	}
	if want > most {
		want = most
	}
	if want <= int64(len(b)) {
		want = int64(len(b)) + 1
	}
	return want
}

// bodyTimeout is how long the body may take: body_timeout, or the
// server's own read_body timeout when that is shorter.
func (h *Handler) bodyTimeout(r *http.Request) time.Duration {
	d := time.Duration(h.BodyTimeout)
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok &&
		srv.ReadTimeout > 0 && srv.ReadTimeout < d {
		d = srv.ReadTimeout
	}
	return d
}

// refuseBody answers a request whose body was not received whole: 413
// for a body over request_buffer, 408 for one that took longer than
// body_timeout, both in Anthropic's error format.
func (h *Handler) refuseBody(w http.ResponseWriter, r *http.Request, client *Client, res bodyResult) {
	h.setAnswerHeaders(w.Header(), timeNow(), client, "", 0, nil)
	switch res {
	case bodyTooLarge:
		// a client that asked first (Expect: 100-continue) and declared
		// too much has sent nothing yet: reading would tell it to go on
		unasked := r.ContentLength > h.RequestBuffer && strings.EqualFold(r.Header.Get("Expect"), "100-continue")
		if (unasked || !drainRefused(w, r)) && r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		writeAnthropicError(w, http.StatusRequestEntityTooLarge, "request_too_large",
			fmt.Sprintf("llm_failover: request body exceeds request_buffer (%d bytes)", h.RequestBuffer))
	case bodyOverBudget:
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		w.Header().Set("Retry-After", "1")
		writeAnthropicError(w, 529, "overloaded_error",
			"llm_failover: the proxy is receiving too many request bodies at once (request_buffer_total); retry shortly")
	case bodyTimedOut:
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		writeAnthropicError(w, http.StatusRequestTimeout, "timeout_error",
			fmt.Sprintf("llm_failover: the request body did not arrive within %s (body_timeout)", h.bodyTimeout(r)))
	}
}

// drainRefused reads and drops what is left of a refused body, up to
// refusedBodyDrain bytes within refusedBodyDrainTime, so that a client
// that writes its whole body before reading gets to read the answer. It
// reports whether the body was read to its end (the connection can then
// be kept).
func drainRefused(w http.ResponseWriter, r *http.Request) bool {
	if r.Body == nil || r.Body == http.NoBody {
		return true
	}
	deadline := time.Now().Add(refusedBodyDrainTime)
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(deadline) == nil {
		defer func() { _ = rc.SetReadDeadline(time.Time{}) }()
	}
	for left := int64(refusedBodyDrain); left > 0; {
		n, err := io.CopyN(io.Discard, r.Body, min(left, 64<<10))
		left -= n
		if errors.Is(err, io.EOF) {
			return true
		}
		if err != nil || time.Now().After(deadline) {
			return false
		}
	}
	return false
}

// validBodyBounds checks request_buffer and body_timeout.
func validBodyBounds(buffer int64, timeout caddy.Duration) error {
	if buffer < 0 || buffer > maxRequestBuffer {
		return fmt.Errorf("request_buffer: %d bytes is out of range: write a size from 1 byte to 1GiB, such as 32MiB", buffer)
	}
	if timeout < 0 {
		return fmt.Errorf("body_timeout: %s is negative: write a positive duration such as 1m", time.Duration(timeout))
	}
	return nil
}
