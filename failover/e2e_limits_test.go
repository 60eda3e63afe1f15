package failover

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
)

// limitsSite is a gateway with clients alice and bob (keys in env), the
// given provider blocks, alice's and the handler's extra lines.
func limitsSite(t *testing.T, providers, alice, top string) string {
	t.Setenv("LLMF_LIM_ALICE", "alice-key")
	t.Setenv("LLMF_LIM_BOB", "bob-key")
	return failoverSite(providers,
		"\t\tclient alice {\n\t\t\tkey env LLMF_LIM_ALICE\n"+alice+"\t\t}\n",
		"\t\tclient bob {\n\t\t\tkey env LLMF_LIM_BOB\n\t\t}\n",
		top)
}

func asClient(key string) []string { return []string{"X-Api-Key", key} }

// wantOverLimit checks a refusal over a limit: 429 rate_limit_error in
// Anthropic's format naming the limit, the retry headers agreeing with
// wait, and no provider contacted.
func wantOverLimit(t *testing.T, res *http.Response, wantMsg string, wait time.Duration) {
	t.Helper()
	msg := wantAnthropicError(t, res, http.StatusTooManyRequests, "rate_limit_error")
	if !strings.Contains(msg, wantMsg) {
		t.Errorf("refusal %q does not say %q", msg, wantMsg)
	}
	if got := res.Header.Get("Retry-After"); got != strconv.Itoa(int(wait/time.Second)) {
		t.Errorf("Retry-After %q, want %d", got, int(wait/time.Second))
	}
	if got := res.Header.Get("Retry-After-Ms"); got != strconv.FormatInt(wait.Milliseconds(), 10) {
		t.Errorf("retry-after-ms %q, want %d", got, wait.Milliseconds())
	}
	if got, want := res.Header.Get("X-Should-Retry"), strconv.FormatBool(wait <= time.Minute); got != want {
		t.Errorf("x-should-retry %q, want %s", got, want)
	}
}

// A client's token limit: each answer reports 19 tokens; a request is
// admitted while the window holds less than the limit (so the one that
// crosses it is served), then refused before any provider is asked with a
// 429 naming the limit and when enough frees up, past a minute with
// x-should-retry false. Another client is not concerned. Once the window
// has rolled past the counted tokens, alice is served again.
func TestLimitTokensPerClient(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "lt_a", replyMessage("from a"))
	p := startProxy(t, limitsSite(t, a.providerBlock(), "\t\t\tlimit tokens 40 per 1h\n", ""))

	for i := range 3 { // 0, 19, 38 tokens in the window: each under 40
		if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
			t.Fatalf("request %d: %d %s", i+1, res.StatusCode, readAll(t, res))
		}
		clock.Advance(time.Minute)
	}
	// 57 tokens; all counted in the buckets of 12:00, 12:01, 12:02; now
	// is 12:03, and the window falls under 40 when 12:00's leaves: 13:00
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
		"alice: 40 tokens per 1h; more free in 57m", 57*time.Minute)
	if a.Hits() != 3 {
		t.Fatalf("provider hits %d, want 3: a refused request must not reach it", a.Hits())
	}
	if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("bob-key")...); res.StatusCode != 200 {
		t.Fatalf("bob, without limits: %d", res.StatusCode)
	}
	clock.Advance(57 * time.Minute)
	if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
		t.Fatalf("once 12:00's tokens left the window: %d %s", res.StatusCode, readAll(t, res))
	}
	// over again (57 tokens); a request that is not a model call is not
	// refused, though the tokens its answer reports count
	if res := post(t, p.URL+"/v1/messages/count_tokens", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
		t.Fatalf("count_tokens refused: %d", res.StatusCode)
	}
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
		"alice: 40 tokens per 1h; more free in 2m", 2*time.Minute)
}

// A request limit, and a wait under a minute: x-should-retry true.
// Counts survive a config reload; a changed amount keeps the count.
func TestLimitRequestsSurvivesReload(t *testing.T) {
	clock := useFakeClock(t)
	a := newUpstream(t, "lr_a", replyMessage("from a"))
	p := startProxy(t, limitsSite(t, a.providerBlock(), "\t\t\tlimit requests 2 per 1m\n", ""))
	for range 2 {
		if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
			t.Fatalf("%d", res.StatusCode)
		}
	}
	clock.Advance(10 * time.Second)
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
		"alice: 2 requests per 1m; more free in 50s", 50*time.Second)

	p.reload(limitsSite(t, a.providerBlock(), "\t\t\tlimit requests 3 per 1m\n", ""))
	if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
		t.Fatalf("third request under a limit of 3: %d", res.StatusCode)
	}
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
		"alice: 3 requests per 1m; more free in 50s", 50*time.Second)
}

