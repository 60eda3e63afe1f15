package failover

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// activeHandlers is every llm_failover handler of the running config.
func activeHandlers(t *testing.T) []*Handler {
	t.Helper()
	appIface, err := caddy.ActiveContext().AppIfConfigured("http")
	if err != nil {
		t.Fatalf("no http app: %v", err)
	}
	var all []*Handler
	for _, srv := range appIface.(*caddyhttp.App).Servers {
		var found siteFindings
		found.walk(srv.Routes, true, nil)
		for _, seen := range found.handlers {
			all = append(all, seen.h)
		}
	}
	if len(all) == 0 {
		t.Fatal("no llm_failover handler in the running config")
	}
	return all
}

// pendingCollection is what dropped buffers still count on counter.
func pendingCollection(counter *atomic.Int64) int64 {
	uncollected.mu.Lock()
	defer uncollected.mu.Unlock()
	return uncollected.pending[counter]
}

// sendCut writes a request declaring declared bytes of body, sends only
// sent of them and hangs up, waiting first for wait.
func sendCut(t *testing.T, addr string, declared, sent int, chunked bool, wait time.Duration) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Errorf("dial: %v", err)
		return
	}
	defer conn.Close()
	head := "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
	if chunked {
		head += "Transfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n", declared)
	} else {
		head += fmt.Sprintf("Content-Length: %d\r\n\r\n", declared)
	}
	_, _ = io.WriteString(conn, head)
	body := `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"` + strings.Repeat("y", max(sent, 80)) + `"}]}`
	_, _ = io.WriteString(conn, body[:sent])
	time.Sleep(wait)
}

// Bodies of assorted sizes, complete, too large, cut off mid-body (plain
// and chunked), abandoned while waiting for their answer: once they are
// done, what request_buffer_total counts returns to nothing, and a body
// the size of the whole budget is served (nothing stays counted for good).
func TestBodyBudgetReturnsToZero(t *testing.T) {
	up := newUpstream(t, "ab_up", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), "slowanswer") {
			time.Sleep(200 * time.Millisecond)
		}
		replyMessage("fine")(w, r, body)
	})
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\trequest_buffer 3MiB\n\t\trequest_buffer_total 6MiB\n"))
	h := activeHandlers(t)[0]
	addr := strings.TrimPrefix(p.URL, "http://")
	bodyOf := func(n int, marker string) []byte {
		pad := max(n-100, 1)
		return []byte(`{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"` + marker + strings.Repeat("x", pad) + `"}]}`)
	}
	sizes := []int{0, 50, 1 << 10, 16 << 10, 16<<10 + 1, 100 << 10, 700 << 10, 1 << 20, 2<<20 + 12345, 3 << 20, 3<<20 + 10, 4 << 20}
	var wg sync.WaitGroup
	var codes sync.Map
	for worker := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 12 {
				n := sizes[(worker*7+i)%len(sizes)]
				switch (worker + i) % 5 {
				case 0: // cut off part way, declared length
					sendCut(t, addr, n+1000, n/2, false, time.Duration(i%3)*5*time.Millisecond)
				case 1: // cut off part way, chunked
					sendCut(t, addr, n+1000, n/2, true, time.Duration(i%3)*5*time.Millisecond)
				case 2: // abandoned while its answer is on the way
					req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", bytes.NewReader(bodyOf(n, "slowanswer")))
					client := &http.Client{Timeout: 50 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
					if res, err := client.Do(req); err == nil {
						res.Body.Close()
					}
				default: // whole
					req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", bytes.NewReader(bodyOf(n, "")))
					if res, err := freshConnClient.Do(req); err == nil {
						_, _ = io.Copy(io.Discard, res.Body)
						res.Body.Close()
						c, _ := codes.LoadOrStore(res.StatusCode, new(atomic.Int32))
						c.(*atomic.Int32).Add(1)
					}
				}
			}
		}()
	}
	wg.Wait()
	codes.Range(func(k, v any) bool { t.Logf("status %v: %d", k, v.(*atomic.Int32).Load()); return true })
	// what live bodies hold returns to 0; what dropped buffers hold
	// waits for a collection, which a body waiting for room asks for
	deadline := time.Now().Add(10 * time.Second)
	for h.buffered.Load() != pendingCollection(h.buffered) {
		if time.Now().After(deadline) {
			t.Fatalf("buffered = %d, of which %d dropped and not yet collected, after every body is done",
				h.buffered.Load(), pendingCollection(h.buffered))
		}
		time.Sleep(10 * time.Millisecond)
	}
	uncollected.collect(false)
	waitFor(t, "the collection of dropped buffers", 10*time.Second, func() bool {
		return h.buffered.Load() == 0
	})
	// the whole budget is there again: two bodies at request_buffer
	for range 2 {
		res := post(t, p.URL+"/v1/messages", string(bodyOf(3<<20-200, "")))
		if body := readAll(t, res); res.StatusCode != http.StatusOK {
			t.Fatalf("a body within the budget after the crowd: %d %s", res.StatusCode, body)
		}
	}
}
