package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// utilization is a fake subscription's 5h utilization, settable by the
// test, in thousandths.
type utilization struct{ milli atomic.Int64 }

func (u *utilization) set(f float64) { u.milli.Store(int64(f * 1000)) }
func (u *utilization) get() float64  { return float64(u.milli.Load()) / 1000 }

// replyWithUsage answers a message and reports the subscription's usage:
// its 5h window at util, resetting at reset5h, and 7d at 0.41.
func replyWithUsage(text string, util *utilization, reset5h func() time.Time) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		setUnified(w.Header(), util.get(), reset5h())
		replyMessage(text)(w, r, body)
	}
}

// usageSub is a subscription upstream that answers "sub" and reports its
// 5h window at util, resetting at reset; tests move both.
type usageSub struct {
	*fakeUpstream
	util  utilization
	reset time.Time
}

func newUsageSub(t *testing.T, name string, util float64, reset time.Time) *usageSub {
	t.Helper()
	s := &usageSub{reset: reset}
	s.util.set(util)
	s.fakeUpstream = newUpstream(t, name, replyWithUsage("sub", &s.util, func() time.Time { return s.reset }))
	return s
}

func setUnified(h http.Header, util5h float64, reset5h time.Time) {
	status := "allowed"
	if util5h >= 0.8 {
		status = "allowed_warning"
	}
	h.Set("Anthropic-Ratelimit-Unified-Status", status)
	h.Set("Anthropic-Ratelimit-Unified-5h-Utilization", strconv.FormatFloat(util5h, 'f', -1, 64))
	h.Set("Anthropic-Ratelimit-Unified-5h-Reset", strconv.FormatInt(reset5h.Unix(), 10))
	h.Set("Anthropic-Ratelimit-Unified-5h-Status", status)
	h.Set("Anthropic-Ratelimit-Unified-7d-Utilization", "0.41")
	h.Set("Anthropic-Ratelimit-Unified-7d-Reset", strconv.FormatInt(reset5h.Add(72*time.Hour).Unix(), 10))
	h.Set("Anthropic-Ratelimit-Unified-7d-Status", "allowed")
	h.Set("Anthropic-Ratelimit-Unified-Representative-Claim", "five_hour")
}

// answeredBy sends one request (in a conversation, when session is set)
// and returns the provider that answered.
func answeredBy(t *testing.T, p *proxy, session string, header ...string) string {
	t.Helper()
	if session != "" {
		header = append(header, "X-Claude-Code-Session-Id", session)
	}
	res := post(t, p.URL+"/v1/messages", simpleRequest, header...)
	body := readAll(t, res)
	if res.StatusCode != 200 {
		t.Fatalf("status %d: %s", res.StatusCode, body)
	}
	return res.Header.Get("X-LLM-Provider")
}

// With max_utilization 90%, requests move to the next provider once 0.92
// is reported, come back after the window's reset, and a saturated
// provider is still used when nothing else admits.
func TestMaxUtilizationMovesBeforeTheLimit(t *testing.T) {
	clock := useFakeClock(t)
	sub := newUsageSub(t, "mu_sub", 0.5, clock.Now().Add(72*time.Minute))
	key := newUpstream(t, "mu_key", replyMessage("key"))
	p := startProxy(t, failoverSite(sub.providerBlock("max_utilization 90%"), key.providerBlock()))

	for range 3 {
		if got := answeredBy(t, p, ""); got != "mu_sub" {
			t.Fatalf("below the max: %s", got)
		}
	}
	sub.util.set(0.92)
	if got := answeredBy(t, p, ""); got != "mu_sub" {
		t.Fatalf("the response that reports 0.92 still comes from sub: %s", got)
	}
	for range 5 {
		if got := answeredBy(t, p, ""); got != "mu_key" {
			t.Fatalf("after 0.92 was reported: %s, want the next provider", got)
		}
	}
	st := providerStatuses(t, p)["mu_sub"]
	sat, _ := st["saturated"].(map[string]any)
	if st["state"] != "closed" || sat == nil || sat["window"] != "5h" || sat["until"] != sub.reset.UTC().Format(time.RFC3339) {
		t.Fatalf("status of a saturated provider: %v", st)
	}

	// nothing else admits: the saturated provider is used, never cooled
	key.setHandler(replyError(529, "overloaded_error", "busy"))
	if got := answeredBy(t, p, ""); got != "mu_sub" {
		t.Fatalf("with the other cooling: %s, want the saturated provider", got)
	}
	key.setHandler(replyMessage("key"))
	clock.Advance(time.Minute) // key's overload cooldown ends
	if got := answeredBy(t, p, ""); got != "mu_key" {
		t.Fatalf("key admits again: %s", got)
	}

	// the window resets: back to the subscription
	sub.util.set(0.01)
	sub.reset = sub.reset.Add(5 * time.Hour)
	clock.Advance(72 * time.Minute)
	for range 3 {
		if got := answeredBy(t, p, ""); got != "mu_sub" {
			t.Fatalf("after the window's reset: %s", got)
		}
	}
	if st := providerStatuses(t, p)["mu_sub"]; st["saturated"] != nil {
		t.Fatalf("still saturated: %v", st)
	}
}