// Spend is tokens at the serving provider's prices, first matching glob
// first; a provider without prices costs nothing. Status reports spend in
// dollars per provider and per client, and each limit's use; the metric
// reports how full each limit is.
func TestLimitSpendAndStatus(t *testing.T) {
	clock := useFakeClock(t)
	paid := newUpstream(t, "ls_paid", replyMessage("paid"))
	free := newUpstream(t, "ls_free", replyMessage("free"))
	// 12 input × $1000/Mtok + 7 output × $2000/Mtok = $0.026 per answer
	providers := paid.providerBlock("tier 0", "price claude-opus-* input 1 output 1", "price claude-* input 1000 output 2000") +
		free.providerBlock("tier 1")
	p := startProxy(t, limitsSite(t, providers, "\t\t\tlimit spend 0.05 per 1d\n\t\t\tlimit tokens 1000000 per 5h\n", ""))

	for range 2 { // $0, $0.026: under $0.05
		if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, readAll(t, res))
		}
	}
	clock.Advance(time.Hour)
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
		"alice: $0.05 per 1d; more free in 23h", 23*time.Hour)

	_, body := adminGet(t, p, "/llm/clients")
	var cr ClientsResponse
	if err := json.Unmarshal([]byte(body), &cr); err != nil {
		t.Fatal(err)
	}
	var alice ClientStatus
	for _, c := range cr.Clients {
		if c.Name == "alice" {
			alice = c
		}
	}
	if alice.SpendUSD < 0.0519 || alice.SpendUSD > 0.0521 || len(alice.Limits) != 2 {
		t.Fatalf("alice: %+v", alice)
	}
	spend, tokens := alice.Limits[0], alice.Limits[1]
	if spend.Label != "spend per 1d" || spend.Used < 0.0519 || spend.Used > 0.0521 || spend.Limit != 0.05 || spend.Window != "1d" ||
		!spend.Reached || spend.FreesUpIn != "23h" || spend.FreesUpAt != clock.Now().Add(23*time.Hour).UTC().Format(time.RFC3339) {
		t.Errorf("spend limit status: %+v", spend)
	}
	if tokens.Used != 38 || tokens.Limit != 1e6 || tokens.Reached || tokens.FreesUpIn != "4h" {
		t.Errorf("tokens limit status: %+v", tokens)
	}
	st := providerStatuses(t, p)
	if got := st["ls_paid"]["spend_usd"].(float64); got < 0.0519 || got > 0.0521 {
		t.Errorf("provider spend %v, want 0.052", got)
	}

	_, metricsText := adminGet(t, p, "/metrics")
	if got, ok := metricValue(t, metricsText, "caddy_llm_limit_used_ratio", `client="alice"`, `limit="spend per 1d"`); !ok || got != "1.04" {
		t.Errorf("limit_used_ratio spend = %q, want 1.04", got)
	}
	if got, ok := metricValue(t, metricsText, "caddy_llm_limit_used_ratio", `client="alice"`, `limit="tokens per 5h"`); !ok || got != "3.8e-05" {
		t.Errorf("limit_used_ratio tokens = %q", got)
	}

	// caddy llm shows the spend and the limits
	var out bytes.Buffer
	if code, err := runLLMCommand(&out, p.AdminAddr, "", "", false, nil); code != 0 || err != nil {
		t.Fatalf("caddy llm: %d %v", code, err)
	}
	for _, want := range []string{"$0.05", "alice", "$0.05 of $0.05 per 1d", "frees up in 23h", "38 tokens of 1,000,000 tokens per 5h"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("caddy llm output lacks %q:\n%s", want, out.String())
		}
	}

	// the unpriced provider costs nothing
	paid.setHandler(replyError(529, "overloaded_error", "busy"))
	if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient("bob-key")...); res.Header.Get("X-LLM-Provider") != "ls_free" {
		t.Fatalf("bob: %d from %q", res.StatusCode, res.Header.Get("X-LLM-Provider"))
	}
	if got := providerStatuses(t, p)["ls_free"]["spend_usd"].(float64); got != 0 {
		t.Errorf("unpriced provider spend %v", got)
	}
}

// The handler's own limits cap all traffic together, with clients or
// without.
func TestLimitHandlerLevel(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "lh_a", replyMessage("from a"))
	p := startProxy(t, limitsSite(t, a.providerBlock(), "", "\t\tlimit requests 2 per 1h\n"))
	for _, key := range []string{"alice-key", "bob-key"} {
		if res := post(t, p.URL+"/v1/messages", simpleRequest, asClient(key)...); res.StatusCode != 200 {
			t.Fatalf("%s: %d", key, res.StatusCode)
		}
	}
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
		"all clients: 2 requests per 1h; more free in 1h", time.Hour)
	_, body := adminGet(t, p, "/llm/clients")
	var cr ClientsResponse
	if err := json.Unmarshal([]byte(body), &cr); err != nil || len(cr.Limits) != 1 || cr.Limits[0].Used != 2 || cr.Limits[0].Kind != budget.Requests {
		t.Fatalf("handler limits in /llm/clients: %v %s", err, body)
	}
	_, metricsText := adminGet(t, p, "/metrics")
	if got, ok := metricValue(t, metricsText, "caddy_llm_limit_used_ratio", `client=""`, `limit="requests per 1h"`); !ok || got != "1" {
		t.Errorf("handler limit_used_ratio = %q", got)
	}

	// a solo user without clients: the same cap
	p.reload(failoverSite(a.providerBlock(), "\t\tlimit tokens 10 per 1d\n"))
	if res := post(t, p.URL+"/v1/messages", simpleRequest); res.StatusCode != 200 {
		t.Fatalf("solo: %d", res.StatusCode)
	}
	wantOverLimit(t, post(t, p.URL+"/v1/messages", simpleRequest), "all clients: 10 tokens per 1d; more free in 1d", 24*time.Hour)
}
