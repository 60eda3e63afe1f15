package failover

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// cutConnection writes headers and the first n bytes of body, then drops
// the connection (a reset mid-body).
func cutConnection(w http.ResponseWriter, header http.Header, status int, body []byte, n int) {
	for k, v := range header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body[:n])
	w.(http.Flusher).Flush()
	panic(http.ErrAbortHandler) // net/http closes the connection without the rest
}

// A non-streaming 200 whose body breaks halfway is a failed attempt: the
// client gets the next provider's whole answer, never the cut one, and the
// broken provider cools as server_error.
func TestBrokenSuccessBodyFailsOver(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		msg := messageJSON("claude-sonnet-4-5", strings.Repeat("cut ", 4000))
		cutConnection(w, http.Header{"Content-Type": {"application/json"}}, http.StatusOK, msg, len(msg)/2)
	})
	b := newUpstream(t, "b", replyMessage("whole answer from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	msg, raw, err := sendMessage(sdkClient(p), "hi")
	if err != nil {
		t.Fatalf("SDK: %v", err)
	}
	if textOf(msg) != "whole answer from b" || raw.Header.Get("X-LLM-Provider") != "b" {
		t.Fatalf("answer %q from %q", textOf(msg), raw.Header.Get("X-LLM-Provider"))
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.ServerError {
		t.Fatalf("a: %s %s, want open server_error", s.State, s.LastClass)
	}
}

// A non-streaming 200 whose body stalls past idle_timeout fails over, and
// the provider cools as unreachable.
func TestStalledSuccessBodyFailsOver(t *testing.T) {
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		msg := messageJSON("claude-sonnet-4-5", "never finished")
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(msg)))
		_, _ = w.Write(msg[:len(msg)/2])
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	})
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock(), "\t\tstream {\n\t\t\tidle_timeout 300ms\n\t\t}\n"))
	msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != "from b" {
		t.Fatalf("SDK: %v %q", err, textOf(msg))
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.Unreachable {
		t.Fatalf("a: %s %s, want open unreachable", s.State, s.LastClass)
	}
}

// A HEAD answer (a client's preconnect) declares a length and has no
// body: it passes through and fails nothing over.
func TestHeadSuccessPassesThrough(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Content-Length", "1234")
		w.WriteHeader(200)
	})
	b := newUpstream(t, "b", replyMessage("b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	res, err := http.Head(p.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("X-LLM-Provider") != "a" || b.Hits() != 0 {
		t.Fatalf("%d from %q, b hits %d", res.StatusCode, res.Header.Get("X-LLM-Provider"), b.Hits())
	}
}

// A success larger than the hold bound is committed and copied through,
// whole, and its usage still counts.
func TestLargeSuccessPassesThrough(t *testing.T) {
	useFakeClock(t)
	text := strings.Repeat("large ", (maxHeldSuccess+512<<10)/6)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(messageJSON("claude-sonnet-4-5", text))
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != text {
		t.Fatalf("SDK: %v, %d bytes of text", err, len(textOf(msg)))
	}
}

// An upstream that drops in the middle of an event after commit: the
// closing error event starts at an event boundary, so the SDK's stream
// parser reads the proxy's error, not a broken JSON line.
func TestStreamCutMidEventEndsWithWellFormedError(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) {
			useFakeClock(t)
			a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
				evs := streamEvents("m", "half", "never")
				writeStream(w, evs[:4])
				next := evs[4]
				if split {
					// the event's first half arrives in a write of its own
					_, _ = io.WriteString(w, evs[4][:10])
					w.(http.Flusher).Flush()
					next = next[10:]
				}
				_, _ = io.WriteString(w, next[:len(next)/2])
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			})
			p := startProxy(t, failoverSite(a.providerBlock()))
			msg, types, err := streamRequest(t, sdkClient(p))
			if err == nil {
				t.Fatalf("no error; events %v", types)
			}
			if !strings.Contains(err.Error(), "llm_failover: the upstream connection broke mid-stream") {
				t.Fatalf("err = %v, want the proxy's error event read whole", err)
			}
			if textOf(&msg) != "half" {
				t.Fatalf("text before the error %q", textOf(&msg))
			}
		})
	}
}

// A line over 1 MiB after commit passes through and does not blind the
// watcher: the stream completes, nothing is appended, nothing is cooled.
func TestLongSSELineAfterCommit(t *testing.T) {
	useFakeClock(t)
	huge := strings.Repeat("long ", (3<<20)/10)
	a := newUpstream(t, "a", replyEvents(streamEvents("m", "short ", huge, " end")))
	p := startProxy(t, failoverSite(a.providerBlock()))
	res := post(t, p.URL+"/v1/messages", streamingRequest)
	raw := readAll(t, res)
	if want := strings.Join(streamEvents("m", "short ", huge, " end"), ""); raw != want {
		t.Fatalf("the stream changed on its way: %d bytes, want %d; ends %q", len(raw), len(want), raw[max(0, len(raw)-200):])
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed || s.LastClass != "" {
		t.Fatalf("a healthy provider was charged: %+v", s)
	}
	msg, _, err := streamRequest(t, sdkClient(p))
	if err != nil || textOf(&msg) != "short "+huge+" end" {
		t.Fatalf("SDK: %v, %d bytes", err, len(textOf(&msg)))
	}
}

// When every attempt failed, the client gets the last provider's answer
// with a Content-Length that matches the (cut) body it is sent.
func TestExhaustedLengthMatchesBody(t *testing.T) {
	useFakeClock(t)
	big := errorJSON("overloaded_error", strings.Repeat("o", 3<<20))
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(big)))
		w.WriteHeader(529)
		_, _ = w.Write(big)
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading the answer: %v after %d bytes (Content-Length %s)", err, len(body), res.Header.Get("Content-Length"))
	}
	if res.StatusCode != 529 || res.ContentLength != int64(len(body)) || len(body) == 0 {
		t.Fatalf("status %d, Content-Length %d, body %d bytes", res.StatusCode, res.ContentLength, len(body))
	}
}