// A passthrough provider keeps usage per client: one client's full
// subscription moves that client only.
func TestUsageIsPerClientForPassthrough(t *testing.T) {
	clock := useFakeClock(t)
	reset := clock.Now().Add(time.Hour)
	sub := newUpstream(t, "pc_sub", func(w http.ResponseWriter, r *http.Request, body []byte) {
		util := 0.2
		if r.Header.Get("Authorization") == "Bearer sk-ant-oat01-full" {
			util = 0.95
		}
		setUnified(w.Header(), util, reset)
		replyMessage("sub")(w, r, body)
	})
	key := newUpstream(t, "pc_key", replyMessage("key"))
	p := startProxy(t, failoverSite(sub.providerBlock("credential passthrough", "max_utilization 90%"), key.providerBlock()))
	full := []string{"Authorization", "Bearer sk-ant-oat01-full"}
	light := []string{"Authorization", "Bearer sk-ant-oat01-light"}
	if answeredBy(t, p, "", full...) != "pc_sub" || answeredBy(t, p, "", light...) != "pc_sub" {
		t.Fatal("first requests")
	}
	for range 3 {
		if got := answeredBy(t, p, "", full...); got != "pc_key" {
			t.Fatalf("the full client: %s", got)
		}
		if got := answeredBy(t, p, "", light...); got != "pc_sub" {
			t.Fatalf("the other client: %s", got)
		}
	}
}

