package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testport"

	// the plugin, reverse_proxy for the baseline, and Caddy's tracing handler
	_ "github.com/caddy-llm-failover/caddy-llm-failover"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/tracing"
)

// hotEnv is an in-process Caddy with three servers on loopback, one plain
// reverse_proxy, one llm_failover with a single provider, and the same
// llm_failover inside Caddy's tracing handler (spans recorded, exported
// nowhere), all in front of the same httptest upstream.
type hotEnv struct {
	plain, llm, traced string // request URLs
	client             *http.Client
}

const (
	smallBody = `{"model":"claude-sonnet-4-5-20250929","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}],"stream":false}`
	jsonReply = `{"id":"msg_01Hot","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":10}}`
)

// openStreamBody asks the upstream for a stream that stays open.
const openStreamBody = `{"model":"claude-sonnet-4-5-20250929","max_tokens":7,"messages":[{"role":"user","content":"Hello, Claude"}],"stream":true}`

// bigReplyBody asks the upstream for bigReply, a ~100 KB JSON message.
const bigReplyBody = `{"model":"claude-sonnet-4-5-20250929","max_tokens":100000,"messages":[{"role":"user","content":"Write a lot"}],"stream":false}`

var bigReply = func() []byte {
	text := strings.Repeat("All work and no play makes Jack a dull boy. ", 100<<10/44)
	return []byte(`{"id":"msg_01Hot","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"` +
		text + `"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":25000}}`)
}()

// streamReply is a 50-event Anthropic stream.
var streamReply = func() []string {
	ev := []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01Hot\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-sonnet-4-5-20250929\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
		"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
		"event: ping\ndata: {\"type\": \"ping\"}\n\n",
	}
	for i := range 44 {
		ev = append(ev, fmt.Sprintf("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" word%d\"}}\n\n", i))
	}
	return append(ev,
		"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
		"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":44}}\n\n",
		"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
	)
}()

// upstream answers a JSON message, or the stream when the body ends with
// "stream":true}. It reads the whole body first, as a real API does.
func upstream() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if bytes.Equal(body, []byte(openStreamBody)) {
			// a stream that stays open: its first events, then nothing
			// until the client goes away
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			for _, e := range streamReply[:4] {
				_, _ = io.WriteString(w, e)
			}
			_ = http.NewResponseController(w).Flush()
			<-r.Context().Done()
			return
		}
		if bytes.HasSuffix(bytes.TrimSpace(body), []byte(`"stream":true}`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(http.StatusOK)
			rc := http.NewResponseController(w)
			for _, e := range streamReply {
				_, _ = io.WriteString(w, e)
				_ = rc.Flush()
			}
			return
		}
		w.Header().Set("Content-Type", "application/json")
		if bytes.Contains(body, []byte(`"max_tokens":100000`)) {
			_, _ = w.Write(bigReply)
			return
		}
		_, _ = io.WriteString(w, jsonReply)
	}))
}

func freePort(tb testing.TB) int {
	tb.Helper()
	return testport.Free(tb)
}

// startHot starts the upstream and Caddy; both stop when tb ends.
func startHot(tb testing.TB) *hotEnv {
	tb.Helper()
	up := upstream()
	tb.Cleanup(up.Close)
	upAddr := strings.TrimPrefix(up.URL, "http://")
	pPlain, pLLM, pTraced := freePort(tb), freePort(tb), freePort(tb)
	// the tracing handler's exporter: spans are recorded and batched, then
	// dropped
	tb.Setenv("OTEL_TRACES_EXPORTER", "none")
	cfg := fmt.Sprintf(`{
  "admin": {"disabled": true},
  "logging": {"logs": {"default": {"level": "ERROR"}}},
  "apps": {"http": {"servers": {
    "plain": {
      "listen": ["127.0.0.1:%d"],
      "automatic_https": {"disable": true},
      "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": %q}]}]}]
    },
    "llm": {
      "listen": ["127.0.0.1:%d"],
      "automatic_https": {"disable": true},
      "routes": [{"handle": [{"handler": "llm_failover", "providers": [{"name": "bench_hotpath", "upstream": "http://%s"}]}]}]
    },
    "traced": {
      "listen": ["127.0.0.1:%d"],
      "automatic_https": {"disable": true},
      "routes": [{"handle": [{"handler": "tracing", "span": "llm"},
        {"handler": "llm_failover", "providers": [{"name": "bench_hotpath", "upstream": "http://%s"}]}]}]
    }
  }}}
}`, pPlain, upAddr, pLLM, upAddr, pTraced, upAddr)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		tb.Fatalf("caddy.Load: %v", err)
	}
	tb.Cleanup(func() { _ = caddy.Stop() })
	tr := &http.Transport{MaxIdleConnsPerHost: 16, DisableCompression: true}
	tb.Cleanup(tr.CloseIdleConnections)
	return &hotEnv{
		plain:  fmt.Sprintf("http://127.0.0.1:%d/v1/messages", pPlain),
		llm:    fmt.Sprintf("http://127.0.0.1:%d/v1/messages", pLLM),
		traced: fmt.Sprintf("http://127.0.0.1:%d/v1/messages", pTraced),
		client: &http.Client{Transport: tr, Timeout: 30 * time.Second},
	}
}

// post sends one request and reads the whole answer.
func (e *hotEnv) post(url string, body []byte) (*http.Response, []byte, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Anthropic-Version", "2023-06-01")
	req.Header.Set("X-Api-Key", "sk-ant-bench-not-a-key")
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp, b, err
}

