package failover

import (
	"fmt"
	"os"
	"os/signal"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// A second Caddy instance runs in a child process: the test binary itself,
// started with LLMF_CHILD_CADDYFILE. Caddy's config is process-global, so
// two instances need two processes, as in a real fleet.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("LLMF_CHILD_CADDYFILE"); cfg != "" {
		runChildInstance(cfg)
		return
	}
	os.Exit(m.Run())
}

func runChildInstance(caddyfileText string) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "child: adapt:", err)
		os.Exit(2)
	}
	if err := caddy.Load(cfg, true); err != nil {
		fmt.Fprintln(os.Stderr, "child: load:", err)
		os.Exit(2)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt)
	<-sig
	_ = caddy.Stop()
	os.Exit(0)
}
