package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

func adminGet(t *testing.T, p *proxy, path string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + p.AdminAddr + path)
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, readAll(t, res)
}

func adminPost(t *testing.T, p *proxy, path, body string) (int, string) {
	t.Helper()
	res, err := http.Post("http://"+p.AdminAddr+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, readAll(t, res)
}

func providerStatuses(t *testing.T, p *proxy) map[string]map[string]any {
	t.Helper()
	code, body := adminGet(t, p, "/llm/providers")
	if code != 200 {
		t.Fatalf("GET /llm/providers: %d %s", code, body)
	}
	var resp struct {
		Providers []map[string]any `json:"providers"`
	}
	if err := json.Unmarshal([]byte(body), &resp); err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]any{}
	var order []string
	for _, pr := range resp.Providers {
		out[pr["name"].(string)] = pr
		order = append(order, pr["name"].(string))
	}
	out["_order"] = map[string]any{"names": strings.Join(order, ",")}
	return out
}

// The status endpoint shows each provider's state, the class and time of
// its last failure, the cooldown end and time left, counters and the
// credential's state (never its value).
func TestStatusEndpoint(t *testing.T) {
	clock := useFakeClock(t)
	t.Setenv("LLMF_STATUS_KEY", "sk-status-secret")
	a := newUpstream(t, "st_a", replyError(429, "rate_limit_error", "limited", "Retry-After", "240"))
	b := newUpstream(t, "st_b", replyMessage("from b"))
	c := newUpstream(t, "st_c", replyMessage("from c"))
	p := startProxy(t, failoverSite(a.providerBlock("credential env LLMF_STATUS_KEY"), b.providerBlock("credential env LLMF_STATUS_MISSING"), c.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	clock.Advance(60 * time.Second)

	st := providerStatuses(t, p)
	if st["_order"]["names"] != "st_a,st_b,st_c" {
		t.Fatalf("order %v", st["_order"])
	}
	sa := st["st_a"]
	if sa["state"] != "open" || sa["last_class"] != "rate_limit" || sa["cooldown_left_seconds"].(float64) != 180 ||
		sa["cooldown_left"] != "3 minutes" || sa["credential"] != "ok" || sa["requests"].(float64) != 1 ||
		sa["failovers"].(float64) != 1 || sa["consecutive_failures"].(float64) != 1 {
		t.Fatalf("st_a: %v", sa)
	}
	until, err := time.Parse(time.RFC3339, sa["cooldown_until"].(string))
	if err != nil || !until.Equal(clock.Now().Add(180*time.Second)) {
		t.Fatalf("cooldown_until %v %v", sa["cooldown_until"], err)
	}
	if _, err := time.Parse(time.RFC3339, sa["last_failure"].(string)); err != nil {
		t.Fatalf("last_failure %v", sa["last_failure"])
	}
	sb := st["st_b"]
	if sb["state"] != "open" || sb["last_class"] != "auth" || sb["credential"] != "missing" {
		t.Fatalf("st_b: %v", sb)
	}
	sc := st["st_c"]
	if sc["state"] != "closed" || sc["cooldown_until"] != "" || sc["successes"].(float64) != 1 {
		t.Fatalf("st_c: %v", sc)
	}
	_, raw := adminGet(t, p, "/llm/providers")
	if strings.Contains(raw, "sk-status-secret") {
		t.Fatal("the status endpoint printed a secret")
	}
	// past the cooldown the breaker reads half-open
	clock.Advance(181 * time.Second)
	if st := providerStatuses(t, p); st["st_a"]["state"] != "half_open" {
		t.Fatalf("after the cooldown: %v", st["st_a"]["state"])
	}
}

// Reset and a manual cooldown change routing at once; bad input is a
// clear 4xx.
func TestAdminResetAndCooldown(t *testing.T) {
	useFakeClock(t)
	p, _, _ := startPair(t, "ad_a", replyMessage("from a"),
		"ad_b", replyMessage("from b"))
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from a") {
		t.Fatal(got)
	}
	if code, body := adminPost(t, p, "/llm/providers/ad_a/cooldown", `{"duration":"10m"}`); code != 200 || !strings.Contains(body, `"state":"open"`) {
		t.Fatalf("cooldown: %d %s", code, body)
	}
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from b") {
		t.Fatalf("after a manual cooldown: %s", got)
	}
	if code, body := adminPost(t, p, "/llm/providers/ad_a/reset", ""); code != 200 || !strings.Contains(body, `"state":"closed"`) {
		t.Fatalf("reset: %d %s", code, body)
	}
	// the manual cooldown was ended by hand: nothing says `manual` any more
	if st := providerStatuses(t, p)["ad_a"]; st["last_class"] != nil && st["last_class"] != "" {
		t.Fatalf("after reset, last_class %v (%v)", st["last_class"], st["last_error"])
	}
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from a") {
		t.Fatalf("after reset: %s", got)
	}
	if code, body := adminPost(t, p, "/llm/providers/nope/reset", ""); code != 404 || !strings.Contains(body, `no provider named \"nope\"`) {
		t.Fatalf("unknown provider: %d %s", code, body)
	}
	if code, body := adminPost(t, p, "/llm/providers/ad_a/cooldown?duration=soon", ""); code != 400 || !strings.Contains(body, "not a positive duration") {
		t.Fatalf("bad duration: %d %s", code, body)
	}
	if code, _ := adminPost(t, p, "/llm/providers/ad_a/cooldown", ""); code != 400 {
		t.Fatalf("missing duration: %d", code)
	}
}

