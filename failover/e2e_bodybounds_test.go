package failover

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// startProxyWithMetrics is startProxy with Caddy's HTTP metrics on, so a
// test can see how many requests are inside a handler.
func startProxyWithMetrics(t *testing.T, siteBody string) *proxy {
	t.Helper()
	p, _ := startProxyWithGlobals(t, "\tmetrics\n", siteBody)
	return p
}

// inFlight reads caddy_http_requests_in_flight summed over its series.
func inFlight(t *testing.T, p *proxy) int {
	t.Helper()
	_, text := adminGet(t, p, "/metrics")
	total := 0
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, "caddy_http_requests_in_flight{") {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		total += int(v)
	}
	return total
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// rssBytes reads this process's resident set size (Linux), or 0.
func rssBytes() uint64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			kb, _ := strconv.ParseUint(strings.Fields(line)[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// A declared Content-Length claims no memory: 20 connections that each
// declare 32 MiB and send 10 bytes add less than 16 MB of heap.
func TestBodyDeclaredLengthClaimsNoMemory(t *testing.T) {
	up := newUpstream(t, "a", replyMessage("ok"))
	p := startProxyWithMetrics(t, failoverSite(up.providerBlock()))
	host := strings.TrimPrefix(p.URL, "http://")

	// warm up: pools, the first request's allocations
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	heapBefore, rssBefore := heapInUse(), rssBytes()

	const conns = 20
	var open []net.Conn
	for i := 0; i < conns; i++ {
		c, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, c)
		fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{\"model\":", host, 32<<20)
	}
	defer func() {
		for _, c := range open {
			_ = c.Close()
		}
	}()
	waitFor(t, "every request inside the handler", 10*time.Second, func() bool { return inFlight(t, p) >= conns })
	heapAfter, rssAfter := heapInUse(), rssBytes()
	added := int64(heapAfter) - int64(heapBefore)
	t.Logf("%d connections declaring 32 MiB: heap %d -> %d MB (%+d MB), RSS %d -> %d MB",
		conns, heapBefore>>20, heapAfter>>20, added>>20, rssBefore>>20, rssAfter>>20)
	if added >= 16<<20 {
		t.Fatalf("heap grew by %d MB for %d connections that sent 10 bytes each; want < 16 MB", added>>20, conns)
	}
}

// A client that trickles its body gets 408 in Anthropic's format once
// body_timeout has passed, and the request never reaches a provider.
func TestBodyTimeoutAnswers408(t *testing.T) {
	up := newUpstream(t, "a", replyMessage("ok"))
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\tbody_timeout 1s\n"))
	host := strings.TrimPrefix(p.URL, "http://")

	c, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n", host)
	// one byte every 100ms: never idle long enough for Caddy's own
	// read_body_idle timeout, never done
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				if _, err := c.Write([]byte(" ")); err != nil {
					return
				}
			}
		}
	}()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408: %s", res.StatusCode, body)
	}
	var e struct {
		Type  string `json:"type"`
		Error struct{ Type, Message string }
	}
	if err := json.Unmarshal(body, &e); err != nil || e.Type != "error" || e.Error.Type != "timeout_error" ||
		!strings.Contains(e.Error.Message, "body_timeout") {
		t.Fatalf("answer is not an Anthropic timeout_error naming body_timeout: %s", body)
	}
	if !res.Close {
		t.Errorf("the connection of a timed-out body is kept open; want Connection: close")
	}
	if up.Hits() != 0 {
		t.Fatalf("the provider got %d requests; want none", up.Hits())
	}
	// the proxy still serves others
	if res := post(t, p.URL+"/v1/messages", simpleRequest); res.StatusCode != http.StatusOK {
		t.Fatalf("next request: status %d", res.StatusCode)
	}
}

