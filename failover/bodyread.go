package failover

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
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
type requestBody struct{ b []byte }

var bodyPool = sync.Pool{New: func() any { return new(requestBody) }}

func releaseBody(rb *requestBody) {
	if rb != nil && cap(rb.b) <= maxPooledBody {
		rb.b = rb.b[:0]
		bodyPool.Put(rb)
	}
}

// bodyResult is how reading a request body ended.
type bodyResult uint8

const (
	bodyComplete bodyResult = iota
	bodyTooLarge            // over request_buffer (or Caddy's request_body max_size)
	bodyTimedOut            // not received within body_timeout
	bodyBroken              // the client's connection failed
)

// readBody buffers the request body once, up to RequestBuffer bytes and
// within BodyTimeout. The buffer grows only as bytes arrive.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) (*requestBody, bodyResult, error) {
	rb := bodyPool.Get().(*requestBody)
	rb.b = rb.b[:0]
	if r.Body == nil || r.Body == http.NoBody {
		return rb, bodyComplete, nil
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
			b = growBody(b, r.ContentLength, limit)
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

// growBody returns b with room for more bytes: double the capacity (at
// least initialBodyBuffer), never past the declared length or the limit,
// plus the one byte that reveals the end (or a body over the limit).
func growBody(b []byte, declared, limit int64) []byte {
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
	grown := make([]byte, len(b), want)
	copy(grown, b)
	return grown
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
	h.setAnswerHeaders(w.Header(), client, "", 0, nil)
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
