package failover

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// Whoever can write the Redis the fleet shares can leave anything under
// the keys an instance reads and writes. None of it may stop the
// instance's writes (the fleet would stop hearing of its cooldowns), and
// a value the fleet's reads skip (too large) may not win over a decision
// made here either: the writer would adopt what no reader sees, benched
// to max_reset by a value the provider never sent.
func TestRedisHostileKeysStopNoWrite(t *testing.T) {
	r := testredis.Start(t)
	c := r.Client()
	defer c.Close()
	ctx := t.Context()
	const year9999ms = 253402300799000
	// a list where a decision belongs, and a hash where the probe lease
	// belongs
	if err := c.RPush(ctx, "llm_failover:breaker:hk_list", "x").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.HSet(ctx, "llm_failover:probe:hk_list", "f", "v").Err(); err != nil {
		t.Fatal(err)
	}
	// an open decision whose numbers are words
	if err := c.Set(ctx, "llm_failover:breaker:hk_words", `{"name":"hk_words","state":"open","until":"soon","decided_us":"then"}`, 0).Err(); err != nil {
		t.Fatal(err)
	}
	// a well-formed decision, cooling until year 9999, padded past what a
	// read takes
	big, _ := json.Marshal(map[string]any{"name": "hk_big", "state": "open", "until": year9999ms, "decided_us": 1,
		"class": "quota", "instance": "forger", "token": "forger/1", "pad": strings.Repeat("x", 4096)})
	if err := c.Set(ctx, "llm_failover:breaker:hk_big", big, 0).Err(); err != nil {
		t.Fatal(err)
	}

	limited := replyError(429, "rate_limit_error", "limited", "Retry-After", "30")
	list := newUpstream(t, "hk_list", limited)
	words := newUpstream(t, "hk_words", limited)
	bigU := newUpstream(t, "hk_big", limited)
	ok := newUpstream(t, "hk_ok", replyMessage("from ok"))
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", list.providerBlock(), words.providerBlock(),
		bigU.providerBlock(), ok.providerBlock(), "\t\tmax_reset 2d\n"))
	stopAtCleanup(t)

	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if body := readAll(t, res); res.StatusCode != http.StatusOK || res.Header.Get("X-LLM-Provider") != "hk_ok" {
		t.Fatalf("%d from %q: %s", res.StatusCode, res.Header.Get("X-LLM-Provider"), body)
	}
	// each cooldown reaches Redis in place of what was there
	for _, name := range []string{"hk_list", "hk_words", "hk_big"} {
		var stored share.RedisDecision
		for deadline := time.Now().Add(3 * time.Second); ; {
			val, err := c.Get(ctx, "llm_failover:breaker:"+name).Result()
			stored = share.RedisDecision{}
			if err == nil && json.Unmarshal([]byte(val), &stored) == nil && stored.Name == name &&
				stored.State == breaker.Open && stored.Instance != "forger" && len(val) < 1024 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: redis holds %.200q (%v), not this instance's cooldown", name, val, err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		if left := time.UnixMilli(stored.Until).Sub(time.Now()); left > time.Minute {
			t.Fatalf("%s: the stored cooldown ends in %s, want the provider's 30s", name, left)
		}
	}
	// and the oversized value benched nothing here past the provider's own
	// Retry-After
	if s := snapshot(t, "hk_big"); s.State != breaker.Open || time.Until(s.Until) > time.Minute {
		t.Fatalf("hk_big: %s until %s from now, want open for the provider's 30s", s.State, time.Until(s.Until))
	}
}
