package failover

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// loadExample runs one of the project's shipped Caddyfiles as it is.
func loadExample(t *testing.T, path string) {
	t.Helper()
	text, err := os.ReadFile(filepath.Join("..", path))
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(adapt(t, string(text)), true); err != nil {
		t.Fatalf("loading %s: %v", path, err)
	}
	t.Cleanup(func() {
		_ = caddy.Stop()
		resetProviderStates()
	})
}

// The demo fails over from its rate-limited fake provider to its healthy
// one, then skips the cooling one: what the README's curl shows.
func TestDemoCaddyfile(t *testing.T) {
	loadExample(t, "examples/demo.Caddyfile")
	for i, wantAttempts := range []string{"2", "1"} {
		res := post(t, "http://127.0.0.1:4181/v1/messages", simpleRequest)
		body := readAll(t, res)
		if res.StatusCode != http.StatusOK || !strings.Contains(body, "Hello from the healthy provider.") {
			t.Fatalf("request %d: %d %s", i, res.StatusCode, body)
		}
		if res.Header.Get("X-LLM-Provider") != "healthy" || res.Header.Get("X-LLM-Attempts") != wantAttempts {
			t.Fatalf("request %d: provider %q attempts %q, want healthy %s", i,
				res.Header.Get("X-LLM-Provider"), res.Header.Get("X-LLM-Attempts"), wantAttempts)
		}
	}
	if s := snapshot(t, "limited"); s.State != StateOpen || s.LastClass != ClassRateLimit {
		t.Fatalf("limited: %s %s", s.State, s.LastClass)
	}
}

// The real-world example starts on a machine with no keys set, and a
// request whose providers all lack a key is answered, not dropped.
func TestExampleCaddyfileStartsWithoutKeys(t *testing.T) {
	t.Setenv("ANTHROPIC_API_KEY", "")
	t.Setenv("ZAI_API_KEY", "")
	loadExample(t, "Caddyfile.example")
	res, err := http.Get("http://127.0.0.1:2019/config/")
	if err != nil {
		t.Fatal(err)
	}
	cfg := readAll(t, res)
	if !strings.Contains(cfg, `"llm_failover"`) || !strings.Contains(cfg, `"var":"ZAI_API_KEY"`) {
		t.Fatalf("config not loaded: %s", cfg)
	}
}
