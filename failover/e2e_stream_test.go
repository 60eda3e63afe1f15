package failover

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"go.uber.org/goleak"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// streamRequest is the SDK's streaming call, returning the accumulated
// message, the event types it saw and the stream's error.
func streamRequest(t *testing.T, c *anthropic.Client, opts ...option.RequestOption) (anthropic.Message, []string, error) {
	t.Helper()
	stream := c.Messages.NewStreaming(context.Background(), userMessage("hi"), opts...)
	defer stream.Close()
	var msg anthropic.Message
	var types []string
	for stream.Next() {
		ev := stream.Current()
		types = append(types, ev.Type)
		if err := msg.Accumulate(ev); err != nil {
			return msg, types, err
		}
	}
	return msg, types, stream.Err()
}

// The first provider starts a stream and then sends overloaded_error: the
// client sees only the second provider's stream, complete.
func TestEarlyStreamErrorFailsOver(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		writeStream(w, []string{
			streamEvents("claude-sonnet-4-5")[0], // message_start
			sseEvent("ping", map[string]any{"type": "ping"}),
			sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded"}}),
		})
	})
	b := newUpstream(t, "b", replyEvents(streamEvents("claude-sonnet-4-5", "from ", "b")))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	var raw *http.Response
	msg, types, err := streamRequest(t, sdkClient(p), option.WithResponseInto(&raw))
	if err != nil {
		t.Fatalf("stream error: %v", err)
	}
	if textOf(&msg) != "from b" || types[len(types)-1] != "message_stop" {
		t.Fatalf("text %q types %v", textOf(&msg), types)
	}
	starts := 0
	for _, ty := range types {
		if ty == "message_start" {
			starts++
		}
	}
	if starts != 1 {
		t.Fatalf("the client saw %d message_start events: a's failed stream leaked", starts)
	}
	if raw.Header.Get("X-LLM-Provider") != "b" || raw.Header.Get("X-LLM-Attempts") != "2" {
		t.Fatalf("headers %v", raw.Header)
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.Overloaded {
		t.Fatalf("a: %s %s, want open overloaded", s.State, s.LastClass)
	}
}

// The class of an early stream error is its own error.type, not a fixed one.
func TestEarlyStreamErrorClassComesFromItsType(t *testing.T) {
	for errType, want := range map[string]Class{
		"rate_limit_error":     classify.RateLimit,
		"authentication_error": classify.Auth,
		"api_error":            classify.ServerError,
		"overloaded_error":     classify.Overloaded,
	} {
		t.Run(errType, func(t *testing.T) {
			useFakeClock(t)
			a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
				// no event field: an untyped data payload with "type":"error"
				writeStream(w, []string{`data: {"type":"error","error":{"type":"` + errType + `","message":"x"}}` + "\n\n"})
			})
			b := newUpstream(t, "b", replyEvents(streamEvents("m", "ok")))
			p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
			if msg, _, err := streamRequest(t, sdkClient(p)); err != nil || textOf(&msg) != "ok" {
				t.Fatalf("%q %v", textOf(&msg), err)
			}
			if s := snapshot(t, "a"); s.LastClass != want {
				t.Fatalf("class %s, want %s", s.LastClass, want)
			}
		})
	}
}

// An error event after content has been delivered passes through to the
// client, and the provider is cooled for later requests.
func TestLateStreamErrorPassesThroughAndCools(t *testing.T) {
	useFakeClock(t)
	events := streamEvents("m", "partial")
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		writeStream(w, append(events[:4:4],
			sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded mid-stream"}})))
	})
	b := newUpstream(t, "b", replyEvents(streamEvents("m", "from b")))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	msg, _, err := streamRequest(t, sdkClient(p))
	if err == nil || !strings.Contains(err.Error(), "Overloaded mid-stream") {
		t.Fatalf("err = %v, want the upstream's error event", err)
	}
	if textOf(&msg) != "partial" {
		t.Fatalf("text before the error: %q", textOf(&msg))
	}
	if b.Hits() != 0 {
		t.Fatal("a committed stream must not be replayed")
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.Overloaded {
		t.Fatalf("a: %s %s", s.State, s.LastClass)
	}
	if msg, _, err := streamRequest(t, sdkClient(p)); err != nil || textOf(&msg) != "from b" {
		t.Fatalf("next request: %q %v, want b", textOf(&msg), err)
	}
	if a.Hits() != 1 {
		t.Fatalf("a hits %d: the cooling provider was not skipped", a.Hits())
	}
}

// An upstream that closes mid-stream: the client's SDK reports an error,
// not a complete message.
func TestUpstreamClosingMidStreamEndsWithError(t *testing.T) {
	for _, how := range []string{"clean close", "cut connection"} {
		t.Run(how, func(t *testing.T) {
			useFakeClock(t)
			a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
				writeStream(w, streamEvents("m", "half")[:4])
				if how == "cut connection" {
					panic(http.ErrAbortHandler) // net/http drops the connection without the closing chunk
				}
			})
			p := startProxy(t, failoverSite(a.providerBlock()))
			msg, types, err := streamRequest(t, sdkClient(p))
			var apiErr *anthropic.Error
			if err == nil {
				t.Fatalf("no error; events %v text %q", types, textOf(&msg))
			}
			if errors.As(err, &apiErr) && !strings.Contains(err.Error(), "api_error") {
				t.Fatalf("err = %v, want an api_error event", err)
			}
			if !strings.Contains(err.Error(), "llm_failover") {
				t.Fatalf("err = %v, want the proxy's closing event", err)
			}
			if s := snapshot(t, "a"); s.LastClass != classify.ServerError {
				t.Fatalf("a: %s, want server_error", s.LastClass)
			}
		})
	}
}

