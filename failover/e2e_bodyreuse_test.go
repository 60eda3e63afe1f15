package failover

import (
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

// A request's body buffer goes back to the pool only once every attempt's
// reader over it was closed: a transport may still be writing from it.
func TestRequestBodyPooledOnlyWhenClosed(t *testing.T) {
	h := &Handler{}
	var open atomic.Int32
	rb := &requestBody{b: make([]byte, 0, 64<<10)}
	rb.b = append(rb.b, "body"...)
	_ = newReplayBody(rb.b, &open) // a reader its transport has not closed
	h.releaseRequestBody(rb, &open)
	if rb.b != nil {
		t.Fatal("a buffer a transport may still read from went back to the pool")
	}

	var open2 atomic.Int32
	rb = &requestBody{b: append(make([]byte, 0, 64<<10), "body"...)}
	reader := newReplayBody(rb.b, &open2)
	_ = reader.Close()
	_ = reader.Close() // twice: counted once
	before := unpooledWhileOpen.Load()
	h.releaseRequestBody(rb, &open2)
	if open2.Load() != 0 || unpooledWhileOpen.Load() != before || rb.b == nil {
		t.Fatalf("open %d after its one reader closed (twice); kept out of the pool: %v", open2.Load(), rb.b == nil)
	}
}

// Through real Caddy, reverse_proxy's transport closes every attempt's
// body, so buffers keep going back to the pool; and with an upstream that
// answers before reading a large body, every provider after it still
// receives each request's own bytes.
func TestRequestBodiesStayTheirOwn(t *testing.T) {
	early := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// answer at once, the body unread: the transport is still sending it
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"error","error":{"type":"overloaded_error","message":"busy"}}`)
	}))
	t.Cleanup(early.Close)
	var mu sync.Mutex
	mismatches := 0
	check := newUpstream(t, "reuse_check", func(w http.ResponseWriter, r *http.Request, body []byte) {
		want := r.Header.Get("X-Body-Sum")
		if fmt.Sprintf("%x", sha256.Sum256(body)) != want {
			mu.Lock()
			mismatches++
			mu.Unlock()
		}
		replyMessage("ok")(w, r, body)
	})
	p := startProxy(t, failoverSite(
		"\t\tprovider reuse_early {\n\t\t\tupstream "+early.URL+"\n\t\t\tcooldown overloaded 0s\n\t\t}\n",
		check.providerBlock(), "\t\trequest_buffer 8MiB\n"))

	before := unpooledWhileOpen.Load()
	const small = 40
	for i := range small {
		body := fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"%d %s"}]}`, i, strings.Repeat("s", 64<<10))
		res := post(t, p.URL+"/v1/messages", body, "X-Body-Sum", fmt.Sprintf("%x", sha256.Sum256([]byte(body))))
		if got := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, got)
		}
	}
	if n := unpooledWhileOpen.Load() - before; n > small/4 {
		t.Fatalf("%d of %d buffers kept out of the pool: the transport does not close the attempts' bodies", n, small)
	}

	var wg sync.WaitGroup
	for i := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fill := string(rune('a' + i%26))
			body := fmt.Sprintf(`{"model":"claude-sonnet-4-5","max_tokens":8,"messages":[{"role":"user","content":"%d %s"}]}`, i, strings.Repeat(fill, 3<<20))
			res := post(t, p.URL+"/v1/messages", body, "X-Body-Sum", fmt.Sprintf("%x", sha256.Sum256([]byte(body))))
			if got := readAll(t, res); res.StatusCode != 200 {
				t.Errorf("request %d: %d %.200s", i, res.StatusCode, got)
			}
		}()
	}
	wg.Wait()
	if mismatches != 0 || check.Hits() != small+24 {
		t.Fatalf("%d of %d bodies reached the provider changed", mismatches, check.Hits())
	}
}