// bigBody is a ~200 KB request with "model" first and "stream" last.
func bigBody(stream bool) []byte {
	var b strings.Builder
	b.WriteString(`{"model":"claude-sonnet-4-5-20250929","messages":[`)
	line := `{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01","content":"     1\tpackage main\n     2\t\n     3\tfunc main() {\n     4\t\tfmt.Println(\"hello <world> & more\")\n     5\t}\n"}]},`
	for b.Len() < 200<<10 {
		b.WriteString(line)
	}
	b.WriteString(`{"role":"user","content":"go on"}],"max_tokens":32000,"stream":`)
	if stream {
		b.WriteString("true}")
	} else {
		b.WriteString("false}")
	}
	return []byte(b.String())
}

// TestHotPathSmoke checks that the benchmark's servers answer as the
// benchmark expects (it measures nothing).
func TestHotPathSmoke(t *testing.T) {
	e := startHot(t)
	for _, url := range []string{e.plain, e.llm, e.traced} {
		resp, body, err := e.post(url, []byte(smallBody))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(body) != jsonReply {
			t.Fatalf("%s: %d %q", url, resp.StatusCode, body)
		}
		resp, body, err = e.post(url, bigBody(true))
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(body) != strings.Join(streamReply, "") {
			t.Fatalf("%s stream: %d %q", url, resp.StatusCode, body)
		}
	}
	resp, _, _ := e.post(e.llm, []byte(smallBody))
	if got := resp.Header.Get("X-LLM-Provider"); got != "bench_hotpath" {
		t.Fatalf("X-LLM-Provider = %q", got)
	}
}

// BenchmarkHotPath measures one request through plain reverse_proxy and
// through llm_failover, client, Caddy and upstream all in this process:
// the difference between the two is the plugin's cost (ns/op, B/op,
// allocs/op); llm_failover+tracing adds Caddy's tracing handler and the
// plugin's span per attempt. Keep it short: -benchtime 2000x.
func BenchmarkHotPath(b *testing.B) {
	e := startHot(b)
	cases := []struct {
		name string
		body []byte
	}{
		{"small", []byte(smallBody)},
		{"200KB", bigBody(false)},
		{"reply100KB", []byte(bigReplyBody)},
		{"stream50", []byte(strings.Replace(smallBody, `"stream":false`, `"stream":true`, 1))},
	}
	for _, c := range cases {
		for _, site := range []struct{ name, url string }{{"reverse_proxy", e.plain}, {"llm_failover", e.llm}, {"llm_failover+tracing", e.traced}} {
			b.Run(c.name+"/"+site.name, func(b *testing.B) {
				// warm the connection pools
				for range 10 {
					if _, _, err := e.post(site.url, c.body); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(len(c.body)))
				b.ReportAllocs()
				for b.Loop() {
					resp, _, err := e.post(site.url, c.body)
					if err != nil {
						b.Fatal(err)
					}
					if resp.StatusCode != http.StatusOK {
						b.Fatalf("status %d", resp.StatusCode)
					}
				}
			})
		}
	}
}

// BenchmarkOpenStreamHeap measures the live heap one open stream keeps
// through plain reverse_proxy and through llm_failover (streams past their
// first content event, the upstream silent): client, Caddy and upstream
// share this process, so the difference is the plugin's own memory per
// open stream (plugin-B/stream).
func BenchmarkOpenStreamHeap(b *testing.B) {
	const streams = 1000
	e := startHot(b)
	perStream := map[string]float64{}
	sites := []struct{ name, url string }{{"reverse_proxy", e.plain}, {"llm_failover", e.llm}}
	for _, site := range sites {
		openStreamsHeap(b, site.url, streams) // warm up: pools, connections, first-use allocations
	}
	for b.Loop() {
		for _, site := range sites {
			perStream[site.name] = openStreamsHeap(b, site.url, streams)
		}
	}
	b.ReportMetric(perStream["reverse_proxy"], "plain-B/stream")
	b.ReportMetric(perStream["llm_failover"], "llm-B/stream")
	b.ReportMetric(perStream["llm_failover"]-perStream["reverse_proxy"], "plugin-B/stream")
}

// openStreamsHeap opens n streams that stay open, waits until each has
// its first content event, and returns the live heap they added, per
// stream.
func openStreamsHeap(b *testing.B, url string, n int) float64 {
	b.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: n, DisableCompression: true}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	goroutines := runtime.NumGoroutine()
	before := liveHeapBytes()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	ready := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(openStreamBody))
			req.Header.Set("Content-Type", "application/json")
			resp, err := client.Do(req)
			if err != nil {
				ready <- err
				return
			}
			defer resp.Body.Close()
			rd := bufio.NewReader(resp.Body)
			for {
				line, err := rd.ReadString('\n')
				if strings.HasPrefix(line, "event: content_block_start") {
					ready <- nil
					_, _ = io.Copy(io.Discard, rd) // until cancelled
					return
				}
				if err != nil {
					ready <- fmt.Errorf("stream ended before content: %v", err)
					return
				}
			}
		}()
	}
	for range n {
		if err := <-ready; err != nil {
			cancel()
			b.Fatal(err)
		}
	}
	open := liveHeapBytes()
	cancel()
	wg.Wait()
	tr.CloseIdleConnections()
	// the servers' goroutines end after the clients': the next
	// measurement starts once they have
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > goroutines && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return float64(open-before) / float64(n)
}

// liveHeapBytes is the heap in use after two collections: the second
// empties what sync.Pools kept from the first, so pooled buffers a
// previous measurement left do not count.
func liveHeapBytes() int64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}
