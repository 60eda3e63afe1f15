package failover

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// newGate returns a gate for one attempt, outside the attempt pool the
// handler takes gates from; owner may be nil (nothing is classified: an
// error response is passed through).
func newGate(w http.ResponseWriter, stream *StreamConfig, cancel context.CancelFunc, owner gateOwner) *gate {
	g := new(gate)
	g.reset(w, stream, cancel, owner)
	return g
}

// testHold is a stream policy for gate tests: no timers unless a test
// sets them.
func testHold() *StreamConfig {
	return &StreamConfig{Hold: HoldFirstContent, HoldBytes: 64 << 10, IdleTimeout: -1}
}

// gateServer serves each request by driving a fresh gate the way
// reverse_proxy does, with drive.
func gateServer(t *testing.T, hold *StreamConfig, drive func(g *gate, r *http.Request)) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g := newGate(w, hold, func() {}, nil)
		drive(g, r)
		g.finish(false, false)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// 1xx answers reach the client before the final one, and their headers do
// not leak into it.
func TestGatePasses1xx(t *testing.T) {
	srv := gateServer(t, testHold(), func(g *gate, r *http.Request) {
		g.Header().Set("Link", "</style.css>; rel=preload")
		g.WriteHeader(http.StatusEarlyHints)
		g.Header().Set("Content-Type", "application/json")
		_, _ = g.Write([]byte(`{"ok":true}`))
	})
	var got1xx []int
	var link string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		got1xx = append(got1xx, code)
		link = h.Get("Link")
		return nil
	}}
	req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, srv.URL, nil)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, res)
	if len(got1xx) != 1 || got1xx[0] != http.StatusEarlyHints || link == "" {
		t.Fatalf("1xx %v link %q", got1xx, link)
	}
	if res.StatusCode != 200 || body != `{"ok":true}` || res.Header.Get("Link") != "" {
		t.Fatalf("final %d %q %v", res.StatusCode, body, res.Header)
	}
}

// A 101 commits at once, and the connection can be taken over through
// http.ResponseController (Unwrap) — but not before anything was sent.
func TestGateSwitchingProtocols(t *testing.T) {
	hijackErr := make(chan error, 2)
	srv := gateServer(t, testHold(), func(g *gate, r *http.Request) {
		if _, _, err := http.NewResponseController(g).Hijack(); !errors.Is(err, http.ErrNotSupported) {
			hijackErr <- errors.New("a holding gate let its connection be taken")
			return
		}
		g.Header().Set("Upgrade", "test")
		g.Header().Set("Connection", "Upgrade")
		g.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(g).Hijack()
		hijackErr <- err
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("tunnel open\n")
		_ = brw.Flush()
	})
	conn, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: test\r\nConnection: Upgrade\r\n\r\n")
	br := bufio.NewReader(conn)
	res, err := http.ReadResponse(br, nil)
	if err != nil || res.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("%v %v", res, err)
	}
	if err := <-hijackErr; err != nil {
		t.Fatalf("hijack after 101: %v", err)
	}
	if line, err := br.ReadString('\n'); line != "tunnel open\n" {
		t.Fatalf("after 101: %q %v", line, err)
	}
}

// Trailers written after a held body go out as trailers, not headers.
func TestGateTrailersOfHeldResponse(t *testing.T) {
	srv := gateServer(t, testHold(), func(g *gate, r *http.Request) {
		g.Header().Set("Content-Type", "application/json")
		g.Header().Add("Trailer", "X-Checksum")
		g.WriteHeader(http.StatusOK)
		_, _ = g.Write([]byte(`{"ok":true}`))
		// as reverse_proxy does once the body is copied
		g.Header().Set("X-Checksum", "abc")
		g.Header()[http.TrailerPrefix+"X-Late"] = []string{"z"}
	})
	res, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body := readAll(t, res)
	if body != `{"ok":true}` || res.Header.Get("X-Checksum") != "" {
		t.Fatalf("body %q header %v", body, res.Header)
	}
	if res.Trailer.Get("X-Checksum") != "abc" || res.Trailer.Get("X-Late") != "z" {
		t.Fatalf("trailers %v", res.Trailer)
	}
}

// Once reverse_proxy asked for the header map to write trailers, a hold
// timer that fires late must not commit (it would copy the map while it is
// written, and the trailers would be lost): finish decides.
func TestGateHoldTimerAfterTrailers(t *testing.T) {
	g, rec := heldStreamWithTrailer(time.Hour, streamEvents("m")[0]) // message_start: still held
	g.holdExpired()                                                  // the timer fired just as the map was handed out
	g.mu.Lock()
	mode := g.mode
	g.mu.Unlock()
	if mode != modeHoldStream || rec.Code != http.StatusOK || rec.Body.Len() != 0 || len(rec.Header()) != 0 {
		t.Fatalf("the timer committed after trailers began: mode %d, client got %d %v %q", mode, rec.Code, rec.Header(), rec.Body)
	}
	if end := g.finish(false, false); end.committed {
		t.Fatal("a stream that ended before content was committed")
	}
}

