package credsource

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock is a settable clock for the sources' now field.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// needShell skips tests that run shell scripts where there is no /bin/sh.
func needShell(t *testing.T) {
	t.Helper()
	if runtime.GOOS == "windows" {
		t.Skip("shell scripts are not available on Windows")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
}

// writeScript writes an executable shell script into dir.
func writeScript(t *testing.T, dir, name, body string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// prependPath puts dir first on PATH for the test.
func prependPath(t *testing.T, dir string) {
	t.Helper()
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
}

// countLines returns the number of lines in a file (0 if it is missing).
func countLines(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(data), "\n")
}

// observedLogger returns a logger that records everything, for checking
// that no secret is ever logged.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// assertLogsExclude fails if any recorded log entry mentions a secret.
func assertLogsExclude(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		b, _ := json.Marshal(e.ContextMap())
		text := e.Message + " " + string(b)
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("log entry %q contains a secret", text)
			}
		}
	}
}

// assertJSONExcludes fails if the module's JSON mentions a secret.
func assertJSONExcludes(t *testing.T, module any, secrets ...string) {
	t.Helper()
	b, err := json.Marshal(module)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range secrets {
		if strings.Contains(string(b), s) {
			t.Errorf("JSON %s contains a secret", b)
		}
	}
}

// unmarshalCaddyfile parses input into a fresh module with UnmarshalCaddyfile.
func unmarshalCaddyfile(t *testing.T, m caddyfile.Unmarshaler, input string) error {
	t.Helper()
	return m.UnmarshalCaddyfile(caddyfile.NewTestDispenser(input))
}

// loadModule loads a module from JSON the way Caddy does: unmarshal,
// provision, validate.
func loadModule(t *testing.T, id, js string) (any, error) {
	t.Helper()
	ctx, cancel := caddy.NewContext(caddy.Context{Context: context.Background()})
	t.Cleanup(cancel)
	return ctx.LoadModuleByID(id, json.RawMessage(js))
}

// testCtx returns a context that ends with the test.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func caddyDuration(d time.Duration) caddy.Duration { return caddy.Duration(d) }