// rawPost writes a whole request (headers and body) before reading
// anything, the way Python's urllib does, and returns the answer.
func rawPost(host string, body []byte, chunked bool) (*http.Response, []byte, error) {
	c, err := net.Dial("tcp", host)
	if err != nil {
		return nil, nil, err
	}
	defer c.Close()
	// a small send buffer, as over a real network: the body cannot sit
	// whole in loopback's socket buffers while the proxy ignores it
	_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	w := bufio.NewWriterSize(c, 64<<10)
	if chunked {
		fmt.Fprintf(w, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", host)
		for off := 0; off < len(body); off += 32 << 10 {
			end := min(off+32<<10, len(body))
			fmt.Fprintf(w, "%x\r\n", end-off)
			_, _ = w.Write(body[off:end])
			_, _ = w.WriteString("\r\n")
		}
		_, _ = w.WriteString("0\r\n\r\n")
	} else {
		fmt.Fprintf(w, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", host, len(body))
		_, _ = w.Write(body)
	}
	if err := w.Flush(); err != nil {
		return nil, nil, fmt.Errorf("writing the body: %w", err)
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the answer: %w", err)
	}
	b, err := io.ReadAll(res.Body)
	return res, b, err
}

// A body over request_buffer is refused with a 413 the client can read,
// even when it writes its whole body before reading.
func TestBodyTooLargeClientReads413(t *testing.T) {
	up := newUpstream(t, "a", replyMessage("ok"))
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\trequest_buffer 1MiB\n"))
	host := strings.TrimPrefix(p.URL, "http://")
	body := []byte(`{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"` +
		strings.Repeat("x", 2<<20) + `"}]}`)
	for _, chunked := range []bool{false, true} {
		for i := 0; i < 20; i++ {
			res, answer, err := rawPost(host, body, chunked)
			if err != nil {
				t.Fatalf("chunked=%v, run %d: %v", chunked, i, err)
			}
			if res.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(answer), `"request_too_large"`) {
				t.Fatalf("chunked=%v, run %d: status %d %s; want 413 request_too_large", chunked, i, res.StatusCode, answer)
			}
		}
	}
	if up.Hits() != 0 {
		t.Fatalf("the provider got %d requests; want none", up.Hits())
	}
}

// A body larger than request_buffer is refused with Anthropic's 413.
func TestRequestBufferLimit(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyMessage("from a"))
	p := startProxy(t, failoverSite(a.providerBlock(), "\t\trequest_buffer 1KiB\n"))
	big := `{"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`
	res := post(t, p.URL+"/v1/messages", big)
	body := readAll(t, res)
	if res.StatusCode != 413 || !strings.Contains(body, `"request_too_large"`) {
		t.Fatalf("%d %s", res.StatusCode, body)
	}
	// a chunked body of unknown length is cut at the same limit
	req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if readAll(t, res); res.StatusCode != 413 {
		t.Fatalf("chunked: %d", res.StatusCode)
	}
	if a.Hits() != 0 {
		t.Fatal("an oversized body reached the provider")
	}
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from a") {
		t.Fatalf("small body: %s", got)
	}
}

// What big bodies hold together stays within request_buffer_total, and so
// does the garbage they leave: 24 concurrent 6 MiB bodies to a slow
// upstream, with a 24 MiB budget, keep the heap in use within 56 MiB of
// where it started (the budget, a body outgrown as it doubled, and what
// Caddy and the test's own client and upstream hold; about 28 MiB measured).
// Before outgrown and released buffers counted until collected, the
// runtime let their garbage take it to 80-102 MiB.
func TestBigBodiesHeapWithinBudget(t *testing.T) {
	const bodies, size = 24, 6 << 20
	release := make(chan struct{})
	// an upstream that keeps nothing of a body: only the proxy's memory
	// is measured
	up := &fakeUpstream{name: "bb_slow", Server: httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-release:
		case <-time.After(300 * time.Millisecond):
		}
		replyMessage("fine")(w, r, nil)
	}))}
	t.Cleanup(up.Close)
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\trequest_buffer 8MiB\n\t\trequest_buffer_total 24MiB\n"))
	body := []byte(`{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"` + strings.Repeat("x", size) + `"}]}`)
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	base := heapInUse()

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			runtime.ReadMemStats(&m)
			if m.HeapInuse > peak.Load() {
				peak.Store(m.HeapInuse)
			}
		}
	}()
	var wg sync.WaitGroup
	var served, refused atomic.Int32
	for range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", bytes.NewReader(body))
			res, err := freshConnClient.Do(req)
			if err != nil {
				refused.Add(1) // the 529 closes the connection while the body is still being sent
				return
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				served.Add(1)
			} else {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	close(release)
	added := int64(peak.Load()) - int64(base)
	t.Logf("%d x %d MiB bodies, budget 24 MiB: %d served, %d refused; heap in use peaked %d MiB above the start",
		bodies, size>>20, served.Load(), refused.Load(), added>>20)
	if served.Load() == 0 {
		t.Fatal("no body was served")
	}
	if added > 56<<20 {
		t.Fatalf("heap in use peaked %d MiB above the start; want within 56 MiB (a 24 MiB budget)", added>>20)
	}
}