// Two spread providers, 6 interleaved conversations of 10 requests: each
// conversation stays on one provider, the conversations split across both;
// when one provider cools, its conversations move and stay moved, also
// after it recovers.
func TestAffinityKeepsConversationsTogether(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "af_a", replyMessage("a"))
	b := newUpstream(t, "af_b", replyMessage("b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock(), "\t\tpolicy spread\n"))

	where := map[string]string{}
	for round := range 10 {
		if round == 5 {
			a.setHandler(replyError(429, "rate_limit_error", "limited", "Retry-After", "600"))
		}
		if round == 8 {
			a.setHandler(replyMessage("a"))
			clock.Advance(11 * time.Minute) // a admits again
		}
		for c := range 6 {
			conv := fmt.Sprint("conv-", c)
			got := answeredBy(t, p, conv)
			prev, seen := where[conv]
			switch {
			case !seen:
				where[conv] = got
			case round < 5 && got != prev:
				t.Fatalf("round %d: %s moved from %s to %s", round, conv, prev, got)
			case round >= 5 && got != "af_b":
				t.Fatalf("round %d: %s on %s; a cooled at round 5, so every conversation is on b for good", round, conv, got)
			}
			if round == 4 {
				where[conv+"@4"] = got
			}
		}
	}
	onA := 0
	for c := range 6 {
		if where[fmt.Sprint("conv-", c, "@4")] == "af_a" {
			onA++
		}
	}
	if onA != 3 {
		t.Fatalf("%d of 6 conversations on a before it cooled, want 3 (split across both): %v", onA, where)
	}
	// without a session id spread rotates as before
	got := map[string]int{}
	for range 10 {
		got[answeredBy(t, p, "")]++
	}
	if got["af_a"] != 5 || got["af_b"] != 5 {
		t.Fatalf("requests without a conversation: %v", got)
	}
}

// New conversations go to the provider with the most headroom; equal
// utilization goes to the window that resets soonest.
func TestSpreadPlacesByHeadroom(t *testing.T) {
	clock := useFakeClock(t)
	var ua, ub utilization
	ua.set(0.8)
	ub.set(0.3)
	resetA, resetB := clock.Now().Add(3*time.Hour), clock.Now().Add(4*time.Hour)
	a := newUpstream(t, "hr_a", replyWithUsage("a", &ua, func() time.Time { return resetA }))
	b := newUpstream(t, "hr_b", replyWithUsage("b", &ub, func() time.Time { return resetB }))
	n := newUpstream(t, "hr_n", replyMessage("n")) // reports nothing, next tier
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock(), n.providerBlock("tier 1"), "\t\tpolicy spread\n"))

	// before both have reported: rotation
	first := []string{answeredBy(t, p, "warm-1"), answeredBy(t, p, "warm-2")}
	if first[0] == first[1] {
		t.Fatalf("before usage is known: %v, want rotation", first)
	}
	for i := range 6 {
		if got := answeredBy(t, p, fmt.Sprint("new-", i)); got != "hr_b" {
			t.Fatalf("new conversation %d: %s, want the one with headroom", i, got)
		}
	}
	// a conversation placed on a stays there
	if got := answeredBy(t, p, "warm-1"); got != first[0] {
		t.Fatalf("warm-1 moved to %s", got)
	}
	ub.set(0.9)
	answeredBy(t, p, "new-0") // b reports 0.9
	if got := answeredBy(t, p, "fresh"); got != "hr_a" {
		t.Fatalf("after b filled up: %s", got)
	}
	// a tie: the window that resets soonest first
	ua.set(0.5)
	ub.set(0.5)
	resetB = clock.Now().Add(time.Hour)
	answeredBy(t, p, "warm-1")
	answeredBy(t, p, "new-0")
	for i := range 3 {
		if got := answeredBy(t, p, fmt.Sprint("tie-", i)); got != "hr_b" {
			t.Fatalf("tie %d: %s, want the sooner reset", i, got)
		}
	}
}

// cacheCounter stands for a provider-side prompt cache: a request hits
// when its conversation's previous request went to the same provider.
type cacheCounter struct {
	mu         sync.Mutex
	last       map[string]string
	hits, cold int
}

func (c *cacheCounter) serve(name string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		conv := r.Header.Get("X-Claude-Code-Session-Id")
		c.mu.Lock()
		if prev, ok := c.last[conv]; ok {
			if prev == name {
				c.hits++
			} else {
				c.cold++
			}
		}
		c.last[conv] = name
		c.mu.Unlock()
		replyMessage(name)(w, r, body)
	}
}

// The figure: how many requests find their prompt cache warm, with
// affinity and with `affinity off`, for two spread providers and 20
// conversations of 10 requests interleaved at random.
func TestAffinityCacheHitRate(t *testing.T) {
	rates := map[string]float64{}
	for _, mode := range []string{"affinity", "affinity off"} {
		t.Run(strings.ReplaceAll(mode, " ", "_"), func(t *testing.T) {
			useFakeClock(t)
			cc := &cacheCounter{last: map[string]string{}}
			a := newUpstream(t, "ch_a", cc.serve("a"))
			b := newUpstream(t, "ch_b", cc.serve("b"))
			opts := "\t\tpolicy spread\n"
			if mode == "affinity off" {
				opts += "\t\taffinity off\n"
			}
			p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock(), opts))
			left := make([]int, 10)
			for i := range left {
				left[i] = 10
			}
			rng := rand.New(rand.NewPCG(1, 2))
			for sent := 0; sent < 100; {
				c := rng.IntN(len(left))
				if left[c] == 0 {
					continue
				}
				left[c]--
				sent++
				answeredBy(t, p, fmt.Sprint("conv-", c))
			}
			rates[mode] = float64(cc.hits) / float64(cc.hits+cc.cold)
			t.Logf("%s: %d of %d follow-up requests hit a warm cache (%.1f%%)", mode, cc.hits, cc.hits+cc.cold, 100*rates[mode])
		})
	}
	if rates["affinity"] < 0.99 {
		t.Fatalf("with affinity: %.3f, want every follow-up on the same provider", rates["affinity"])
	}
	if rates["affinity off"] > 0.65 {
		t.Fatalf("affinity off: %.3f; rotation should scatter conversations", rates["affinity off"])
	}
}

