package failover

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

// Requests and answers from parties the proxy does not trust: the bytes
// a client sends, the headers a browser adds, the paths it asks for.

func init() {
	caddy.RegisterModule(panicHandler{})
	httpcaddyfile.RegisterHandlerDirective("test_panic", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		return panicHandler{}, nil
	})
}

// panicHandler is a handler that panics: a stand-in for a bug in code the
// proxy runs before it commits an answer.
type panicHandler struct{}

func (panicHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_panic", New: func() caddy.Module { return panicHandler{} }}
}

func (panicHandler) ServeHTTP(http.ResponseWriter, *http.Request, caddyhttp.Handler) error {
	panic("test_panic: internal state at 0xdeadbeef")
}

func (panicHandler) UnmarshalCaddyfile(*caddyfile.Dispenser) error { return nil }

// A model name that is not valid UTF-8 is still served: the metric label
// it becomes is made valid, so nothing panics after the provider answered.
func TestInvalidUTF8ModelIsServed(t *testing.T) {
	up := newUpstream(t, "main", replyMessage("fine"))
	p := startProxy(t, failoverSite(up.providerBlock()))
	for i, model := range []string{"bad\xff\xfemodel", strings.Repeat("\xc3", 100), "ok-\xe2\x82"} {
		body := fmt.Sprintf(`{"model":"%s","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, model)
		res := post(t, p.URL+"/v1/messages", body)
		got := readAll(t, res)
		if res.StatusCode != http.StatusOK || !strings.Contains(got, "fine") {
			t.Fatalf("model %d: %d %s, want the provider's answer", i, res.StatusCode, got)
		}
	}
	if up.Hits() != 3 {
		t.Fatalf("upstream hits %d, want 3", up.Hits())
	}
	metrics, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := readAll(t, metrics)
	if !utf8.ValidString(text) || !strings.Contains(text, `model="bad`) {
		t.Fatalf("metrics are not valid UTF-8 or lack the model's series")
	}
}

// The {llm.model} placeholder is valid UTF-8 and bounded whatever the
// client sent.
func TestModelPlaceholderIsValidUTF8(t *testing.T) {
	req := &llmRequest{model: "bad\xff\xfemodel", finished: true}
	v, ok := req.placeholder("llm.model")
	if !ok || !utf8.ValidString(v.(string)) || !strings.HasPrefix(v.(string), "bad") {
		t.Fatalf("{llm.model} = %q", v)
	}
	long := &llmRequest{model: strings.Repeat("é", 4<<10), finished: true}
	v, _ = long.placeholder("llm.model")
	if s := v.(string); len(s) > maxLoggedString+len("…") || !utf8.ValidString(s) || !strings.HasSuffix(s, "…") {
		t.Fatalf("{llm.model} of a 8 KiB model is %d bytes: %q", len(s), s)
	}
}

// A panic before the answer is committed becomes a 500 api_error that
// names nothing internal; the server keeps serving.
func TestPanicBeforeCommitIsAnAPIError(t *testing.T) {
	up := newUpstream(t, "u", replyMessage("unused"))
	_ = up
	p := startProxy(t, "\troute {\n\t\tllm_failover\n\t\ttest_panic\n\t}")
	for i := 0; i < 3; i++ {
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		got := readAll(t, res)
		if res.StatusCode != http.StatusInternalServerError || !strings.Contains(got, `"api_error"`) {
			t.Fatalf("got %d %s, want a 500 api_error", res.StatusCode, got)
		}
		for _, internal := range []string{"test_panic", "0xdeadbeef", ".go:", "goroutine"} {
			if strings.Contains(got, internal) {
				t.Fatalf("answer names %q: %s", internal, got)
			}
		}
	}
}

// A web page the user visits may send the proxy a simple cross-site
// request (text/plain, no preflight): it is refused before its body is
// read, unless allow_origin names the page's origin.
func TestCrossSiteBrowserRequestRefused(t *testing.T) {
	up := newUpstream(t, "main", replyMessage("fine"))
	p := startProxy(t, failoverSite(up.providerBlock("credential env HOME"), "\t\tallow_origin https://app.example\n"))
	cases := []struct {
		name   string
		header []string
		want   int
	}{
		{"cross-site fetch", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://evil.example"}, 403},
		{"same-site fetch", []string{"Sec-Fetch-Site", "same-site"}, 403},
		{"foreign origin", []string{"Origin", "http://evil.example"}, 403},
		{"opaque origin", []string{"Origin", "null"}, 403},
		{"the site's own origin", []string{"Origin", p.URL, "Sec-Fetch-Site", "same-origin"}, 200},
		{"typed by the user", []string{"Sec-Fetch-Site", "none"}, 200},
		{"allowed origin", []string{"Sec-Fetch-Site", "cross-site", "Origin", "https://app.example"}, 200},
		{"SDK", nil, 200},
	}
	hits := 0
	for _, c := range cases {
		res := post(t, p.URL+"/v1/messages", simpleRequest, append([]string{"Content-Type", "text/plain"}, c.header...)...)
		got := readAll(t, res)
		if res.StatusCode != c.want {
			t.Fatalf("%s: %d %s, want %d", c.name, res.StatusCode, got, c.want)
		}
		if c.want == 200 {
			hits++
		} else if !strings.Contains(got, `"permission_error"`) || !strings.Contains(got, "allow_origin") {
			t.Fatalf("%s: %s, want a permission_error naming allow_origin", c.name, got)
		}
		if up.Hits() != hits {
			t.Fatalf("%s: upstream hits %d, want %d", c.name, up.Hits(), hits)
		}
	}

	// refused before the body is read: the answer comes though the body
	// never does
	conn, err := net.Dial("tcp", strings.TrimPrefix(p.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: text/plain\r\n"+
		"Sec-Fetch-Site: cross-site\r\nContent-Length: 100000\r\n\r\n{\"model\":", strings.TrimPrefix(p.URL, "http://"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.Contains(status, " 403 ") {
		t.Fatalf("status line %q (%v), want a 403 before the body", status, err)
	}
}

func TestAllowOriginConfig(t *testing.T) {
	for _, bad := range []string{"app.example", "https://app.example/path", "ftp://app.example", "https://"} {
		h := &Handler{AllowOrigins: []string{bad}}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), "allow_origin") {
			t.Fatalf("allow_origin %q: %v, want an error naming allow_origin", bad, err)
		}
	}
}

// A path with `..` segments would leave the provider's base path, with
// the provider's credential: it is refused with 400, however it is
// spelled, and never forwarded.
func TestDotSegmentsRefused(t *testing.T) {
	up := newUpstream(t, "main", replyMessage("fine"))
	p := startProxy(t, "\tllm_failover {\n\t\tprovider main {\n\t\t\tupstream "+up.URL+"/api/anthropic\n\t\t}\n\t}")
	host := strings.TrimPrefix(p.URL, "http://")
	send := func(target string) string {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_, _ = fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
			target, host, len(simpleRequest), simpleRequest)
		_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		status, _ := bufio.NewReader(conn).ReadString('\n')
		return status
	}
	for _, target := range []string{"/../../admin/secret", "/v1/%2e%2e/%2E%2E/admin", "/v1/..%2f..%2fadmin", "/v1/./messages", "/v1/messages/.."} {
		if status := send(target); !strings.Contains(status, " 400 ") {
			t.Fatalf("%s: %q, want 400", target, status)
		}
	}
	if up.Hits() != 0 {
		t.Fatalf("forwarded %d requests with dot segments: %v", up.Hits(), up.paths)
	}
	if status := send("/v1/messages"); !strings.Contains(status, " 200 ") {
		t.Fatalf("a plain path: %q", status)
	}
	if up.paths[0] != "/api/anthropic/v1/messages" {
		t.Fatalf("upstream path %q", up.paths[0])
	}
}

// A request that is not a model call passes through untouched, even when
// its upstream answers with an event stream that breaks: no watcher, no
// error event appended, no cooling.
func TestNonModelStreamPassesThroughUntouched(t *testing.T) {
	up := newUpstream(t, "main", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return
		}
		_, _ = io.WriteString(w, "event: status\ndata: {\"ok\":")
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the upstream drops mid-event
	})
	p := startProxy(t, failoverSite(up.providerBlock()))
	for _, method := range []string{http.MethodGet, http.MethodHead} {
		for _, path := range []string{"/health", "/"} {
			req, _ := http.NewRequest(method, p.URL+path, nil)
			res, err := freshConnClient.Do(req)
			if err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			got, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if strings.Contains(string(got), "event: error") {
				t.Fatalf("%s %s: an error event was appended: %q", method, path, got)
			}
			if s := snapshot(t, "main"); s.State != breaker.Closed {
				t.Fatalf("%s %s: the provider is %s after a non-model request", method, path, s.State)
			}
		}
	}
	if up.Hits() != 4 {
		t.Fatalf("upstream hits %d, want 4", up.Hits())
	}
}