// metricValue finds one sample in Prometheus text output.
func metricValue(t *testing.T, text, name string, labels ...string) (string, bool) {
	t.Helper()
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(line, l) {
				ok = false
			}
		}
		if ok {
			f := strings.Fields(line)
			return f[len(f)-1], true
		}
	}
	return "", false
}

var metricsRuns atomic.Int32

// /metrics exposes the named series with the right labels and values
// after a scripted sequence, tokens included.
func TestMetrics(t *testing.T) {
	useFakeClock(t)
	// the metrics live as long as the process: each run names its own
	// providers, so that -count=N sees only its own series
	run := metricsRuns.Add(1)
	nameA, nameB := fmt.Sprintf("mx_a%d", run), fmt.Sprintf("mx_b%d", run)
	a := newUpstream(t, nameA, replyError(529, "overloaded_error", "Overloaded"))
	b := newUpstream(t, nameB, func(w http.ResponseWriter, r *http.Request, body []byte) {
		if bytes.Contains(body, []byte(`"stream":true`)) {
			writeStream(w, streamEvents("glm-4.6", "a", "b", "c"))
			return
		}
		replyMessage("from b")(w, r, body)
	})
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock("model claude-* glm-4.6")))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))    // a fails (overloaded), b answers
	readAll(t, post(t, p.URL+"/v1/messages", streamingRequest)) // a cooling: b streams
	_, text := adminGet(t, p, "/metrics")

	checks := []struct {
		name   string
		labels []string
		want   string
	}{
		{"caddy_llm_attempts_total", []string{`provider="` + nameA + `"`, `outcome="overloaded"`}, "1"},
		{"caddy_llm_attempts_total", []string{`provider="` + nameB + `"`, `outcome="success"`}, "2"},
		{"caddy_llm_failovers_total", []string{`provider="` + nameA + `"`, `class="overloaded"`}, "1"},
		{"caddy_llm_breaker_state", []string{`provider="` + nameA + `"`}, "2"},
		{"caddy_llm_breaker_state", []string{`provider="` + nameB + `"`}, "0"},
		{"caddy_llm_cooldown_seconds_left", []string{`provider="` + nameA + `"`}, "30"},
		// non-streaming usage 12/7, streaming message_start 25 in, message_delta 3 out
		{"caddy_llm_tokens_total", []string{`provider="` + nameB + `"`, `model="glm-4.6"`, `kind="input"`}, "37"},
		{"caddy_llm_tokens_total", []string{`provider="` + nameB + `"`, `model="glm-4.6"`, `kind="output"`}, "10"},
		{"caddy_llm_time_to_first_event_seconds_count", []string{`provider="` + nameB + `"`}, "1"},
		{"caddy_llm_time_to_first_content_seconds_count", []string{`provider="` + nameB + `"`}, "1"},
	}
	for _, c := range checks {
		got, ok := metricValue(t, text, c.name, c.labels...)
		if !ok || got != c.want {
			t.Errorf("%s%v = %q (found %v), want %s", c.name, c.labels, got, ok, c.want)
		}
	}
	if t.Failed() {
		t.Logf("metrics:\n%s", grepLines(text, "caddy_llm_"))
	}
}