// The conversation table lives beside the breakers: a reload keeps it.
func TestAffinitySurvivesReload(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "rl_a", replyMessage("a"))
	b := newUpstream(t, "rl_b", replyMessage("b"))
	site := failoverSite(a.providerBlock(), b.providerBlock(), "\t\tpolicy spread\n")
	p := startProxy(t, site)
	answeredBy(t, p, "one")
	if got := answeredBy(t, p, "two"); got != "rl_b" {
		t.Fatalf("second conversation on %s", got)
	}
	p.reload(site + "\n\theader X-Reloaded yes")
	// the rotation starts over at a after a reload; the conversation does not
	for range 3 {
		if got := answeredBy(t, p, "two"); got != "rl_b" {
			t.Fatalf("after reload: %s", got)
		}
	}
}

// The usage a provider reports shows in GET /llm/providers, `caddy llm`
// and the utilization metric; an API key's limits too.
func TestUsageInStatusCommandAndMetrics(t *testing.T) {
	clock := useFakeClock(t)
	sub := newUsageSub(t, "us_sub", 0.87, clock.Now().Add(72*time.Minute))
	key := newUpstream(t, "us_key", func(w http.ResponseWriter, r *http.Request, body []byte) {
		h := w.Header()
		h.Set("Anthropic-Ratelimit-Requests-Limit", "50")
		h.Set("Anthropic-Ratelimit-Requests-Remaining", "40")
		h.Set("Anthropic-Ratelimit-Requests-Reset", clock.Now().Add(time.Minute).Format(time.RFC3339))
		h.Set("Anthropic-Ratelimit-Tokens-Limit", "1000")
		h.Set("Anthropic-Ratelimit-Tokens-Remaining", "250")
		replyError(529, "overloaded_error", "busy")(w, r, body) // read from error responses too
	})
	p := startProxy(t, failoverSite(key.providerBlock(), sub.providerBlock()))
	answeredBy(t, p, "")

	st := providerStatuses(t, p)
	u, _ := st["us_sub"]["usage"].(map[string]any)
	if u == nil || u["binding"] != "5h" || u["status"] != "allowed_warning" || u["representative_claim"] != "five_hour" {
		t.Fatalf("usage of sub: %v", st["us_sub"])
	}
	w5 := u["windows"].(map[string]any)["5h"].(map[string]any)
	if w5["utilization"] != 0.87 || w5["reset"] != sub.reset.UTC().Format(time.RFC3339) ||
		w5["resets_in_seconds"] != 4320.0 || w5["status"] != "allowed_warning" {
		t.Fatalf("5h: %v", w5)
	}
	ku, _ := st["us_key"]["usage"].(map[string]any)
	if ku == nil || ku["binding"] != "tokens" {
		t.Fatalf("usage of key: %v", st["us_key"])
	}
	req := ku["windows"].(map[string]any)["requests"].(map[string]any)
	if req["utilization"] != 0.2 || req["limit"] != 50.0 || req["remaining"] != 40.0 {
		t.Fatalf("requests window: %v", req)
	}

	var out bytes.Buffer
	if code, err := runLLMCommand(&out, p.AdminAddr, "", "", false, nil); err != nil || code != 0 {
		t.Fatalf("caddy llm: %d %v", code, err)
	}
	if !strings.Contains(out.String(), "5h 87% · resets in 1h12m | 7d 41%") {
		t.Fatalf("caddy llm:\n%s", out.String())
	}
	if !strings.Contains(out.String(), "requests 20% | tokens 75%") {
		t.Fatalf("caddy llm, API key usage:\n%s", out.String())
	}

	res, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, want := range []string{
		`caddy_llm_utilization_ratio{provider="us_sub",window="5h"} 0.87`,
		`caddy_llm_utilization_ratio{provider="us_sub",window="7d"} 0.41`,
		`caddy_llm_utilization_ratio{provider="us_key",window="tokens"} 0.75`,
	} {
		if !strings.Contains(string(raw), want) {
			t.Fatalf("metrics lack %s:\n%s", want, grepLines(string(raw), "utilization"))
		}
	}
}