// When every provider failed without an answer, the client learns each
// one's class and a short reason, not the proxy's internals; the detail
// goes to the log.
func TestExhaustedAnswerNamesShortReasons(t *testing.T) {
	hung := newUpstream(t, "slow", func(w http.ResponseWriter, r *http.Request, body []byte) {
		time.Sleep(2 * time.Second)
	})
	p := startProxy(t, failoverSite(
		"\t\tprovider dead {\n\t\t\tupstream "+freeURL(t)+"\n\t\t}\n",
		hung.providerBlock("header_timeout 200ms"),
	))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	msg := wantAnthropicErrorMessage(t, res, http.StatusBadGateway)
	for _, want := range []string{"dead: unreachable (connection refused)", "slow: unreachable (timed out)"} {
		if !strings.Contains(msg, want) {
			t.Fatalf("answer %q does not say %q", msg, want)
		}
	}
	for _, internal := range []string{"dial tcp", "reverseproxy", ".go:", "{id=", "127.0.0.1", "HTTP 502"} {
		if strings.Contains(msg, internal) {
			t.Fatalf("answer %q names %q", msg, internal)
		}
	}
}

func wantAnthropicErrorMessage(t *testing.T, res *http.Response, status int) string {
	t.Helper()
	body := readAll(t, res)
	if res.StatusCode != status || !strings.Contains(body, `"api_error"`) {
		t.Fatalf("answer %d %s, want %d api_error", res.StatusCode, body, status)
	}
	return body
}

