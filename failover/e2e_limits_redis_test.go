package failover

import (
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// limitShare is a share block on r that syncs limit counts every 100ms;
// extra lines go inside it.
func limitShare(r *testredis.Server, extra string) string {
	return "\t\tshare {\n\t\t\tredis " + r.URL + "\n\t\t\tread_interval 100ms\n" + extra + "\t\t}\n"
}

// aliceBlock is client alice (key alice-key) with one limit line.
func aliceBlock(t *testing.T, limit string) string {
	t.Setenv("LLMF_LIM_ALICE", "alice-key")
	return "\t\tclient alice {\n\t\t\tkey env LLMF_LIM_ALICE\n\t\t\t" + limit + "\n\t\t}\n"
}

// clientLimit reads one client's first limit from an instance's
// GET /llm/clients.
func clientLimit(t *testing.T, p *proxy, client string) budget.Status {
	t.Helper()
	_, body := adminGet(t, p, "/llm/clients")
	var cr ClientsResponse
	if err := json.Unmarshal([]byte(body), &cr); err != nil {
		t.Fatalf("/llm/clients: %v %s", err, body)
	}
	for _, c := range cr.Clients {
		if c.Name == client && len(c.Limits) > 0 {
			return c.Limits[0]
		}
	}
	t.Fatalf("/llm/clients has no limit for %s: %s", client, body)
	return budget.Status{}
}

// A fleet of three on one Redis counts a client's requests together: one
// request at each instance and one more at A use up a limit of 4, and
// every instance then refuses alice, also those that served her once. The
// keys in Redis expire with their window, and are at most one per bucket.
func TestLimitFleetOverRedis(t *testing.T) {
	r := testredis.Start(t)
	up := newUpstream(t, "lf_a", replyMessage("from a"))
	fleet := startFleet(t, 3, limitShare(r, ""), up.providerBlock(), aliceBlock(t, "limit requests 4 per 1h"))

	for _, in := range append(fleet, fleet[0]) {
		if res := post(t, in.URL+"/v1/messages", simpleRequest, asClient("alice-key")...); res.StatusCode != 200 {
			t.Fatalf("instance %s: %d %s", in.name, res.StatusCode, readAll(t, res))
		}
	}
	for _, in := range fleet {
		deadline := time.Now().Add(5 * time.Second)
		for clientLimit(t, in.admin, "alice").Used != 4 {
			if time.Now().After(deadline) {
				t.Fatalf("instance %s does not see the fleet's 4 requests: %+v", in.name, clientLimit(t, in.admin, "alice"))
			}
			time.Sleep(20 * time.Millisecond)
		}
		msg := wantAnthropicError(t, post(t, in.URL+"/v1/messages", simpleRequest, asClient("alice-key")...),
			http.StatusTooManyRequests, "rate_limit_error")
		if !strings.Contains(msg, "alice: 4 requests per 1h") {
			t.Errorf("instance %s: %q", in.name, msg)
		}
	}
	if up.Hits() != 4 {
		t.Fatalf("provider hits %d, want 4", up.Hits())
	}

	rc := r.Client()
	defer rc.Close()
	keys, err := rc.Keys(t.Context(), "llm_failover:limit:*").Result()
	if err != nil || len(keys) == 0 || len(keys) > budget.Buckets {
		t.Fatalf("limit keys in redis: %v %v", keys, err)
	}
	var total int64
	for _, k := range keys {
		n, _ := rc.Get(t.Context(), k).Int64()
		total += n
		ttl, _ := rc.PTTL(t.Context(), k).Result()
		if ttl <= 0 || ttl > time.Hour+2*time.Minute {
			t.Errorf("key %s expires in %v, want within the window and a bucket", k, ttl)
		}
	}
	if total != 4 {
		t.Errorf("redis counts %d requests, want 4", total)
	}
}

// Redis unreachable, by default: the instance counts on its own and says
// so once; its limits still hold. Redis back: it says so, and what was
// counted meanwhile reaches Redis.
func TestLimitRedisOutageCountsLocally(t *testing.T) {
	r := testredis.Start(t)
	up := newUpstream(t, "lo_a", replyMessage("from a"))
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, limitShare(r, ""), "\tlog {\n\t\toutput file "+logFile+"\n\t\tformat json\n\t}\n",
		up.providerBlock(), aliceBlock(t, "limit requests 3 per 1h")))
	stopAtCleanup(t)
	send := func() *http.Response { return post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...) }
	if res := send(); res.StatusCode != 200 {
		t.Fatalf("%d", res.StatusCode)
	}
	waitRedisTotal(t, r, 1)
	r.Stop()
	const downLine = "limits are counted on this instance alone"
	waitLog := func(line string) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !strings.Contains(readFileString(t, logFile), line); {
			if time.Now().After(deadline) {
				t.Fatalf("no log line %q", line)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitLog(downLine)
	for range 2 {
		if res := send(); res.StatusCode != 200 {
			t.Fatalf("during the outage: %d %s", res.StatusCode, readAll(t, res))
		}
	}
	wantAnthropicError(t, send(), http.StatusTooManyRequests, "rate_limit_error")
	time.Sleep(500 * time.Millisecond) // several rounds fail
	if n := strings.Count(readFileString(t, logFile), downLine); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}

	r.Restart() // empty, as after a restart
	waitLog("redis reachable again")
	waitRedisTotal(t, r, 2) // the 2 counted during the outage
}

// waitRedisTotal waits until the limit keys in r add up to want.
func waitRedisTotal(t *testing.T, r *testredis.Server, want int64) {
	t.Helper()
	rc := r.Client()
	defer rc.Close()
	var total int64
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		keys, _ := rc.Keys(t.Context(), "llm_failover:limit:*").Result()
		total = 0
		for _, k := range keys {
			n, _ := rc.Get(t.Context(), k).Int64()
			total += n
		}
		if total == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("redis holds %d, want %d", total, want)
		}
	}
}

// Redis unreachable with fail_closed: limited requests are refused with
// 503 until Redis answers again; a client without limits is served.
func TestLimitRedisOutageFailClosed(t *testing.T) {
	r := testredis.Start(t)
	t.Setenv("LLMF_LIM_BOB", "bob-key")
	up := newUpstream(t, "lc_a", replyMessage("from a"))
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, limitShare(r, "\t\t\tfail_closed\n"), "",
		up.providerBlock(), aliceBlock(t, "limit requests 1000 per 1h"),
		"\t\tclient bob {\n\t\t\tkey env LLMF_LIM_BOB\n\t\t}\n"))
	stopAtCleanup(t)
	send := func(key string) *http.Response { return post(t, p.URL+"/v1/messages", simpleRequest, asClient(key)...) }
	if res := send("alice-key"); res.StatusCode != 200 {
		t.Fatalf("%d", res.StatusCode)
	}
	r.Stop()
	waitStatus := func(want int) *http.Response {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			res := send("alice-key")
			if res.StatusCode == want {
				return res
			}
			readAll(t, res)
			if time.Now().After(deadline) {
				t.Fatalf("alice still gets %d, want %d", res.StatusCode, want)
			}
		}
	}
	msg := wantAnthropicError(t, waitStatus(http.StatusServiceUnavailable), http.StatusServiceUnavailable, "overloaded_error")
	if !strings.Contains(msg, "fail_closed") {
		t.Errorf("refusal %q does not say why", msg)
	}
	if res := send("bob-key"); res.StatusCode != 200 {
		t.Fatalf("bob, without limits, during the outage: %d", res.StatusCode)
	}
	r.Restart()
	readAll(t, waitStatus(http.StatusOK))
}