// When nothing admits, Retry-After is the soonest moment a provider
// serves again, and a window the usage headers said is used up counts.
func TestAllCoolingRetryAfterIncludesWindowResets(t *testing.T) {
	clock := useFakeClock(t)
	sub := newUsageSub(t, "rw_sub", 1, clock.Now().Add(2*time.Hour))
	other := newUpstream(t, "rw_other", replyError(429, "rate_limit_error", "limited", "Retry-After", "10800"))
	p := startProxy(t, failoverSite(sub.providerBlock(), other.providerBlock()))
	answeredBy(t, p, "") // sub reports its 5h window full
	// sub now says only "rate limited, retry in a minute"
	sub.setHandler(replyError(429, "rate_limit_error", "limited", "Retry-After", "60"))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	if res.StatusCode != 429 || res.Header.Get("Retry-After") != "7200" {
		t.Fatalf("all cooling: %d Retry-After %q, want 7200 (sub's 5h window resets then, not in 60s): %s",
			res.StatusCode, res.Header.Get("Retry-After"), body)
	}
}

func TestUsageRoutingCaddyfile(t *testing.T) {
	cfg := string(adapt(t, `:0 {
	llm_failover {
		provider a {
			upstream http://127.0.0.1:1
			max_utilization 85%
		}
		max_utilization 95
		policy spread
		affinity header X-Conversation
	}
}`))
	for _, want := range []string{`"max_utilization":0.85`, `"max_utilization":0.95`, `"affinity_header":"X-Conversation"`} {
		if !strings.Contains(cfg, want) {
			t.Fatalf("adapted config lacks %s:\n%s", want, cfg)
		}
	}
	if off := string(adapt(t, ":0 {\n\tllm_failover {\n\t\taffinity off\n\t}\n}")); !strings.Contains(off, `"affinity_off":true`) {
		t.Fatalf("affinity off: %s", off)
	}
	for body, want := range map[string]string{
		"max_utilization 0":                 "max_utilization",
		"max_utilization 150%":              "max_utilization",
		"max_utilization lots":              "max_utilization",
		"max_utilization 90% 80%":           "wrong argument count",
		"affinity":                          "affinity",
		"affinity header":                   "affinity",
		"affinity header Bad:Name":          "affinity",
		"affinity sometimes":                "affinity",
		"provider a {\n max_utilization\n}": "wrong argument count",
	} {
		_, _, err := goldAdapt(t, "Caddyfile", []byte(":0 {\n\tllm_failover {\n"+body+"\n\t}\n}"))
		if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "Caddyfile:") {
			t.Errorf("%q: error %v, want one naming %q and the line", body, err, want)
		}
	}
}