// A client that asks before sending a body over request_buffer
// (Expect: 100-continue) is told 413 at once: no 100 Continue, nothing of
// the body read.
func TestExpectContinueOverLimitGets413Without100(t *testing.T) {
	up := newUpstream(t, "main", replyMessage("fine"))
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\trequest_buffer 1KiB\n"))
	host := strings.TrimPrefix(p.URL, "http://")
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, _ = fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Expect: 100-continue\r\nContent-Length: 100000\r\n\r\n", host)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil || !strings.HasPrefix(status, "HTTP/1.1 413 ") {
		t.Fatalf("first status line %q (%v), want 413 and no 100 Continue", status, err)
	}
	if up.Hits() != 0 {
		t.Fatalf("upstream hits %d", up.Hits())
	}
}

// caddy_llm_utilization_ratio has a bounded set of series per provider,
// however many clients of a passthrough provider report windows of
// their own names.
func TestUtilizationMetricBoundedPerProvider(t *testing.T) {
	var n atomic.Int64
	up := newUpstream(t, "ut_pass", func(w http.ResponseWriter, r *http.Request, body []byte) {
		i := n.Add(1)
		w.Header().Set("Anthropic-Ratelimit-Unified-Status", "allowed")
		w.Header().Set("Anthropic-Ratelimit-Unified-5h-Utilization", "0.5")
		for _, suffix := range []string{"a", "b", "c"} {
			w.Header().Set(fmt.Sprintf("Anthropic-Ratelimit-Unified-w%d%s-Utilization", i, suffix), "0.25")
		}
		replyMessage("fine")(w, r, body)
	})
	p := startProxy(t, failoverSite(up.providerBlock("credential passthrough")))
	for i := range 20 {
		res := post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", fmt.Sprintf("sk-client-%d", i))
		if body := readAll(t, res); res.StatusCode != http.StatusOK {
			t.Fatalf("client %d: %d %s", i, res.StatusCode, body)
		}
	}
	res, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	series := 0
	for _, line := range strings.Split(readAll(t, res), "\n") {
		if strings.HasPrefix(line, `caddy_llm_utilization_ratio{provider="ut_pass"`) {
			series++
		}
	}
	if series == 0 || series > 6 {
		t.Fatalf("%d utilization series for one provider, want 1 to 6 (5h and at most 4 other windows)", series)
	}
}

