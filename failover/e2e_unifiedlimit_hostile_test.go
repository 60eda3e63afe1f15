package failover

import (
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// providersRetryAfter reads a provider's retry-after from X-LLM-Providers.
var providersRetryAfter = regexp.MustCompile(`"([^"]+)";[^,]*?retry-after=(\d+)`)

// An upstream says what it likes in its unified headers: a reset in year
// 9999 or in the past, words for numbers, statuses in other cases, claims
// that are no window name. Whatever it says, the proxy's all-out 429 names
// one instant, within max_reset, in Retry-After,
// anthropic-ratelimit-unified-reset and X-LLM-Providers, and repeats only
// known statuses and window names.
func TestAllOutUnifiedLimitHostileUpstream(t *testing.T) {
	const maxReset = time.Hour
	future := func(d time.Duration) string { return epochSeconds(time.Now().Add(d)) }
	cases := []struct {
		name string
		hdr  []string
	}{
		{"year9999", []string{"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", "253402300799", "Retry-After", "99999999999",
			"anthropic-ratelimit-unified-representative-claim", "five_hour"}},
		{"past", []string{"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", future(-time.Hour), "Retry-After", "600"}},
		{"words", []string{"anthropic-ratelimit-unified-status", "REJECTED",
			"anthropic-ratelimit-unified-reset", "soon", "Retry-After", "-5",
			"anthropic-ratelimit-unified-representative-claim", "<script>alert(1)</script>",
			"anthropic-ratelimit-unified-overage-status", "maybe\tso"}},
		{"disagree", []string{"anthropic-ratelimit-unified-status", "Rejected",
			"anthropic-ratelimit-unified-reset", future(3 * time.Hour), "Retry-After", "60",
			"anthropic-ratelimit-unified-5h-status", "rejected", "anthropic-ratelimit-unified-5h-reset", future(50 * time.Minute),
			"anthropic-ratelimit-unified-representative-claim", strings.Repeat("x", 4000)}},
		{"negative", []string{"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", "-9223372036854775808", "Retry-After", "1e300",
			"anthropic-ratelimit-unified-fallback", "available"}},
		{"huge", []string{"anthropic-ratelimit-unified-status", "rejected",
			"anthropic-ratelimit-unified-reset", "99999999999999999999999", "Retry-After", future(24 * time.Hour),
			"anthropic-ratelimit-unified-7d-status", "rejected", "anthropic-ratelimit-unified-7d-reset", "1e18"}},
	}
	var p *proxy
	for i, tc := range cases {
		name := fmt.Sprintf("uh_%d", i)
		u := newUpstream(t, name, replyError(429, "rate_limit_error", "usage limit reached", tc.hdr...))
		site := failoverSite(u.providerBlock(), "\t\tmax_reset 1h\n")
		if p == nil {
			p = startProxy(t, site)
		} else {
			p.reload(site)
		}
		for round := range 2 { // the request that meets the upstream, and one that meets none
			res := post(t, p.URL+"/v1/messages", simpleRequest)
			body := readAll(t, res)
			now := time.Now()
			h := res.Header
			if res.StatusCode != http.StatusTooManyRequests {
				// a 503 (the upstream's word was not taken as a limit)
				// carries no unified header
				for _, k := range unifiedHeaders {
					if h.Get(k) != "" {
						t.Errorf("%s round %d: %d with %s = %q", tc.name, round, res.StatusCode, k, h.Get(k))
					}
				}
				continue
			}
			if !strings.Contains(body, "no provider can take this request now") {
				t.Fatalf("%s round %d: %d %s; want the proxy's own all-out answer", tc.name, round, res.StatusCode, body)
			}
			ra, err := strconv.Atoi(h.Get("Retry-After"))
			if err != nil || ra < 1 || time.Duration(ra)*time.Second > maxReset+time.Second {
				t.Fatalf("%s round %d: Retry-After %q, want 1..%d s: %s", tc.name, round, h.Get("Retry-After"), int(maxReset.Seconds()), body)
			}
			m := providersRetryAfter.FindStringSubmatch(h.Get("X-LLM-Providers"))
			if m == nil || m[2] != strconv.Itoa(ra) {
				t.Errorf("%s round %d: X-LLM-Providers %q, Retry-After %d: want the same seconds", tc.name, round, h.Get("X-LLM-Providers"), ra)
			}
			if v := h.Get("Anthropic-Ratelimit-Unified-Reset"); v != "" {
				reset, err := strconv.ParseInt(v, 10, 64)
				if err != nil || reset-now.Unix() < int64(ra)-2 || reset-now.Unix() > int64(ra)+2 {
					t.Errorf("%s round %d: unified reset %q is %ds from now, Retry-After %d", tc.name, round, v, reset-now.Unix(), ra)
				}
				if h.Get("Anthropic-Ratelimit-Unified-Status") != "rejected" {
					t.Errorf("%s round %d: unified reset without status rejected: %v", tc.name, round, h)
				}
			}
			if c := h.Get("Anthropic-Ratelimit-Unified-Representative-Claim"); c != "" && !regexp.MustCompile(`^[a-z0-9_]{1,24}$`).MatchString(c) {
				t.Errorf("%s round %d: claim %q", tc.name, round, c)
			}
			if o := h.Get("Anthropic-Ratelimit-Unified-Overage-Status"); o != "" && o != "allowed" && o != "allowed_warning" && o != "rejected" {
				t.Errorf("%s round %d: overage status %q", tc.name, round, o)
			}
			t.Logf("%s round %d: %d Retry-After %d X-LLM-Providers %s unified %q/%q", tc.name, round, res.StatusCode, ra,
				h.Get("X-LLM-Providers"), h.Get("Anthropic-Ratelimit-Unified-Status"), h.Get("Anthropic-Ratelimit-Unified-Reset"))
		}
	}
}
