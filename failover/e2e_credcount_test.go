package failover

import (
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

// Metrics, logs and headers count only what happened: a retry with a
// renewed credential is no failover, and a provider that was never sent a
// request is never named as the one that answered.

// A 401 that the credential source renews is retried on the same provider:
// that is not a failover, in the log, the metrics, the status or the
// answer's headers.
func TestCredRenewedRetryIsNotAFailover(t *testing.T) {
	useFakeClock(t)
	c := newRevokedClaudeSub(t, "sk-ant-oat01-renewed", "rn_sub", "rn_backup")
	sub, backup := c.sub, c.backup
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	p, _ := startProxyWithGlobals(t, debugLogTo(logFile), c.site())

	msg, raw, err := sendMessage(sdkClient(p), "hi")
	if err != nil || textOf(msg) != "from rn_sub" {
		t.Fatalf("%v %v; want rn_sub's answer after the retry", msg, err)
	}
	if raw.Header.Get("X-LLM-Provider") != "rn_sub" || raw.Header.Get("X-LLM-Attempts") != "2" || sub.Hits() != 2 || backup.Hits() != 0 {
		t.Fatalf("X-LLM-Provider %q X-LLM-Attempts %q, hits %d/%d; want rn_sub, 2 attempts, 2 and 0",
			raw.Header.Get("X-LLM-Provider"), raw.Header.Get("X-LLM-Attempts"), sub.Hits(), backup.Hits())
	}
	_, text := adminGet(t, p, "/metrics")
	if v, ok := metricValue(t, text, "caddy_llm_failovers_total", `provider="rn_sub"`); ok {
		t.Errorf("caddy_llm_failovers_total{provider=rn_sub} = %s; the retry with a renewed credential is no failover", v)
	}
	for outcome, want := range map[string]string{"auth": "1", "success": "1"} {
		if v, _ := metricValue(t, text, "caddy_llm_attempts_total", `provider="rn_sub"`, `outcome="`+outcome+`"`); v != want {
			t.Errorf("caddy_llm_attempts_total{rn_sub,%s} = %q, want %s", outcome, v, want)
		}
	}
	if s := snapshot(t, "rn_sub"); s.Failovers != 0 || s.State != breaker.Closed || s.ConsecutiveFailures != 0 {
		t.Errorf("rn_sub: %+v, want closed with no failover", s)
	}
	logs := readFileString(t, logFile)
	for _, line := range strings.Split(logs, "\n") {
		if strings.Contains(line, "failing over") && strings.Contains(line, "rn_sub") {
			t.Errorf("logged as a failover: %s", line)
		}
	}
	if !strings.Contains(logs, "retrying with a renewed one") {
		t.Errorf("the retry with a renewed credential is not logged")
	}
}

// A provider whose credential is missing is never sent a request, so it is
// never the provider the answer names, nor counted as an attempt; the
// answer of a provider that did answer is kept.
func TestCredMissingCredentialIsNeverNamed(t *testing.T) {
	useFakeClock(t)
	t.Run("after a failed provider", func(t *testing.T) {
		b := newUpstream(t, "mc_b", replyError(500, "api_error", "Internal server error from mc_b"))
		a := newUpstream(t, "mc_a", replyMessage("from mc_a"))
		p := startProxy(t, failoverSite(b.providerBlock(), a.providerBlock("credential env LLMF_CRED_NOT_SET_ANYWHERE")))
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		body := readAll(t, res)
		if res.StatusCode != 500 || !strings.Contains(body, "from mc_b") {
			t.Fatalf("%d %s; want mc_b's own 500", res.StatusCode, body)
		}
		if res.Header.Get("X-LLM-Provider") != "mc_b" || res.Header.Get("X-LLM-Attempts") != "1" {
			t.Fatalf("X-LLM-Provider %q X-LLM-Attempts %q; want mc_b and 1 (mc_a was never sent the request)",
				res.Header.Get("X-LLM-Provider"), res.Header.Get("X-LLM-Attempts"))
		}
		_, text := adminGet(t, p, "/metrics")
		if v, ok := metricValue(t, text, "caddy_llm_attempts_total", `provider="mc_a"`); ok {
			t.Fatalf("caddy_llm_attempts_total{provider=mc_a} = %s; it was never sent a request", v)
		}
		if a.Hits() != 0 {
			t.Fatalf("mc_a hits %d", a.Hits())
		}
	})
	t.Run("alone", func(t *testing.T) {
		a := newUpstream(t, "mc_only", replyMessage("from mc_only"))
		p := startProxy(t, failoverSite(a.providerBlock("credential env LLMF_CRED_NOT_SET_ANYWHERE")))
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		body := readAll(t, res)
		if res.StatusCode != http.StatusBadGateway {
			t.Fatalf("%d %s; want 502: no provider could be sent the request", res.StatusCode, body)
		}
		if v := res.Header.Values("X-LLM-Provider"); len(v) != 0 || res.Header.Get("X-LLM-Attempts") != "0" {
			t.Fatalf("X-LLM-Provider %q X-LLM-Attempts %q; want none and 0", v, res.Header.Get("X-LLM-Attempts"))
		}
	})
}