// The README's "Several subscriptions" example adapts and provisions as
// printed (caddy validate), with both Claude logins present.
func TestSeveralSubscriptionsExampleValidates(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(readme), "\n## Several subscriptions\n")
	_, block, ok2 := strings.Cut(section, "```caddy\n")
	block, _, ok3 := strings.Cut(block, "```")
	if !ok || !ok2 || !ok3 {
		t.Fatal("no caddy block in the README's Several subscriptions section")
	}
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-api-test")
	login := `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-x","refreshToken":"sk-ant-ort01-x","expiresAt":4102444800000,"scopes":["user:inference"]}}`
	for _, dir := range []string{".claude", ".claude-work"} {
		if err := os.MkdirAll(filepath.Join(home, dir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(home, dir, ".credentials.json"), []byte(login), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cfgJSON := adapt(t, "{\n\tadmin off\n}\n"+block)
	var cfg caddy.Config
	if err := json.Unmarshal(cfgJSON, &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("caddy validate: %v\n%s", err, block)
	}
	for _, want := range []string{`"policy":"spread"`, `"max_utilization":0.9`, `"tier":2`, `"source":"claude"`} {
		if !strings.Contains(string(cfgJSON), want) {
			t.Fatalf("adapted example lacks %s: %s", want, cfgJSON)
		}
	}
}

// JSON config gets the checks the Caddyfile parser makes.
func TestUsageRoutingValidateJSON(t *testing.T) {
	for js, want := range map[string]string{
		`{"max_utilization":1.5}`:  "max_utilization",
		`{"max_utilization":-0.1}`: "max_utilization",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:1","max_utilization":2}]}`: "provider a: max_utilization",
		`{"affinity_header":"Bad Header"}`:                                                 "affinity_header",
	} {
		var h Handler
		if err := json.Unmarshal([]byte(js), &h); err != nil {
			t.Fatal(err)
		}
		if err := h.Validate(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %q", js, err, want)
		}
	}
	h := Handler{MaxUtilization: 0.9, AffinityHeader: "X-Conversation-Id"}
	if err := h.Validate(); err != nil {
		t.Fatalf("valid options refused: %v", err)
	}
}

// selections reads the "selected provider" debug lines of a JSON log.
func selections(t *testing.T, logFile string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(readFileString(t, logFile), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == "selected provider" {
			out = append(out, m)
		}
	}
	return out
}

// Each provider choice is logged at debug level with why it was made and
// which providers were passed over as cooling: declaration order, then
// failover, then a cooling provider skipped; with spread, rotation and a
// conversation kept on its provider.
func TestSelectionIsLoggedWithItsReason(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "debug.log")
	a := newUpstream(t, "sel_a", replyError(429, "rate_limit_error", "limited", "Retry-After", "600"))
	b := newUpstream(t, "sel_b", replyMessage("from b"))
	p, _ := startProxyWithGlobals(t, debugLogTo(logFile), failoverSite(a.providerBlock(), b.providerBlock()))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	var got []string
	for _, s := range selections(t, logFile) {
		got = append(got, fmt.Sprintf("%v %v attempt=%v tier=%v cooling=%v", s["provider"], s["reason"], s["attempt"], s["tier"], s["skipped_cooling"]))
	}
	want := []string{
		"sel_a declaration order attempt=1 tier=0 cooling=<nil>",
		"sel_b declaration order attempt=2 tier=0 cooling=<nil>",
		"sel_b declaration order attempt=1 tier=0 cooling=[sel_a (rate_limit)]",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("selection lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// spread: a new conversation by rotation, its next request by affinity
	c := newUpstream(t, "sel_c", replyMessage("from c"))
	d := newUpstream(t, "sel_d", replyMessage("from d"))
	spread := p.caddyfile(failoverSite(c.providerBlock(), d.providerBlock(), "\t\tpolicy spread\n"))
	p.load("{\n" + debugLogTo(logFile) + spread[len("{\n"):])
	first := answeredBy(t, p, "conv-1")
	if again := answeredBy(t, p, "conv-1"); again != first {
		t.Fatalf("the conversation moved from %s to %s", first, again)
	}
	all := selections(t, logFile)
	if len(all) < 2 {
		t.Fatalf("%d selection lines", len(all))
	}
	last2 := all[len(all)-2:]
	if last2[0]["reason"] != "rotation" || last2[1]["reason"] != "conversation affinity" || last2[1]["provider"] != first {
		t.Fatalf("spread selections: %v", last2)
	}
}
