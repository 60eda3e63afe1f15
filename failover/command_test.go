package failover

import (
	"bytes"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// `caddy llm` errors are one human line on stderr and a non-zero exit,
// never a JSON log line. The command runs in a child process of the test
// binary, since it exits.
func TestLLMCommandErrorIsOneLine(t *testing.T) {
	if args := os.Getenv("LLMF_TEST_CMD"); args != "" {
		exitOnError(runLLMCommand(os.Stdout, os.Getenv("LLMF_TEST_ADMIN"), "", "", false, strings.Fields(args)))
		os.Exit(0)
	}
	a := newUpstream(t, "a", replyMessage("a"))
	p := startProxy(t, failoverSite(a.providerBlock()))
	dead := freeAddr(t)
	for _, tc := range []struct {
		admin, args, want string
		code              int
	}{
		{dead, "status", "caddy llm: no Caddy admin endpoint at " + dead + " (is it running?)\n", 1},
		{p.AdminAddr, "reset nosuch", "caddy llm: no provider named \"nosuch\" in the running config\n", 1},
		{p.AdminAddr, "cooldown a soon", "caddy llm: cooldown: \"soon\" is not a positive duration such as 90s, 10m or 2h\n", 1},
		{p.AdminAddr, "frobnicate", "caddy llm: usage: caddy llm [status | reset <provider> | cooldown <provider> <duration> | claude [--undo]]\n", 2},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestLLMCommandErrorIsOneLine$")
		cmd.Env = append(os.Environ(), "LLMF_TEST_CMD="+tc.args, "LLMF_TEST_ADMIN="+tc.admin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
		if stderr.String() != tc.want || code != tc.code {
			t.Errorf("caddy llm %s: exit %d, stderr %q; want %d, %q", tc.args, code, stderr.String(), tc.code, tc.want)
		}
	}
}

// A passthrough provider whose clients are cooling says so in the table,
// not `closed`.
func TestStatusTableShowsCoolingClients(t *testing.T) {
	var out bytes.Buffer
	printStatusTable(&out, []ProviderStatus{
		{Name: "subscription", State: breaker.Closed, LastClass: classify.Quota, ClientsCooling: 2, Credential: "ok"},
		{Name: "anthropic", State: breaker.Closed, Credential: "ok"},
	})
	lines := strings.Split(out.String(), "\n")
	if !strings.Contains(lines[1], "2 clients cooling") || !strings.Contains(lines[1], "quota") {
		t.Fatalf("table:\n%s", out.String())
	}
	if !strings.Contains(lines[2], "closed") {
		t.Fatalf("table:\n%s", out.String())
	}
}

func TestFormatUsage(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	u := &UsageStatus{Binding: "5h", Windows: map[string]WindowStatus{
		"7d": {Utilization: f(0.41), ResetsInSeconds: 3 * 86400},
		"5h": {Utilization: f(0.87), ResetsInSeconds: 72 * 60},
	}}
	if got := formatUsage(u); got != "5h 87% · resets in 1h12m | 7d 41%" {
		t.Fatalf("got %q", got)
	}
	if got := formatUsage(nil); got != "-" {
		t.Fatalf("nil: %q", got)
	}
	for d, want := range map[time.Duration]string{
		30 * time.Second: "30s", 4 * time.Minute: "4m", time.Hour: "1h", 73 * time.Minute: "1h13m",
		50 * time.Hour: "2d2h", 48 * time.Hour: "2d",
	} {
		if got := compactDuration(d); got != want {
			t.Errorf("%v: %q want %q", d, got, want)
		}
	}
}

// The default table fits a terminal of 100 columns with what a busy
// gateway shows (a passthrough provider with cooling clients, usage of
// three windows, spend, a credential that is missing and says why); -v
// keeps every column on the row.
func TestStatusTableFits100Columns(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	providers := []ProviderStatus{
		{Name: "subscription", State: breaker.Closed, LastClass: classify.Quota, ClientsCooling: 12, CooldownLeft: "2h58m",
			Requests: 123456, Successes: 120000, Failovers: 3456, Credential: "ok", SpendUSD: 1234.56,
			Usage: &UsageStatus{Binding: "5h", Windows: map[string]WindowStatus{
				"5h": {Utilization: f(0.87), ResetsInSeconds: 72 * 60}, "7d": {Utilization: f(0.41)}, "7d_sonnet": {Utilization: f(0.1)}}},
			Scopes: []ScopeStatus{{Scope: "sonnet", Class: classify.Quota, CooldownLeft: "3d4h"}}},
		{Name: "anthropic", State: breaker.Open, LastClass: classify.RateLimit, CooldownLeft: "10 minutes",
			Requests: 99999, Successes: 99000, Failovers: 999, Credential: "missing",
			CredentialReason: "environment variable ANTHROPIC_API_KEY is not set in the proxy's environment: set it before starting Caddy, or put it in ~/.config/llm-failover/env"},
		{Name: "zai", State: breaker.Closed, Credential: "ok"},
	}
	var out bytes.Buffer
	printCompactStatusTable(&out, providers)
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if n := utf8.RuneCountInString(line); n > 100 {
			t.Errorf("%d columns: %q", n, line)
		}
	}
	for _, want := range []string{"12 clients cooling", "usage: 5h 87% · resets in 1h12m | 7d 41% | 7d_sonnet 10%", "spend: $1,234.56",
		"credential missing: environment variable ANTHROPIC_API_KEY", "sonnet cooling: quota, 3d4h left", "starting Caddy"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("default table lacks %q:\n%s", want, out.String())
		}
	}
	var wide bytes.Buffer
	printStatusTable(&wide, providers)
	if first := strings.Split(wide.String(), "\n")[1]; !strings.Contains(first, "12 clients cooling") || !strings.Contains(first, "5h 87%") {
		t.Errorf("-v: the row lacks its usage:\n%s", wide.String())
	}
	t.Logf("\n%s", out.String())
}
