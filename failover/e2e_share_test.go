package failover

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
)

// shareSite is a Caddyfile with file-system storage in dir and an
// llm_failover block that shares its breakers.
func shareCaddyfile(adminAddr, siteURL, storageDir string, blocks ...string) string {
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	storage file_system %s
}
%s {
	handle /healthz-probe {
		respond ok
	}
%s
}
`, adminAddr, storageDir, siteURL, failoverSite(append(blocks, "\t\tshare {\n\t\t\tread_interval 200ms\n\t\t}\n")...))
}

// startChild runs a second instance and waits until it answers.
func startChild(t testing.TB, caddyfileText, siteURL string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "LLMF_CHILD_CADDYFILE="+caddyfileText, "XDG_DATA_HOME="+t.TempDir())
	cmd.Stderr = &prefixWriter{t: t}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if res, err := http.Get(siteURL + "/healthz-probe"); err == nil {
			res.Body.Close()
			return cmd
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("the child instance did not start")
	return nil
}

type prefixWriter struct{ t testing.TB }

func (w *prefixWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimSpace(string(p)), "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) || !strings.HasPrefix(line, "{") {
			w.t.Log("child: " + line)
		}
	}
	return len(p), nil
}

// A 429 with a long reset seen by instance A makes instance B skip that
// provider within one read interval, with no request from B to it; a
// successful probe on B closes the breaker on A.
func TestShareAcrossInstances(t *testing.T) {
	storage := t.TempDir()
	a := newUpstream(t, "sh_sub", replyError(429, "rate_limit_error", "limited", "Retry-After", "3600"))
	b := newUpstream(t, "sh_key", replyMessage("from key"))

	childURL := freeURL(t)
	child := &proxy{t: t, AdminAddr: freeAddr(t)}
	childCfg := shareCaddyfile(child.AdminAddr, childURL, storage, a.providerBlock(), b.providerBlock())
	startChild(t, childCfg, childURL)

	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, a.providerBlock(), b.providerBlock()))
	stopAtCleanup(t)

	// instance A (this process) meets the 429
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from key") {
		t.Fatal(got)
	}
	if a.Hits() != 1 {
		t.Fatalf("hits %d", a.Hits())
	}
	waitFor(t, "B to adopt A's cooldown", 5*time.Second, func() bool {
		return providerStatuses(t, child)["sh_sub"]["state"] == string(breaker.Open)
	})
	for range 5 {
		res := post(t, childURL+"/v1/messages", simpleRequest)
		if got := readAll(t, res); !strings.Contains(got, "from key") || res.Header.Get("X-LLM-Attempts") != "1" {
			t.Fatalf("instance B: %s attempts %s", got, res.Header.Get("X-LLM-Attempts"))
		}
	}
	if a.Hits() != 1 {
		t.Fatalf("instance B sent %d requests to the provider A found cooling", a.Hits()-1)
	}

	// the provider recovers. A closes it by hand, which reaches B (a close
	// wins over the cooldowns decided before it), then drains it for a
	// second: B probes it when that ends, and B's success closes the
	// breaker on A
	a.setHandler(replyMessage("from sub"))
	if code, body := adminPost(t, p, "/llm/providers/sh_sub/reset", ``); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for deadline := time.Now().Add(3 * time.Second); providerStatuses(t, child)["sh_sub"]["state"] != "closed"; {
		if time.Now().After(deadline) {
			t.Fatalf("A's reset did not reach B: %v", providerStatuses(t, child)["sh_sub"])
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code, body := adminPost(t, p, "/llm/providers/sh_sub/cooldown", `{"duration":"1s"}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	// B adopts the 1s cooldown, which then ends: it was closed, so half
	// open means both happened
	waitFor(t, "B to adopt the 1s cooldown and see it end", 5*time.Second, func() bool {
		return providerStatuses(t, child)["sh_sub"]["state"] == string(breaker.HalfOpen)
	})
	if got := readAll(t, post(t, childURL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from sub") {
		t.Fatalf("B's probe: %s", got)
	}
	deadline := time.Now().Add(3 * time.Second)
	for {
		st := providerStatuses(t, p)["sh_sub"]
		if st["state"] == "closed" {
			if st["source"] == "local" || st["synced_at"] == "" {
				t.Fatalf("closed, but not from B: %v", st)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's successful probe did not close the breaker on A: %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A restarted instance reads the stored state first: its first request
// skips the provider that is cooling.
func TestShareSurvivesRestart(t *testing.T) {
	storage := t.TempDir()
	a := newUpstream(t, "rs_sub", replyError(429, "rate_limit_error", "usage", "anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-reset", fmt.Sprint(time.Now().Add(3*time.Hour).Unix())))
	b := newUpstream(t, "rs_key", replyMessage("from key"))
	p := newProxy(t)
	cfg := shareCaddyfile(p.AdminAddr, p.URL, storage, a.providerBlock(), b.providerBlock())
	p.load(cfg)
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	ownEntry(t, filepath.Join(storage, "llm_failover", "breakers"), func(f share.StorageEntry) bool { // the prompt write
		return f.Breakers["rs_sub"].State == breaker.Open
	})
	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	resetProviderStates() // a new process remembers nothing
	p.load(cfg)
	stopAtCleanup(t)
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if got := readAll(t, res); !strings.Contains(got, "from key") || res.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("first request after restart: %s attempts %s", got, res.Header.Get("X-LLM-Attempts"))
	}
	if a.Hits() != 1 {
		t.Fatalf("the restarted instance retried the cooling provider")
	}
	if s := snapshot(t, "rs_sub"); s.LastClass != classify.Quota || s.Until.Before(time.Now().Add(2*time.Hour)) {
		t.Fatalf("adopted state %+v", s)
	}
}

// Corrupt and unreadable entries are survived with a log line; storage
// that blocks for seconds does not slow requests.
func TestShareStorageFaults(t *testing.T) {
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	if err := os.MkdirAll(filepath.Join(prefix, "unreadable.json"), 0o755); err != nil { // a directory: Load fails
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(prefix, "corrupt.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	good, _ := json.Marshal(share.StorageEntry{Instance: "other", Breakers: map[string]breaker.Decision{
		"sf_sub": {State: breaker.Open, Until: time.Now().Add(time.Hour), Class: classify.Quota, DecidedAt: time.Now()}}})
	if err := os.WriteFile(filepath.Join(prefix, "other.json"), good, 0o600); err != nil {
		t.Fatal(err)
	}
	a := newUpstream(t, "sf_sub", replyMessage("from sub"))
	b := newUpstream(t, "sf_key", replyMessage("from key"))
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	p := newProxy(t)
	cfg := strings.Replace(shareCaddyfile(p.AdminAddr, p.URL, storage, a.providerBlock(), b.providerBlock()),
		"\tpersist_config off\n", "\tpersist_config off\n\tlog {\n\t\toutput file "+logFile+"\n\t\tformat json\n\t}\n", 1)
	p.load(cfg)
	stopAtCleanup(t)
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if got := readAll(t, res); !strings.Contains(got, "from key") {
		t.Fatalf("the good entry among bad ones was not adopted: %s", got)
	}
	logText, _ := os.ReadFile(logFile)
	if !strings.Contains(string(logText), "shared breaker") {
		t.Fatalf("no log line about the bad entries:\n%s", logText)
	}

	// storage that blocks: requests do not wait for it
	slowStorageDelay.Store(int64(3 * time.Second))
	t.Cleanup(func() { slowStorageDelay.Store(0) })
	slowCfg := strings.Replace(cfg, "storage file_system "+storage, "storage llmf_test_slow "+storage, 1)
	resetProviderStates()
	p.load(slowCfg)
	a.setHandler(replyError(429, "rate_limit_error", "limited", "Retry-After", "600"))
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/messages", strings.NewReader(simpleRequest))
		res, err := freshConnClient.Do(req) // a new connection after the reload
		if err != nil {
			cancel()
			t.Fatalf("request %d with blocking storage missed its 1s deadline: %v", i, err)
		}
		readAll(t, res)
		cancel()
	}
}

// slowStorage is file-system storage whose every operation blocks for
// slowStorageDelay: a store that is up but slow.
type slowStorage struct {
	certmagic.FileStorage
}

var slowStorageDelay atomicDuration

type atomicDuration struct{ v atomic.Int64 }

func (d *atomicDuration) Store(n int64) { d.v.Store(n) }
func (d *atomicDuration) wait(ctx context.Context) error {
	select {
	case <-time.After(time.Duration(d.v.Load())):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *slowStorage) Store(ctx context.Context, key string, value []byte) error {
	if err := slowStorageDelay.wait(ctx); err != nil {
		return err
	}
	return s.FileStorage.Store(ctx, key, value)
}

func (s *slowStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := slowStorageDelay.wait(ctx); err != nil {
		return nil, err
	}
	return s.FileStorage.Load(ctx, key)
}

func (s *slowStorage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	if err := slowStorageDelay.wait(ctx); err != nil {
		return nil, err
	}
	return s.FileStorage.List(ctx, prefix, recursive)
}

// slowStorageModule is the caddy.storage.llmf_test_slow module.
type slowStorageModule struct {
	Root string `json:"root"`
}

func (slowStorageModule) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "caddy.storage.llmf_test_slow", New: func() caddy.Module { return new(slowStorageModule) }}
}

func (m *slowStorageModule) CertMagicStorage() (certmagic.Storage, error) {
	return &slowStorage{certmagic.FileStorage{Path: m.Root}}, nil
}

func (m *slowStorageModule) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	if !d.NextArg() {
		return d.ArgErr()
	}
	m.Root = d.Val()
	return nil
}

func init() { caddy.RegisterModule(slowStorageModule{}) }