// X-LLM-Providers shows a client limited to some providers only those.
func TestProvidersHeaderListsOnlyTheClientsOwn(t *testing.T) {
	t.Setenv("LLMF_ALICE_KEY", "alice-key-1")
	t.Setenv("LLMF_BOB_KEY", "bob-key-1")
	a := newUpstream(t, "ph_a", replyError(429, "rate_limit_error", "limited", "Retry-After", "60"))
	secret := newUpstream(t, "ph_secret", replyError(529, "overloaded_error", "busy"))
	p := startProxy(t, failoverSite(a.providerBlock(), secret.providerBlock(),
		"\t\tclient alice {\n\t\t\tkey env LLMF_ALICE_KEY\n\t\t\tproviders ph_a\n\t\t}\n",
		"\t\tclient bob {\n\t\t\tkey env LLMF_BOB_KEY\n\t\t}\n"))
	res := post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", "bob-key-1")
	readAll(t, res)
	if got := res.Header.Get("X-LLM-Providers"); !strings.Contains(got, `"ph_secret"`) {
		t.Fatalf("bob may use every provider; X-LLM-Providers %q", got)
	}
	res = post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", "alice-key-1")
	readAll(t, res)
	got := res.Header.Get("X-LLM-Providers")
	if !strings.HasPrefix(got, `"ph_a";state=open`) || strings.Contains(got, "ph_secret") {
		t.Fatalf("alice's X-LLM-Providers %q, want ph_a alone", got)
	}
}

// Conversation affinity is per client: another client sending the same
// session id does not move this client's conversation.
func TestAffinityKeyIncludesTheClient(t *testing.T) {
	t.Setenv("LLMF_ALICE_KEY", "alice-key-1")
	t.Setenv("LLMF_BOB_KEY", "bob-key-1")
	one := newUpstream(t, "af_one", replyMessage("one"))
	two := newUpstream(t, "af_two", replyMessage("two"))
	p := startProxy(t, failoverSite(one.providerBlock(), two.providerBlock(), "\t\tpolicy spread\n",
		"\t\tclient alice {\n\t\t\tkey env LLMF_ALICE_KEY\n\t\t}\n",
		"\t\tclient bob {\n\t\t\tkey env LLMF_BOB_KEY\n\t\t\tproviders af_two\n\t\t}\n"))
	send := func(key string) string {
		res := post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", key, "X-Claude-Code-Session-Id", "session-1")
		readAll(t, res)
		return res.Header.Get("X-LLM-Provider")
	}
	first := send("alice-key-1")
	if got := send("bob-key-1"); got != "af_two" {
		t.Fatalf("bob was served by %q", got)
	}
	for i := range 3 {
		if got := send("alice-key-1"); got != first {
			t.Fatalf("alice's request %d went to %q, her conversation is on %q", i, got, first)
		}
	}
}

// The bodies being received and replayed hold at most
// request_buffer_total together: past it a new body is refused with 529
// overloaded_error and Retry-After, and taken again once there is room.
func TestRequestBufferTotalBounded(t *testing.T) {
	release := make(chan struct{})
	var releaseOnce sync.Once
	up := newUpstream(t, "bt_slow", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if strings.Contains(string(body), `"hold":true`) {
			<-release
		}
		replyMessage("fine")(w, r, body)
	})
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\trequest_buffer 1MiB\n\t\trequest_buffer_total 1MiB\n"))
	// registered last, so it runs first: the held request ends before
	// Caddy and the upstream stop
	t.Cleanup(func() { releaseOnce.Do(func() { close(release) }) })
	big := func(hold bool) string {
		return fmt.Sprintf(`{"model":"m","hold":%t,"max_tokens":8,"messages":[{"role":"user","content":"%s"}]}`,
			hold, strings.Repeat("x", 700<<10))
	}
	held := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", strings.NewReader(big(true)))
		res, err := freshConnClient.Do(req)
		if err != nil {
			held <- 0
			return
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		held <- res.StatusCode
	}()
	for deadline := time.Now().Add(5 * time.Second); up.Hits() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the first request never reached the upstream")
		}
	}
	res := post(t, p.URL+"/v1/messages", big(false))
	body := readAll(t, res)
	if res.StatusCode != 529 || !strings.Contains(body, "overloaded_error") || res.Header.Get("Retry-After") == "" {
		t.Fatalf("a body past request_buffer_total: %d %s (Retry-After %q)", res.StatusCode, body, res.Header.Get("Retry-After"))
	}
	releaseOnce.Do(func() { close(release) })
	if code := <-held; code != http.StatusOK {
		t.Fatalf("the held request ended %d", code)
	}
	res = post(t, p.URL+"/v1/messages", big(false))
	if body := readAll(t, res); res.StatusCode != http.StatusOK {
		t.Fatalf("with room again: %d %s", res.StatusCode, body)
	}
}

