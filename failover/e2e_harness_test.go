package failover

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testport"
)

// fakeClock replaces timeNow so tests move time without sleeping.
type fakeClock struct{ ns atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// useFakeClock installs a fake clock for the test. The idle watch of a
// stream measures silence on the real monotonic clock, not this one.
func useFakeClock(t *testing.T) *fakeClock {
	t.Helper()
	c := new(fakeClock)
	c.ns.Store(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC).UnixNano())
	now := c.Now
	clockOverride.Store(&now)
	t.Cleanup(func() { clockOverride.Store(nil) })
	return c
}

// epochSeconds is t as the unified rate-limit headers write a reset.
func epochSeconds(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }

// freePort returns a loopback port nobody listens on, below the kernel's
// ephemeral range so no other process is handed it before Caddy binds it.
func freePort(t testing.TB) int {
	t.Helper()
	return testport.Free(t)
}

// freeAddr is a loopback address nothing listens on yet.
func freeAddr(t testing.TB) string { return "127.0.0.1:" + itoa(freePort(t)) }

// freeURL is the http:// URL of a freeAddr: a dead upstream, or a site
// still to be started.
func freeURL(t testing.TB) string { return "http://" + freeAddr(t) }

// newProxy is a proxy not yet started, with a free site and admin address.
func newProxy(t *testing.T) *proxy { return &proxy{t: t, URL: freeURL(t), AdminAddr: freeAddr(t)} }

// proxy is a real Caddy running in this process.
type proxy struct {
	t         *testing.T
	URL       string // the site, http://127.0.0.1:port
	AdminAddr string
}

// startProxy adapts a Caddyfile whose site body is given (the text inside
// `http://127.0.0.1:PORT { ... }`) and loads it. Breaker state is global,
// so each test starts from fresh provider states.
func startProxy(t *testing.T, siteBody string) *proxy {
	t.Helper()
	p, _ := startProxyWithGlobals(t, "", siteBody)
	return p
}

// stopAtCleanup stops Caddy and forgets every provider's state when the
// test ends.
func stopAtCleanup(t testing.TB) {
	t.Cleanup(func() {
		if err := caddy.Stop(); err != nil {
			t.Logf("stopping caddy: %v", err)
		}
		resetProviderStates()
	})
}

