package failover

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// Shared state is input: whoever can write to the Redis the fleet shares
// (or an instance whose clock is a year ahead) cannot bench a provider
// past max_reset, outlast an admin reset, or hold its probe past
// probe_lease.

// storeDecision writes a decision into Redis as an instance would, and
// publishes it.
func storeDecision(t *testing.T, r *testredis.Server, d share.RedisDecision) {
	t.Helper()
	c := r.Client()
	defer c.Close()
	val, _ := json.Marshal(d)
	if err := c.Set(t.Context(), "llm_failover:breaker:"+d.Name, val, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Publish(t.Context(), "llm_failover:decisions", val).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestRedisSharedDecisionsAreBounded(t *testing.T) {
	r := testredis.Start(t)
	sub := newUpstream(t, "sb_sub", replyMessage("from sub"))
	key := newUpstream(t, "sb_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", sub.providerBlock(), key.providerBlock(), "\t\tmax_reset 2d\n"))
	stopAtCleanup(t)
	const year9999ms = 253402300799000

	// dated in year 9999: ignored
	storeDecision(t, r, share.RedisDecision{Name: "sb_sub", State: breaker.Open, Until: year9999ms,
		Decided: year9999ms * 1000, Class: classify.Quota, Instance: "forger", Token: "forger/1"})
	time.Sleep(300 * time.Millisecond)
	if s := snapshot(t, "sb_sub"); s.State != breaker.Closed {
		t.Fatalf("a decision dated in year 9999 was adopted: %+v", s)
	}

	// decided a minute ago, cooling until year 9999: cut to max_reset
	storeDecision(t, r, share.RedisDecision{Name: "sb_sub", State: breaker.Open, Until: year9999ms,
		Decided: time.Now().Add(-time.Minute).UnixMicro(), Class: classify.Quota, Instance: "forger", Token: "forger/1"})
	for deadline := time.Now().Add(2 * time.Second); ; {
		s := snapshot(t, "sb_sub")
		if s.State == breaker.Open {
			if left := time.Until(s.Until); left > 48*time.Hour+time.Minute {
				t.Fatalf("adopted cooldown ends in %s, past max_reset (2d)", left)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shared cooldown was not adopted: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// an admin reset wins over it, here and in Redis
	if code, body := adminPost(t, p, "/llm/providers/sb_sub/reset", ""); code != http.StatusOK {
		t.Fatalf("reset: %d %s", code, body)
	}
	time.Sleep(time.Second) // several read intervals
	if s := snapshot(t, "sb_sub"); s.State != breaker.Closed {
		t.Fatalf("the reset was undone: %+v", s)
	}
	c := r.Client()
	defer c.Close()
	var stored share.RedisDecision
	_ = json.Unmarshal([]byte(c.Get(t.Context(), "llm_failover:breaker:sb_sub").Val()), &stored)
	if stored.State != breaker.Closed {
		t.Fatalf("redis still holds %+v after the reset", stored)
	}

	// the reset also wins over a stored decision dated in the future
	storeDecision(t, r, share.RedisDecision{Name: "sb_key", State: breaker.Open, Until: year9999ms,
		Decided: year9999ms * 1000, Class: classify.Quota, Instance: "forger", Token: "forger/1"})
	if code, body := adminPost(t, p, "/llm/providers/sb_key/reset", ""); code != http.StatusOK {
		t.Fatalf("reset: %d %s", code, body)
	}
	for deadline := time.Now().Add(2 * time.Second); ; {
		_ = json.Unmarshal([]byte(c.Get(t.Context(), "llm_failover:breaker:sb_key").Val()), &stored)
		if stored.State == breaker.Closed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis still holds the future-dated %+v after the reset", stored)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A probe lease set for ten years is cut to probe_lease; a probe whose
// client hangs up releases its lease at once.
func TestRedisProbeLeaseBounded(t *testing.T) {
	r := testredis.Start(t)
	hang := make(chan struct{})
	t.Cleanup(func() { close(hang) })
	sub := newUpstream(t, "pl_sub", nil)
	sub.setHandler(func(w http.ResponseWriter, req *http.Request, body []byte) {
		switch sub.Hits() {
		case 1:
			replyError(429, "rate_limit_error", "limited", "Retry-After", "1")(w, req, body)
		case 2:
			select { // the probe: its client hangs up meanwhile
			case <-hang:
			case <-req.Context().Done():
			}
		default:
			replyMessage("from sub")(w, req, body)
		}
	})
	key := newUpstream(t, "pl_key", replyMessage("from key"))
	shareBlock := strings.Replace(redisShare(r), "\t\t}\n", "\t\t\tprobe_lease 1s\n\t\t}\n", 1)
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, shareBlock, "", sub.providerBlock(), key.providerBlock()))
	stopAtCleanup(t)
	c := r.Client()
	defer c.Close()

	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // 429: cools 1s
	// a forged lease of ten years
	if err := c.Set(t.Context(), "llm_failover:probe:pl_sub", "forger/1", 10*365*24*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond)
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // meets the lease: served by pl_key
	if ttl := c.PTTL(t.Context(), "llm_failover:probe:pl_sub").Val(); ttl > time.Second {
		t.Fatalf("the forged lease still has %s", ttl)
	}
	time.Sleep(1100 * time.Millisecond)

	// the probe, whose client gives up
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, p.URL+"/v1/messages", strings.NewReader(simpleRequest))
	req.Header.Set("Content-Type", "application/json")
	ctxClient := &http.Client{Timeout: 300 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	if res, err := ctxClient.Do(req); err == nil {
		res.Body.Close()
		t.Fatalf("the probe was answered: %d", res.StatusCode)
	}
	if sub.Hits() != 2 {
		t.Fatalf("pl_sub hits %d, want 2 (the 429 and the probe)", sub.Hits())
	}
	for deadline := time.Now().Add(400 * time.Millisecond); c.Exists(t.Context(), "llm_failover:probe:pl_sub").Val() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("the probe lease is still held (%s left) after its client went away",
				c.PTTL(t.Context(), "llm_failover:probe:pl_sub").Val())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