// A page whose own name was made to resolve to 127.0.0.1 (DNS rebinding)
// is, to its browser, the site's own page. On a site that answers any
// host, llm_failover serving only this machine refuses a page's request
// under a name that is not localhost or a loopback address; clients that
// are not browsers, pages under loopback names and allow_origin are
// served.
func TestRebindingPageRefused(t *testing.T) {
	t.Setenv("LLMF_REBIND_KEY", "sk-rebind")
	up := newUpstream(t, "rebind", replyMessage("fine"))
	p := newProxy(t)
	port := strings.TrimPrefix(p.URL, "http://127.0.0.1:")
	p.load(fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n}\nhttp://:%s {\n\tbind 127.0.0.1\n%s\n}\n", p.AdminAddr, port,
		failoverSite(up.providerBlock("credential env LLMF_REBIND_KEY"), "\t\tallow_origin http://app.example:"+port+"\n")))
	stopAtCleanup(t)
	cases := []struct {
		name, host string
		header     []string
		want       int
	}{
		{"rebinding page", "attacker.example:" + port, []string{"Origin", "http://attacker.example:" + port, "Sec-Fetch-Site", "same-origin"}, 403},
		{"rebinding page, no Origin", "attacker.example:" + port, []string{"Sec-Fetch-Site", "same-origin"}, 403},
		{"rebinding page, old browser", "ATTACKER.example:" + port, []string{"Origin", "http://attacker.example:" + port}, 403},
		{"a name ending in localhost.example", "localhost.example:" + port, []string{"Sec-Fetch-Site", "same-origin"}, 403},
		{"page at localhost", "localhost:" + port, []string{"Origin", "http://localhost:" + port, "Sec-Fetch-Site", "same-origin"}, 200},
		{"page at 127.0.0.1", "127.0.0.1:" + port, []string{"Origin", "http://127.0.0.1:" + port, "Sec-Fetch-Site", "same-origin"}, 200},
		{"page at [::1]", "[::1]:" + port, []string{"Origin", "http://[::1]:" + port, "Sec-Fetch-Site", "same-origin"}, 200},
		{"page at app.localhost", "app.localhost:" + port, []string{"Sec-Fetch-Site", "same-origin"}, 200},
		{"allowed origin", "app.example:" + port, []string{"Origin", "http://app.example:" + port, "Sec-Fetch-Site", "same-origin"}, 200},
		{"a client by a hosts-file name", "mybox:" + port, nil, 200},
		{"typed by the user", "mybox:" + port, []string{"Sec-Fetch-Site", "none"}, 200},
	}
	hits := 0
	for _, c := range cases {
		req, _ := http.NewRequest(http.MethodPost, p.URL+"/v1/messages", strings.NewReader(simpleRequest))
		req.Host = c.host
		req.Header.Set("Content-Type", "text/plain")
		for i := 0; i+1 < len(c.header); i += 2 {
			req.Header.Set(c.header[i], c.header[i+1])
		}
		res, err := freshConnClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got := readAll(t, res)
		if res.StatusCode != c.want {
			t.Fatalf("%s: %d %s, want %d", c.name, res.StatusCode, got, c.want)
		}
		if c.want == 200 {
			hits++
		} else if !strings.Contains(got, `"permission_error"`) || !strings.Contains(got, "DNS rebinding") || strings.Contains(got, "attacker") {
			t.Fatalf("%s: %s, want a permission_error that names DNS rebinding and not the host", c.name, got)
		}
		if up.Hits() != hits {
			t.Fatalf("%s: upstream hits %d, want %d", c.name, up.Hits(), hits)
		}
	}
}