// An invalid_request_error event before any content is the request's
// fault: the client gets it as sent, no provider cools, none is tried.
func TestInStreamInvalidRequestPassesThrough(t *testing.T) {
	useFakeClock(t)
	events := []string{
		streamEvents("m")[0],
		sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "invalid_request_error", "message": "messages: bad block"}}),
	}
	a := newUpstream(t, "a", replyEvents(events))
	b := newUpstream(t, "b", replyEvents(streamEvents("m", "from b")))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	_, _, err := streamRequest(t, sdkClient(p))
	if err == nil || !strings.Contains(err.Error(), "messages: bad block") {
		t.Fatalf("err = %v, want the provider's invalid_request_error", err)
	}
	raw := readAll(t, post(t, p.URL+"/v1/messages", streamingRequest))
	if raw != strings.Join(events, "") {
		t.Fatalf("the client got %q", raw)
	}
	if b.Hits() != 0 {
		t.Fatalf("b was tried %d times for the request's own fault", b.Hits())
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed || s.LastClass != "" {
		t.Fatalf("a was cooled for the request's fault: %+v", s)
	}
}

// steppingClock is a wall clock that jumps forward an hour on every read:
// NTP steps and laptops waking up, at their worst.
func useSteppingClock(t *testing.T) {
	t.Helper()
	var mu sync.Mutex
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	f := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Hour)
		return now
	}
	clockOverride.Store(&f)
	t.Cleanup(func() { clockOverride.Store(nil) })
}

// The idle watch measures silence on the monotonic clock: wall-clock
// steps far over idle_timeout do not end a healthy stream.
func TestIdleWatchIgnoresWallClockSteps(t *testing.T) {
	useSteppingClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		evs := streamEvents("m", "a", "b", "c", "d", "e", "f", "g", "h")
		writeStream(w, evs[:4])
		for _, ev := range evs[4:] {
			// well inside idle_timeout, for longer than it in all
			tick := time.NewTimer(60 * time.Millisecond)
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	})
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\tstream {\n\t\t\tidle_timeout 250ms\n\t\t}\n"))
	msg, _, err := streamRequest(t, sdkClient(p))
	if err != nil || textOf(&msg) != "abcdefgh" {
		t.Fatalf("a healthy stream was ended: %v, text %q", err, textOf(&msg))
	}
}

// A WebSocket through wrap mode: the 101 reaches the client and the
// connection is handed over; bytes flow both ways through the tunnel.
func TestWebSocketThroughWrapMode(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			w.WriteHeader(400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")
		_ = brw.Flush()
		// echo one line back, upper-cased
		line, err := brw.ReadString('\n')
		if err != nil {
			return
		}
		_, _ = brw.WriteString(strings.ToUpper(line))
		_ = brw.Flush()
	})
	p := startProxy(t, wrapSite(a))
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(p.URL, "http://"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET /ws HTTP/1.1\r\nHost: "+strings.TrimPrefix(p.URL, "http://")+"\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("reading the upgrade answer: %v", err)
	}
	if res.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("status %d %v %q hits %d", res.StatusCode, res.Header, b, a.Hits())
	}
	_, _ = io.WriteString(conn, "hello through the tunnel\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HELLO THROUGH THE TUNNEL\n" {
		t.Fatalf("tunnel: %q %v", line, err)
	}
}

// A gzip-compressed error body is decoded before it is classified: a 403
// whose compressed body speaks of billing is quota, not auth.
func TestCompressedErrorBodyIsClassified(t *testing.T) {
	useFakeClock(t)
	gz := func(status int, body []byte) func(w http.ResponseWriter, r *http.Request, _ []byte) {
		return func(w http.ResponseWriter, r *http.Request, _ []byte) {
			var buf bytes.Buffer
			zw := gzip.NewWriter(&buf)
			_, _ = zw.Write(body)
			_ = zw.Close()
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(status)
			_, _ = w.Write(buf.Bytes())
		}
	}
	a := newUpstream(t, "a", gz(403, errorJSON("billing_error", "This organization has been disabled for billing reasons")))
	c := newUpstream(t, "c", gz(429, errorJSON("rate_limit_error", "slow down")))
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), c.providerBlock(), b.providerBlock()))
	// the SDK sends Accept-Encoding like Claude Code does
	msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"),
		option.WithHeader("Accept-Encoding", "gzip, deflate, br, zstd"))
	if err != nil || textOf(msg) != "from b" {
		t.Fatalf("got %v %v", msg, err)
	}
	if s := snapshot(t, "a"); s.LastClass != classify.Quota {
		t.Fatalf("a: %s, want quota", s.LastClass)
	}
	if s := snapshot(t, "c"); s.LastClass != classify.RateLimit {
		t.Fatalf("c: %s, want rate_limit", s.LastClass)
	}
}