func (p *proxy) caddyfile(siteBody string) string {
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	grace_period 30s
}
%s {
%s
}
`, p.AdminAddr, p.URL, siteBody)
}

func adapt(t *testing.T, caddyfileText string) []byte {
	t.Helper()
	cfg, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		t.Fatalf("adapting Caddyfile: %v\n%s", err, caddyfileText)
	}
	for _, w := range warnings {
		t.Logf("adapt warning: %s", w.String())
	}
	return cfg
}

func (p *proxy) load(caddyfileText string) {
	p.t.Helper()
	if err := caddy.Load(adapt(p.t, caddyfileText), true); err != nil {
		p.t.Fatalf("loading config: %v", err)
	}
	p.waitForOldListeners()
}

// reload posts a changed site body to the admin API's /load, as a user
// changing the config live would.
func (p *proxy) reload(siteBody string) {
	p.t.Helper()
	cfg := adapt(p.t, p.caddyfile(siteBody))
	req, _ := http.NewRequest(http.MethodPost, "http://"+p.AdminAddr+"/load", bytes.NewReader(cfg))
	req.Header.Set("Content-Type", "application/json")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST /load: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		p.t.Fatalf("POST /load: %d %s", res.StatusCode, b)
	}
	p.waitForOldListeners()
}

// waitForOldListeners waits until the site's and the admin's ports each
// have a single listening socket. Caddy binds the new config's listeners
// with SO_REUSEPORT before it closes the old ones, and /load returns once
// the old servers' shutdowns are scheduled, not done: a connection the
// kernel hands to the old socket in that window is reset when it closes.
// A real client retries such a reset; the tests wait for the handover
// instead, so that what they assert is the new config, not the race.
func (p *proxy) waitForOldListeners() {
	p.t.Helper()
	for _, addr := range []string{strings.TrimPrefix(p.URL, "http://"), p.AdminAddr} {
		_, port, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			n, ok := listeningSockets(port)
			if ok && n == 0 {
				p.t.Fatalf("no socket listens on port %s after loading the config", port)
			}
			if !ok || n == 1 {
				break
			}
			if time.Now().After(deadline) {
				p.t.Fatalf("port %s still has %d listening sockets 10s after the reload", port, n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// listeningSockets counts the sockets listening on a TCP port, from
// Linux's /proc/net/tcp{,6}; ok is false where those files are missing.
func listeningSockets(port string) (n int, ok bool) {
	portNum, err := strconv.Atoi(port)
	if err != nil {
		return 0, false
	}
	want := fmt.Sprintf(":%04X", portNum)
	for _, file := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		ok = true
		for _, line := range strings.Split(string(data), "\n")[1:] {
			fields := strings.Fields(line)
			const listen = "0A"
			if len(fields) > 3 && strings.HasSuffix(fields[1], want) && fields[3] == listen {
				n++
			}
		}
	}
	return n, ok
}

// resetProviderStates forgets every breaker, so tests do not leak
// cooldowns into each other through the package-level pool.
func resetProviderStates() {
	var keys []any
	providerStates.Range(func(key, _ any) bool {
		keys = append(keys, key)
		return true
	})
	for _, key := range keys { // Delete outside Range, which holds the pool's lock
		for {
			deleted, _ := providerStates.Delete(key)
			if deleted {
				break
			}
		}
	}
}

// snapshot reads the shared breaker of a provider.
func snapshot(t *testing.T, name string) breaker.Snapshot {
	t.Helper()
	var out breaker.Snapshot
	found := false
	providerStates.Range(func(key, value any) bool {
		if key == name {
			out = value.(*providerState).breakers.shared().Snapshot(timeNow())
			found = true
			return false
		}
		return true
	})
	if !found {
		t.Fatalf("no breaker state for provider %q", name)
	}
	return out
}

// fakeUpstream is an Anthropic-compatible provider on loopback whose
// behaviour each test scripts.
type fakeUpstream struct {
	*httptest.Server
	name string

	mu      sync.Mutex
	hits    int
	bodies  [][]byte
	headers []http.Header
	paths   []string
	handle  func(w http.ResponseWriter, r *http.Request, body []byte)
}

func newUpstream(t *testing.T, name string, handle func(w http.ResponseWriter, r *http.Request, body []byte)) *fakeUpstream {
	t.Helper()
	u := &fakeUpstream{name: name, handle: handle}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		u.mu.Lock()
		u.hits++
		u.bodies = append(u.bodies, body)
		u.headers = append(u.headers, r.Header.Clone())
		u.paths = append(u.paths, r.URL.RequestURI())
		h := u.handle
		u.mu.Unlock()
		h(w, r, body)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *fakeUpstream) Hits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits
}

func (u *fakeUpstream) setHandler(h func(w http.ResponseWriter, r *http.Request, body []byte)) {
	u.mu.Lock()
	u.handle = h
	u.mu.Unlock()
}

func (u *fakeUpstream) lastHeader() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.headers) == 0 {
		return nil
	}
	return u.headers[len(u.headers)-1]
}

func (u *fakeUpstream) lastBody() []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.bodies) == 0 {
		return nil
	}
	return u.bodies[len(u.bodies)-1]
}

// providerBlock is a provider pointing at the fake upstream.
func (u *fakeUpstream) providerBlock(extra ...string) string {
	return fmt.Sprintf("\t\tprovider %s {\n\t\t\tupstream %s\n%s\t\t}\n", u.name, u.URL, indentLines(extra, "\t\t\t"))
}

func indentLines(lines []string, indent string) string {
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(indent + l + "\n")
	}
	return b.String()
}

// failoverSite is a site body with one llm_failover block.
func failoverSite(blocks ...string) string {
	return "\tllm_failover {\n" + strings.Join(blocks, "") + "\t}"
}

// Anthropic wire format.

func messageJSON(model, text string) []byte {
	b, _ := json.Marshal(map[string]any{
		"id": "msg_01", "type": "message", "role": "assistant", "model": model,
		"content":     []any{map[string]any{"type": "text", "text": text}},
		"stop_reason": "end_turn", "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 12, "output_tokens": 7},
	})
	return b
}

func errorJSON(errType, message string) []byte {
	b, _ := json.Marshal(map[string]any{"type": "error", "error": map[string]any{"type": errType, "message": message}})
	return b
}

func replyMessage(text string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		var req struct {
			Model string `json:"model"`
		}
		_ = json.Unmarshal(body, &req)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Request-Id", "req_"+text)
		_, _ = w.Write(messageJSON(req.Model, text))
	}
}

func replyError(status int, errType, message string, headers ...string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		for i := 0; i+1 < len(headers); i += 2 {
			w.Header().Set(headers[i], headers[i+1])
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write(errorJSON(errType, message))
	}
}

// sseEvent formats one server-sent event.
func sseEvent(typ string, data any) string {
	b, _ := json.Marshal(data)
	return "event: " + typ + "\ndata: " + string(b) + "\n\n"
}

// streamEvents is a complete Anthropic stream answering text in pieces.
func streamEvents(model string, pieces ...string) []string {
	evs := []string{
		sseEvent("message_start", map[string]any{"type": "message_start", "message": map[string]any{
			"id": "msg_s", "type": "message", "role": "assistant", "model": model, "content": []any{},
			"stop_reason": nil, "stop_sequence": nil, "usage": map[string]any{"input_tokens": 25, "output_tokens": 1}}}),
		sseEvent("ping", map[string]any{"type": "ping"}),
		sseEvent("content_block_start", map[string]any{"type": "content_block_start", "index": 0,
			"content_block": map[string]any{"type": "text", "text": ""}}),
	}
	for _, p := range pieces {
		evs = append(evs, sseEvent("content_block_delta", map[string]any{"type": "content_block_delta", "index": 0,
			"delta": map[string]any{"type": "text_delta", "text": p}}))
	}
	evs = append(evs,
		sseEvent("content_block_stop", map[string]any{"type": "content_block_stop", "index": 0}),
		sseEvent("message_delta", map[string]any{"type": "message_delta",
			"delta": map[string]any{"stop_reason": "end_turn", "stop_sequence": nil},
			"usage": map[string]any{"output_tokens": len(pieces)}}),
		sseEvent("message_stop", map[string]any{"type": "message_stop"}),
	)
	return evs
}

// replyEvents answers with a stream of events.
func replyEvents(events []string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) { writeStream(w, events) }
}

// writeStream sends events one by one, flushing each.
func writeStream(w http.ResponseWriter, events []string) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	for _, ev := range events {
		_, _ = io.WriteString(w, ev)
		w.(http.Flusher).Flush()
	}
}

// sdkClient is the official Go SDK pointed at the proxy, without its own
// retries so every failover seen is the proxy's.
func sdkClient(p *proxy, opts ...option.RequestOption) *anthropic.Client {
	all := append([]option.RequestOption{
		option.WithBaseURL(p.URL),
		option.WithAPIKey("sk-client-key-must-not-leak"),
		option.WithMaxRetries(0),
		option.WithRequestTimeout(30 * time.Second),
	}, opts...)
	c := anthropic.NewClient(all...)
	return &c
}

// sendMessage sends one user message through client and returns the
// answer with the HTTP response the SDK read it from (status, headers).
func sendMessage(client *anthropic.Client, text string) (*anthropic.Message, *http.Response, error) {
	var raw *http.Response
	msg, err := client.Messages.New(context.Background(), userMessage(text), option.WithResponseInto(&raw))
	return msg, raw, err
}

func userMessage(text string) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     anthropic.Model("claude-sonnet-4-5"),
		MaxTokens: 256,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(text))},
	}
}

func textOf(m *anthropic.Message) string {
	var b strings.Builder
	for _, c := range m.Content {
		b.WriteString(c.Text)
	}
	return b.String()
}

func hashOf(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// freshConnClient opens a connection per request. A reload closes the old
// server's idle connections; a POST on one that the client reuses at that
// moment fails in net/http before any handler runs (plain reverse_proxy
// the same), which is not what the tests measure.
var freshConnClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// post sends a raw request to the proxy.
func post(t *testing.T, url, body string, header ...string) *http.Response {
	t.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := freshConnClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	return res
}

func readAll(t *testing.T, res *http.Response) string {
	t.Helper()
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	return string(b)
}

const simpleRequest = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`