// heldStreamWithTrailer plays reverse_proxy holding a stream (hold timer
// set to holdWait) that wrote first and then asked for the header map to
// add a trailer.
func heldStreamWithTrailer(holdWait time.Duration, first string) (*gate, *httptest.ResponseRecorder) {
	hold := testHold()
	hold.HoldWait = caddy.Duration(holdWait)
	rec := httptest.NewRecorder()
	g := newGate(rec, hold, func() {}, nil)
	g.Header().Set("Content-Type", "text/event-stream")
	g.WriteHeader(http.StatusOK)
	_, _ = g.Write([]byte(first))
	g.Header().Set("X-Trailer", "v")
	return g, rec
}

// errWriter is a client that went away: every write fails.
type errWriter struct{ http.ResponseWriter }

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

// A client write error reaches reverse_proxy, and leaves the gate usable.
func TestGateClientWriteError(t *testing.T) {
	for _, ct := range []string{"text/event-stream", "application/json"} {
		hold := testHold()
		hold.Hold = HoldOff
		g := newGate(errWriter{httptest.NewRecorder()}, hold, func() {}, nil)
		g.Header().Set("Content-Type", ct)
		g.Header().Set("Content-Length", "9")
		g.WriteHeader(http.StatusOK)
		if _, err := g.Write([]byte("data: x\n\n")); err == nil {
			t.Fatalf("%s: the client's write error was swallowed", ct)
		}
		done := make(chan struct{})
		go func() { g.finish(false, false); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: finish blocked after a write error", ct)
		}
	}
}

// blockingWriter is a client that stopped reading: Write blocks.
type blockingWriter struct {
	http.ResponseWriter
	entered chan struct{}
	release chan struct{}
	once    sync.Once
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	return len(p), nil
}

// A client that stops reading blocks reverse_proxy's write, never the idle
// watch.
func TestGateIdleWatchNotParkedByClient(t *testing.T) {
	hold := testHold()
	hold.Hold, hold.IdleTimeout = HoldOff, caddy.Duration(time.Hour)
	w := &blockingWriter{ResponseWriter: httptest.NewRecorder(), entered: make(chan struct{}), release: make(chan struct{})}
	defer close(w.release)
	g := newGate(w, hold, func() {}, nil)
	g.Header().Set("Content-Type", "text/event-stream")
	g.WriteHeader(http.StatusOK)
	go func() { _, _ = g.Write([]byte(streamEvents("m")[0])) }()
	<-w.entered
	checked := make(chan struct{})
	go func() { g.checkIdle(); close(checked) }()
	select {
	case <-checked:
	case <-time.After(5 * time.Second):
		t.Fatal("the idle watch waited on a client that does not read")
	}
	g.mu.Lock()
	g.stopIdleLocked()
	g.mu.Unlock()
}

// A hold timer that fires while reverse_proxy finishes (trailers, finish)
// either commits first or not at all: under -race, nothing is shared
// unlocked, and what the client got is whole.
func TestGateHoldTimerVersusFinish(t *testing.T) {
	first := streamEvents("m")[0]
	for range 200 {
		g, rec := heldStreamWithTrailer(time.Microsecond, first)
		end := g.finish(false, false)
		g.wmu.Lock()
		body := rec.Body.String()
		g.wmu.Unlock()
		if end.committed != (body == first) || (!end.committed && body != "") {
			t.Fatalf("committed %v, client got %q", end.committed, body)
		}
	}
}

// discardWriter is a client that takes everything.
type discardWriter struct{ h http.Header }

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) WriteHeader(int)             {}
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) Flush()                      {}

// BenchmarkGateJSON100KB is the gate's share of a 100 KB non-streaming
// answer, written as reverse_proxy does (32 KiB at a time, no length).
func BenchmarkGateJSON100KB(b *testing.B) {
	body := []byte(`{"type":"message","content":[{"type":"text","text":"` + strings.Repeat("x", 100<<10) + `"}],"usage":{"input_tokens":1,"output_tokens":2}}`)
	hold := testHold()
	hold.IdleTimeout = caddy.Duration(5 * time.Minute)
	w := &discardWriter{h: make(http.Header)}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		clear(w.h)
		g := newGate(w, hold, func() {}, nil)
		g.Header().Set("Content-Type", "application/json")
		g.WriteHeader(http.StatusOK)
		for i := 0; i < len(body); i += 32 << 10 {
			_, _ = g.Write(body[i:min(i+32<<10, len(body))])
		}
		gateFinish(g)
		_, _ = g.usage()
	}
}

func gateFinish(g *gate) { g.finish(false, false) }
