package failover

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// unifiedHeaders are the headers Claude Code reads to tell a subscriber
// "You've hit your limit · resets …" rather than "Server is temporarily
// limiting requests (not your usage limit)".
var unifiedHeaders = []string{
	"Anthropic-Ratelimit-Unified-Status",
	"Anthropic-Ratelimit-Unified-Reset",
	"Anthropic-Ratelimit-Unified-Representative-Claim",
	"Anthropic-Ratelimit-Unified-Overage-Status",
	"Anthropic-Ratelimit-Unified-Fallback",
}

// quotaOut answers 429 as a subscription whose window claim is used up
// until reset, with the extra headers given.
func quotaOut(reset time.Time, claim string, extra ...string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	hdr := append([]string{
		"anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-reset", epochSeconds(reset),
		"anthropic-ratelimit-unified-5h-status", "rejected",
		"anthropic-ratelimit-unified-5h-reset", epochSeconds(reset),
		"anthropic-ratelimit-unified-representative-claim", claim,
		"anthropic-ratelimit-unified-overage-status", "rejected",
		"anthropic-ratelimit-unified-overage-disabled-reason", "out_of_credits",
		"anthropic-ratelimit-unified-upgrade-paths", "max,team",
		"Retry-After", strconv.Itoa(int(time.Until(reset).Seconds())),
	}, extra...)
	return replyError(429, "rate_limit_error", "usage limit reached", hdr...)
}

// When every provider is out for its subscription's limit, the proxy's
// own 429 says so in the unified headers the soonest provider back sent
// (status, claim, overage status, fallback), with the reset at the same
// instant as its Retry-After and X-LLM-Providers; nothing else of theirs.
func TestAllOutCarriesUnifiedLimit(t *testing.T) {
	resetA, resetB := time.Now().Add(3*time.Hour), time.Now().Add(5*time.Hour)
	a := newUpstream(t, "ul_a", quotaOut(resetA, "five_hour", "anthropic-ratelimit-unified-fallback", "available"))
	b := newUpstream(t, "ul_b", quotaOut(resetB, "seven_day"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))

	for i, contacted := range []int{2, 0} { // the first request meets both; the next, neither
		before := a.Hits() + b.Hits()
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		body := readAll(t, res)
		if n := a.Hits() + b.Hits() - before; n != contacted || res.StatusCode != 429 ||
			!strings.Contains(body, "no provider can take this request now") {
			t.Fatalf("request %d: %d %s after %d upstream requests; want the proxy's own 429 after %d", i, res.StatusCode, body, n, contacted)
		}
		h := res.Header
		ra, err := strconv.Atoi(h.Get("Retry-After"))
		if err != nil {
			t.Fatalf("Retry-After %q", h.Get("Retry-After"))
		}
		reset, err := strconv.ParseInt(h.Get("Anthropic-Ratelimit-Unified-Reset"), 10, 64)
		if err != nil {
			t.Fatalf("request %d: unified reset %q; headers %v", i, h.Get("Anthropic-Ratelimit-Unified-Reset"), h)
		}
		if math.Abs(float64(reset-time.Now().Unix()-int64(ra))) > 2 || math.Abs(float64(reset-resetA.Unix())) > 2 {
			t.Fatalf("request %d: unified reset %d, Retry-After %d (now %d), ul_a's reset %d: want one instant",
				i, reset, ra, time.Now().Unix(), resetA.Unix())
		}
		if got := h.Get("X-LLM-Providers"); !strings.Contains(got, `"ul_a";state=open;class=quota;`) ||
			!strings.Contains(got, "retry-after="+strconv.Itoa(ra)) {
			t.Fatalf("request %d: X-LLM-Providers %q does not agree with Retry-After %d", i, got, ra)
		}
		for k, want := range map[string]string{
			"Anthropic-Ratelimit-Unified-Status":                  "rejected",
			"Anthropic-Ratelimit-Unified-Representative-Claim":    "five_hour", // the soonest back binds
			"Anthropic-Ratelimit-Unified-Overage-Status":          "rejected",
			"Anthropic-Ratelimit-Unified-Fallback":                "available",
			"Anthropic-Ratelimit-Unified-Overage-Disabled-Reason": "", // not on the allow-list
			"Anthropic-Ratelimit-Unified-Upgrade-Paths":           "",
			"Anthropic-Ratelimit-Unified-5h-Status":               "",
		} {
			if got := h.Get(k); got != want || len(h.Values(k)) > 1 {
				t.Errorf("request %d: %s = %q (%d values), want %q", i, k, got, len(h.Values(k)), want)
			}
		}
	}
}

// The unified headers say only what holds for the answer: when the
// provider back soonest is out for another reason (an API key's rate
// limit), the answer carries none, since the limit is not the
// subscriber's; a claim that is not a window name is left out.
func TestAllOutUnifiedLimitOnlyWhenItBinds(t *testing.T) {
	resetA := time.Now().Add(3 * time.Hour)
	a := newUpstream(t, "un_a", quotaOut(resetA, "five_hour"))
	api := newUpstream(t, "un_api", replyError(429, "rate_limit_error", "slow down", "Retry-After", "3600"))
	p := startProxy(t, failoverSite(a.providerBlock(), api.providerBlock()))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	ra, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	if res.StatusCode != 429 || ra > 3600 || ra < 3500 {
		t.Fatalf("%d Retry-After %d %s; want the proxy's 429 until un_api is back", res.StatusCode, ra, body)
	}
	for _, k := range unifiedHeaders {
		if v := res.Header.Get(k); v != "" {
			t.Errorf("%s = %q on an answer whose soonest provider is out for an API key's rate limit", k, v)
		}
	}

	c := newUpstream(t, "un_c", quotaOut(resetA, "five hour; x=1"))
	p.reload(failoverSite(c.providerBlock()))
	res = post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	if res.StatusCode != 429 || res.Header.Get("Anthropic-Ratelimit-Unified-Status") != "rejected" ||
		res.Header.Get("Anthropic-Ratelimit-Unified-Representative-Claim") != "" {
		t.Fatalf("%d %v; want the status, and no claim that is not a window name", res.StatusCode, res.Header)
	}
}