// startPair starts two upstreams, named aName and bName, and a proxy that
// tries a first, then b.
func startPair(t *testing.T, aName string, aHandle func(w http.ResponseWriter, r *http.Request, body []byte),
	bName string, bHandle func(w http.ResponseWriter, r *http.Request, body []byte)) (p *proxy, a, b *fakeUpstream) {
	t.Helper()
	a, b = newUpstream(t, aName, aHandle), newUpstream(t, bName, bHandle)
	return startProxy(t, failoverSite(a.providerBlock(), b.providerBlock())), a, b
}

// wantHitsAndState fails t unless u was sent hits requests and its breaker
// stands in state; why says what a wrong count means.
func wantHitsAndState(t *testing.T, u *fakeUpstream, hits int, state breaker.State, why string) {
	t.Helper()
	if n := u.Hits(); n != hits {
		t.Fatalf("%s was sent %d requests, want %d: %s", u.name, n, hits, why)
	}
	if s := snapshot(t, u.name); s.State != state {
		t.Fatalf("%s: %+v, want %s", u.name, s, state)
	}
}

// wantAPIError fails t unless err is the SDK's error for an answer with
// status, and returns it.
func wantAPIError(t *testing.T, err error, status int) *anthropic.Error {
	t.Helper()
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != status {
		t.Fatalf("err = %v, want a %d", err, status)
	}
	return apiErr
}
