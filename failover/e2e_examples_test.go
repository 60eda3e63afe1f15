package failover

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// examplePorts are the ports the shipped Caddyfiles use: the proxy, the
// demo's fake providers and the admin endpoint.
var examplePorts = regexp.MustCompile(`:(4181|4191|4192|2019)\b`)

// loadExample runs one of the project's shipped Caddyfiles as it is, but
// on free ports (a machine running the real proxy or another test must not
// break it). It returns the rewritten address of each port it used.
func loadExample(t *testing.T, path string) map[string]string {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	addrs := map[string]string{}
	rewritten := examplePorts.ReplaceAllStringFunc(string(text), func(m string) string {
		if _, ok := addrs[m[1:]]; !ok {
			addrs[m[1:]] = fmt.Sprintf("%d", freePort(t))
		}
		return ":" + addrs[m[1:]]
	})
	for port, free := range addrs {
		addrs[port] = "127.0.0.1:" + free
	}
	if err := caddy.Load(adapt(t, rewritten), true); err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	stopAtCleanup(t)
	return addrs
}

// The demo fails over from its rate-limited fake provider to its healthy
// one, then skips the cooling one: what the README's curl shows. A
// streaming request (Claude Code's) gets an event stream, in one request;
// the `HEAD /` preconnect cools nothing.
func TestDemoCaddyfile(t *testing.T) {
	addrs := loadExample(t, "examples/demo.Caddyfile")
	site := "http://" + addrs["4181"]

	headRoot(t, site)
	if s := snapshot(t, "limited"); s.State != breaker.Closed {
		t.Fatalf("limited after HEAD /: %s, want closed", s.State)
	}

	for i, wantAttempts := range []string{"2", "1"} {
		res := post(t, site+"/v1/messages", simpleRequest)
		body := readAll(t, res)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "Hello from the healthy provider.") ||
			res.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
		}
		if res.Header.Get("X-LLM-Provider") != "healthy" || res.Header.Get("X-LLM-Attempts") != wantAttempts {
			t.Fatalf("request %d: provider %q attempts %q, want healthy %s", i,
				res.Header.Get("X-LLM-Provider"), res.Header.Get("X-LLM-Attempts"), wantAttempts)
		}
	}
	if s := snapshot(t, "limited"); s.State != breaker.Open || s.LastClass != classify.RateLimit {
		t.Fatalf("limited: %s %s", s.State, s.LastClass)
	}

	var sent int
	client := anthropic.NewClient(option.WithBaseURL(site), option.WithAPIKey("dummy"), option.WithMaxRetries(0),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			sent++
			return next(r)
		}))
	var raw *http.Response
	msg, types, err := streamRequest(t, &client, option.WithResponseInto(&raw))
	if err != nil || textOf(&msg) != "Hello from the healthy provider." || types[len(types)-1] != "message_stop" {
		t.Fatalf("stream: %q %v %v", textOf(&msg), types, err)
	}
	if sent != 1 || raw.Header.Get("Content-Type") != "text/event-stream" || raw.Header.Get("X-LLM-Provider") != "healthy" {
		t.Fatalf("%d requests, %v", sent, raw.Header)
	}
	if msg.Usage.OutputTokens != 7 {
		t.Fatalf("usage %+v", msg.Usage)
	}
}

// The real-world example starts on a machine with no keys set, and a
// request whose providers all lack a key is answered, not dropped.
func TestExampleCaddyfileStartsWithoutKeys(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "")
	t.Setenv("ZAI_API_KEY", "")
	addrs := loadExample(t, "Caddyfile.example")
	res, err := http.Get("http://" + addrs["2019"] + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	cfg := readAll(t, res)
	if !strings.Contains(cfg, `"llm_failover"`) || !strings.Contains(cfg, `"var":"ZAI_API_KEY"`) {
		t.Fatalf("config not loaded: %s", cfg)
	}
}