// A committed stream that goes silent past idle_timeout ends with an
// overloaded_error event.
func TestStalledStreamEndsWithError(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		writeStream(w, streamEvents("m", "then silence")[:4])
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\tstream {\n\t\t\tidle_timeout 300ms\n\t\t}\n"))
	_, _, err := streamRequest(t, sdkClient(p))
	if err == nil || !strings.Contains(err.Error(), "overloaded_error") || !strings.Contains(err.Error(), "sent no event but pings") {
		t.Fatalf("err = %v, want the proxy's overloaded_error event", err)
	}
	if s := snapshot(t, "a"); s.LastClass != classify.Overloaded {
		t.Fatalf("a: %s", s.LastClass)
	}
}

// readEventsUntil reads SSE lines from the proxy until one contains want.
func readEventsUntil(t *testing.T, r *bufio.Reader, want string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				done <- err
				return
			}
			if strings.Contains(line, want) {
				done <- nil
				return
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("reading until %q: %v", want, err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%q never reached the client", want)
	}
}

const streamingRequest = `{"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"hi"}]}`

// The hold limits commit a stream that has no content event yet: the
// client receives message_start while the upstream is still waiting.
func TestHoldLimitsCommitWithoutContent(t *testing.T) {
	for _, tc := range []struct {
		name, stream string
		prefix       string
	}{
		{"hold_wait", "hold_wait 200ms", ""},
		{"hold_bytes", "hold_bytes 1KiB", ": " + strings.Repeat("padding ", 200) + "\n\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			useFakeClock(t)
			release := make(chan struct{})
			a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
				evs := streamEvents("m", "late")
				writeStream(w, []string{evs[0] + tc.prefix})
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				for _, ev := range evs[1:] {
					_, _ = io.WriteString(w, ev)
					w.(http.Flusher).Flush()
				}
			})
			p := startProxy(t, failoverSite(a.providerBlock(), "\t\tstream {\n\t\t\t"+tc.stream+"\n\t\t}\n"))
			res := post(t, p.URL+"/v1/messages", streamingRequest)
			defer res.Body.Close()
			r := bufio.NewReader(res.Body)
			readEventsUntil(t, r, "message_start")
			close(release)
			readEventsUntil(t, r, "message_stop")
		})
	}
}