func grepLines(text, sub string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// The placeholders reach an access log as JSON fields, with the README's
// log block, and the failover log line names the provider and class.
func TestPlaceholdersInAccessLog(t *testing.T) {
	useFakeClock(t)
	dir := t.TempDir()
	accessLog := filepath.Join(dir, "access.log")
	a := newUpstream(t, "pl_a", replyError(429, "rate_limit_error", "limited"))
	b := newUpstream(t, "pl_b", replyEvents(streamEvents("glm-4.6", "x", "y")))
	site := failoverSite(a.providerBlock(), b.providerBlock("model claude-* glm-4.6")) + `
	log_append llm_provider {llm.provider}
	log_append llm_attempts {llm.attempts}
	log_append llm_failover_classes {llm.failover_classes}
	log_append llm_model {llm.model}
	log_append llm_input_tokens {llm.input_tokens}
	log_append llm_output_tokens {llm.output_tokens}
	log {
		output file ` + accessLog + `
		format filter {
			request>headers>X-Api-Key delete
			request>headers>Authorization delete
		}
	}`
	p := startProxy(t, site)
	msg, _, err := streamRequest(t, sdkClient(p))
	if err != nil || textOf(&msg) != "xy" {
		t.Fatalf("%q %v", textOf(&msg), err)
	}
	var entry map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for entry == nil && time.Now().Before(deadline) {
		raw, _ := os.ReadFile(accessLog)
		if line, _, _ := bytes.Cut(raw, []byte("\n")); len(line) > 0 {
			if err := json.Unmarshal(line, &entry); err != nil {
				t.Fatalf("access log line: %v: %s", err, line)
			}
			if strings.Contains(string(raw), "sk-client-key-must-not-leak") {
				t.Fatal("the access log printed the client's x-api-key")
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	want := map[string]any{"llm_provider": "pl_b", "llm_attempts": float64(2), "llm_failover_classes": "rate_limit",
		"llm_model": "glm-4.6", "llm_input_tokens": float64(25), "llm_output_tokens": float64(2)}
	for k, v := range want {
		if entry[k] != v {
			t.Errorf("%s = %#v, want %#v (entry %v)", k, entry[k], v, entry)
		}
	}
}

// A reload under a concurrent load of streaming and non-streaming requests
// loses none, keeps a cooldown, and drops a removed provider from status.
func TestReloadUnderLoad(t *testing.T) {
	useFakeClock(t)
	cooling := newUpstream(t, "rl_cooling", replyError(429, "rate_limit_error", "limited", "Retry-After", "3600"))
	b := newUpstream(t, "rl_b", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if bytes.Contains(body, []byte(`"stream":true`)) {
			w.Header().Set("Content-Type", "text/event-stream")
			w.WriteHeader(200)
			for _, ev := range streamEvents("m", "slow", " stream") {
				_, _ = io.WriteString(w, ev)
				w.(http.Flusher).Flush()
				time.Sleep(5 * time.Millisecond)
			}
			return
		}
		time.Sleep(10 * time.Millisecond)
		replyMessage("from b")(w, r, body)
	})
	extra := newUpstream(t, "rl_extra", replyMessage("from extra"))
	p := startProxy(t, failoverSite(cooling.providerBlock(), b.providerBlock(), extra.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	if cooling.Hits() != 1 {
		t.Fatal("setup: cooling provider not hit")
	}

	var mu sync.Mutex
	var tries sync.Map // request index -> []error, to tell what the SDK retried
	// New connections per request: a keep-alive connection that the old
	// server closes as idle while the client reuses it fails in net/http
	// before any handler runs (plain reverse_proxy the same); that race is
	// not what this test measures.
	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	client := sdkClient(p, option.WithMaxRetries(2), option.WithHTTPClient(noKeepAlive),
		option.WithMiddleware(func(r *http.Request, next option.MiddlewareNext) (*http.Response, error) {
			res, err := next(r)
			id := r.Header.Get("X-Test-Index")
			v, _ := tries.LoadOrStore(id, &[]string{})
			mu.Lock()
			*(v.(*[]string)) = append(*(v.(*[]string)), fmt.Sprint(err))
			mu.Unlock()
			return res, err
		}))
	const total = 240
	var failed atomic.Int32
	var wg sync.WaitGroup
	var failures []string
	start := make(chan struct{})
	for i := range total {
		wg.Go(func() {
			<-start
			var err error
			var text string
			idx := option.WithHeader("X-Test-Index", fmt.Sprint(i))
			if i%2 == 0 {
				msg, _, e := streamRequest(t, client, idx)
				err, text = e, textOf(&msg)
			} else {
				msg, e := client.Messages.New(context.Background(), userMessage("hi"), idx)
				err = e
				if msg != nil {
					text = textOf(msg)
				}
			}
			if err != nil || (text != "slow stream" && text != "from b") {
				failed.Add(1)
				mu.Lock()
				v, _ := tries.Load(fmt.Sprint(i))
				failures = append(failures, fmt.Sprintf("%d: %q %v (tries %v)", i, text, err, v))
				mu.Unlock()
			}
		})
	}
	// each reload lands while requests are in flight: the first after a
	// sixth of them reached rl_b, the second after half
	before := b.Hits()
	close(start)
	waitFor(t, "requests to reach rl_b", 10*time.Second, func() bool { return b.Hits() >= before+total/6 })
	p.reload(failoverSite(cooling.providerBlock(), b.providerBlock("cooldown server_error 5s")))
	waitFor(t, "requests to reach rl_b", 10*time.Second, func() bool { return b.Hits() >= before+total/2 })
	p.reload(failoverSite(cooling.providerBlock(), b.providerBlock()))
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Fatalf("%d of %d requests failed across the reloads: %v", n, total, failures[:min(5, len(failures))])
	}
	if cooling.Hits() != 1 {
		t.Fatalf("the cooling provider was contacted %d times: cooldown lost in the reload", cooling.Hits())
	}
	st := providerStatuses(t, p)
	if _, ok := st["rl_extra"]; ok || st["_order"]["names"] != "rl_cooling,rl_b" {
		t.Fatalf("status after removing rl_extra: %v", st["_order"])
	}
	if st["rl_cooling"]["state"] != "open" {
		t.Fatalf("cooling provider: %v", st["rl_cooling"])
	}
}

// `caddy llm` prints the status table from a running instance and resets.
func TestLLMCommand(t *testing.T) {
	useFakeClock(t)
	p, _, _ := startPair(t, "cmd_a", replyError(429, "rate_limit_error", "limited", "Retry-After", "300"),
		"cmd_b", replyMessage("from b"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))

	var out bytes.Buffer
	code, err := runLLMCommand(&out, p.AdminAddr, "", "", false, nil)
	if err != nil || code != 0 {
		t.Fatalf("caddy llm: %d %v", code, err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table:\n%s", out.String())
	}
	// first, the instance it talks to: its admin address and its site
	if want := "Caddy at " + p.AdminAddr + ", serving " + p.URL; lines[0] != want {
		t.Fatalf("instance line %q, want %q", lines[0], want)
	}
	lines = lines[1:]
	header := regexp.MustCompile(`\s{2,}`).Split(lines[0], -1)
	rowA := regexp.MustCompile(`\s{2,}`).Split(lines[1], -1)
	if header[0] != "PROVIDER" || len(rowA) != len(header) {
		t.Fatalf("columns not aligned:\n%s", out.String())
	}
	if rowA[0] != "cmd_a" || rowA[1] != "open" || rowA[2] != "rate_limit" || rowA[3] != "5 minutes" {
		t.Fatalf("row a: %q", rowA)
	}
	// columns line up: each field starts where its header starts
	col := strings.Index(lines[0], "STATE")
	if lines[1][col:col+4] != "open" || lines[2][col:col+6] != "closed" {
		t.Fatalf("misaligned:\n%s", out.String())
	}

	out.Reset()
	if code, err := runLLMCommand(&out, p.AdminAddr, "", "", false, []string{"reset", "cmd_a"}); err != nil || code != 0 {
		t.Fatalf("reset: %d %v", code, err)
	}
	if s := snapshot(t, "cmd_a"); s.State != breaker.Closed {
		t.Fatalf("after caddy llm reset: %s", s.State)
	}
	if _, err := runLLMCommand(&out, p.AdminAddr, "", "", false, []string{"reset", "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown provider: %v", err)
	}
	if code, _ := runLLMCommand(&out, p.AdminAddr, "", "", false, []string{"frobnicate"}); code != 2 {
		t.Fatalf("bad usage exit code %d", code)
	}
}