// A gzip-compressed event stream with an early error fails over; a healthy
// compressed stream reaches the client intact.
func TestCompressedStream(t *testing.T) {
	useFakeClock(t)
	gzStream := func(events []string) func(w http.ResponseWriter, r *http.Request, _ []byte) {
		return func(w http.ResponseWriter, r *http.Request, _ []byte) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Encoding", "gzip")
			w.WriteHeader(200)
			zw := gzip.NewWriter(w)
			for _, ev := range events {
				_, _ = io.WriteString(zw, ev)
				_ = zw.Flush()
				w.(http.Flusher).Flush()
			}
			_ = zw.Close()
		}
	}
	a := newUpstream(t, "a", gzStream([]string{
		streamEvents("m")[0],
		sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "rate_limit_error", "message": "slow down"}}),
	}))
	b := newUpstream(t, "b", gzStream(streamEvents("m", "zipped ", "b")))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))
	// net/http asks for gzip by itself and decodes what it gets
	msg, types, err := streamRequest(t, sdkClient(p))
	if err != nil || textOf(&msg) != "zipped b" {
		t.Fatalf("%q %v %v", textOf(&msg), types, err)
	}
	if s := snapshot(t, "a"); s.LastClass != classify.RateLimit {
		t.Fatalf("a: %s, want rate_limit", s.LastClass)
	}
	// the bytes b sent arrive unchanged: still gzip, decodable to b's events
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", strings.NewReader(streamingRequest))
	req.Header.Set("Accept-Encoding", "gzip") // set by hand: net/http then leaves the body compressed
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw := readAll(t, res)
	if res.Header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("Content-Encoding %q", res.Header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(strings.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.Join(streamEvents("m", "zipped ", "b"), ""); !bytes.Equal(plain, []byte(want)) {
		t.Fatalf("decoded stream differs:\n%s", plain)
	}
}

// A client that goes away mid-hold or mid-stream cancels the upstream
// request promptly, charges no breaker, and leaves no goroutine behind.
func TestClientDisconnectLeavesNothingBehind(t *testing.T) {
	useFakeClock(t)
	upstreamDone := make(chan struct{}, 2)
	phase := make(chan string, 2)
	held := make(chan struct{}, 1)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		evs := streamEvents("m", "x")
		if <-phase == "hold" {
			writeStream(w, evs[:2]) // message_start, ping: still held
			held <- struct{}{}
		} else {
			writeStream(w, evs[:4]) // content: committed
		}
		<-r.Context().Done() // the upstream waits until the proxy cancels it
		upstreamDone <- struct{}{}
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	ignore := goleak.IgnoreCurrent()

	for _, ph := range []string{"hold", "stream"} {
		phase <- ph
		transport := &http.Transport{}
		client := &http.Client{Transport: transport}
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/messages", strings.NewReader(streamingRequest))
		if ph == "hold" {
			go func() { <-held; cancel() }()
			if res, err := client.Do(req); err == nil {
				res.Body.Close()
				t.Fatal("a held stream sent headers to the client")
			}
		} else {
			res, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			readEventsUntil(t, bufio.NewReader(res.Body), "content_block_start")
			cancel()
			res.Body.Close()
		}
		select {
		case <-upstreamDone:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the upstream request was not cancelled", ph)
		}
		transport.CloseIdleConnections()
		if s := snapshot(t, "a"); s.State != breaker.Closed || s.LastClass != "" {
			t.Fatalf("%s: a breaker charged for a client disconnect: %+v", ph, s)
		}
	}
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, ignore,
		// the fake upstream's server keeps its own idle connections
		goleak.IgnoreTopFunction("net/http.(*conn).serve"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// Caddy's storage cleaning holds a lock file whose refresher
		// outlives the lock by up to five seconds
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}

// A healthy stream passes through event by event: the upstream sends the
// next event only after the client has received the previous one.
func TestStreamPassesThroughEventByEvent(t *testing.T) {
	useFakeClock(t)
	events := streamEvents("claude-sonnet-4-5", "Hel", "lo", " world")
	next := make(chan struct{})
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for i, ev := range events {
			if i > 3 { // after the first content event, wait for the client
				select {
				case <-next:
				case <-time.After(10 * time.Second):
					return
				}
			}
			_, _ = io.WriteString(w, ev)
			w.(http.Flusher).Flush()
		}
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	stream := sdkClient(p).Messages.NewStreaming(context.Background(), userMessage("hi"))
	var msg anthropic.Message
	var seen []string
	for stream.Next() {
		ev := stream.Current()
		if err := msg.Accumulate(ev); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, ev.Type)
		switch ev.Type {
		case "content_block_delta", "content_block_stop", "message_delta":
			next <- struct{}{} // the client has this event; release the next
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream error: %v", err)
	}
	// the SDK does not surface ping
	if textOf(&msg) != "Hello world" || len(seen) != len(events)-1 || seen[len(seen)-1] != "message_stop" {
		t.Fatalf("text %q events %v", textOf(&msg), seen)
	}
}

// SUCCESSES counts successes only: a client error passed on and a stream
// that broke after it was committed (an error event, or a connection cut
// before the final event) are answers, not successes.
func TestSuccessesCountOnlySuccesses(t *testing.T) {
	clock := useFakeClock(t)
	events := streamEvents("m", "partial")
	a := newUpstream(t, "succ_a", replyError(400, "invalid_request_error", "max_tokens: too large"))
	p := startProxy(t, failoverSite(a.providerBlock()))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	if res.StatusCode != 400 {
		t.Fatalf("%d, want the provider's 400 passed on", res.StatusCode)
	}
	a.setHandler(func(w http.ResponseWriter, r *http.Request, body []byte) {
		writeStream(w, append(events[:4:4],
			sseEvent("error", map[string]any{"type": "error", "error": map[string]any{"type": "overloaded_error", "message": "Overloaded mid-stream"}})))
	})
	if _, _, err := streamRequest(t, sdkClient(p)); err == nil {
		t.Fatal("a stream that ended with an error event succeeded")
	}
	if s := snapshot(t, "succ_a"); s.Requests != 2 || s.Successes != 0 {
		t.Fatalf("after a 400 and a broken stream: requests %d, successes %d; want 2, 0", s.Requests, s.Successes)
	}
	// and a success still counts
	a.setHandler(replyMessage("fine"))
	clock.Advance(time.Hour) // past the overloaded cooldown
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	if s := snapshot(t, "succ_a"); s.Successes != 1 {
		t.Fatalf("after a success: successes %d, want 1", s.Successes)
	}
}
