package failover

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// The Redis backend is tested against a real redis-server on a free
// loopback port, and a fleet of real Caddy instances: this process and
// child processes (the test binary itself, see TestMain), each with its
// own Caddy data directory and so its own instance id. Caddy's config is
// process-global, so a fleet needs processes, as in production.

// fleetCaddyfile is a Caddyfile whose llm_failover block shares through
// the given share block.
func fleetCaddyfile(adminAddr, siteURL, share string, extraGlobal string, blocks ...string) string {
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
%s}
%s {
	handle /healthz-probe {
		respond ok
	}
%s
}
`, adminAddr, extraGlobal, siteURL, failoverSite(append(blocks, share)...))
}

// redisShare is the share block of a fleet on r. probe_wait is raised
// from its 10ms default so that a loaded test machine does not make an
// instance give up the lease call and probe on its own.
func redisShare(r *testredis.Server) string {
	return "\t\tshare {\n\t\t\tredis " + r.URL + "\n\t\t\tread_interval 200ms\n\t\t\tprobe_wait 500ms\n\t\t}\n"
}

// instance is one Caddy of the fleet, reached through its site and admin.
type instance struct {
	name  string
	URL   string
	admin *proxy
}

// startFleet runs the same config on this process (instance A) and on
// n-1 children.
func startFleet(t *testing.T, n int, share string, blocks ...string) []*instance {
	t.Helper()
	var fleet []*instance
	for i := 1; i < n; i++ {
		in := &instance{name: string(rune('A' + i)), URL: freeURL(t)}
		in.admin = &proxy{t: t, AdminAddr: freeAddr(t)}
		startChild(t, fleetCaddyfile(in.admin.AdminAddr, in.URL, share, "", blocks...), in.URL)
		fleet = append(fleet, in)
	}
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, share, "", blocks...))
	stopAtCleanup(t)
	return append([]*instance{{name: "A", URL: p.URL, admin: p}}, fleet...)
}

// waitState polls an instance's status until the provider is in state.
func waitState(t *testing.T, in *instance, provider string, state breaker.State, within time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		st := providerStatuses(t, in.admin)[provider]
		if st["state"] == string(state) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s: %s is not %s after %s: %v", in.name, provider, state, within, st)
		}
		time.Sleep(time.Millisecond)
	}
}

// sendOK sends a request that must be answered by wantProvider with one
// upstream attempt.
func sendOK(t *testing.T, in *instance, wantProvider string) {
	t.Helper()
	res := post(t, in.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	if res.StatusCode != 200 || res.Header.Get("X-LLM-Provider") != wantProvider || res.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("instance %s: %d from %q after %s attempts, want %s in 1: %s", in.name, res.StatusCode,
			res.Header.Get("X-LLM-Provider"), res.Header.Get("X-LLM-Attempts"), wantProvider, body)
	}
}

// A fleet of three on one Redis: the 429 (Retry-After: 30) one instance
// meets reaches the others within milliseconds and they skip the provider
// on their next requests (the fleet sends it one request, not one per
// instance); when a cooldown ends the whole fleet sends exactly one probe;
// its success closes the provider everywhere.
func TestRedisShareFleet(t *testing.T) {
	r := testredis.Start(t)
	release := make(chan struct{})
	var releaseOnce sync.Once
	releaseProbe := func() { releaseOnce.Do(func() { close(release) }) }
	sub := newUpstream(t, "rf_sub", nil)
	t.Cleanup(releaseProbe) // registered after the upstream's Close, so run before it
	sub.setHandler(func(w http.ResponseWriter, req *http.Request, body []byte) {
		switch sub.Hits() {
		case 1:
			replyError(429, "rate_limit_error", "limited", "Retry-After", "30")(w, req, body)
		case 2:
			replyError(429, "rate_limit_error", "limited", "Retry-After", "1")(w, req, body)
		default:
			<-release // the probe stays in flight while the others ask
			replyMessage("from sub")(w, req, body)
		}
	})
	key := newUpstream(t, "rf_key", replyMessage("from key"))
	fleet := startFleet(t, 3, redisShare(r), sub.providerBlock(), key.providerBlock())

	// A meets the 429 (Retry-After: 30) and fails over
	sendOK0 := post(t, fleet[0].URL+"/v1/messages", simpleRequest)
	if got := readAll(t, sendOK0); !strings.Contains(got, "from key") || sub.Hits() != 1 {
		t.Fatalf("A: %s, sub hits %d", got, sub.Hits())
	}
	decided := time.Now()
	for _, in := range fleet[1:] {
		st := waitState(t, in, "rf_sub", breaker.Open, 2*time.Second)
		t.Logf("instance %s adopted the cooldown %s after A answered (source %v)", in.name, time.Since(decided), st["source"])
		if st["source"] == "local" {
			t.Fatalf("instance %s: the cooldown is not A's: %v", in.name, st)
		}
	}
	for range 3 {
		for _, in := range fleet {
			sendOK(t, in, "rf_key")
		}
	}
	if n := sub.Hits(); n != 1 {
		t.Fatalf("the fleet sent %d requests to the provider that answered 429, want 1", n)
	}

	// rather than wait 30s: A closes the provider by hand, which reaches
	// everyone, and the next 429 asks for one second
	if code, body := adminPost(t, fleet[0].admin, "/llm/providers/rf_sub/reset", ``); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	for _, in := range fleet {
		waitState(t, in, "rf_sub", breaker.Closed, 2*time.Second)
	}
	sendOK0 = post(t, fleet[1].URL+"/v1/messages", simpleRequest)
	if got := readAll(t, sendOK0); !strings.Contains(got, "from key") || sub.Hits() != 2 {
		t.Fatalf("B: %s, sub hits %d", got, sub.Hits())
	}
	for _, in := range []*instance{fleet[0], fleet[2]} {
		waitState(t, in, "rf_sub", breaker.Open, 2*time.Second)
	}

	// the cooldown ends: every instance asks at once, the provider gets
	// one probe, which is held until all have asked
	waitState(t, fleet[0], "rf_sub", breaker.HalfOpen, 5*time.Second)
	var wg sync.WaitGroup
	answers := make(chan string, 3*len(fleet))
	for _, in := range fleet {
		for range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := post(t, in.URL+"/v1/messages", simpleRequest)
				readAll(t, res)
				answers <- in.name + ":" + res.Header.Get("X-LLM-Provider")
			}()
		}
	}
	// eight of the nine requests are answered by rf_key while the probe
	// is held
	for range 3*len(fleet) - 1 {
		select {
		case a := <-answers:
			if !strings.HasSuffix(a, ":rf_key") {
				t.Fatalf("a request that is not the probe reached the provider: %s", a)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("requests stalled behind held probes: %d probes reached the provider, want exactly 1", sub.Hits()-2)
		}
	}
	if n := sub.Hits(); n != 3 {
		t.Fatalf("the fleet sent %d probes, want exactly 1", n-2)
	}
	releaseProbe()
	wg.Wait()
	if a := <-answers; !strings.HasSuffix(a, ":rf_sub") {
		t.Fatalf("the probe was answered by %s", a)
	}
	for _, in := range fleet {
		waitState(t, in, "rf_sub", breaker.Closed, 2*time.Second)
		sendOK(t, in, "rf_sub")
	}
}

// A restarted instance remembers a subscription's reset three hours away:
// it reads Redis before its first request.
func TestRedisShareSurvivesRestart(t *testing.T) {
	r := testredis.Start(t)
	reset := time.Now().Add(3 * time.Hour)
	sub := newUpstream(t, "rr_sub", replyError(429, "rate_limit_error", "usage", "anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-reset", fmt.Sprint(reset.Unix())))
	key := newUpstream(t, "rr_key", replyMessage("from key"))
	p := newProxy(t)
	cfg := fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", sub.providerBlock(), key.providerBlock())
	p.load(cfg)
	stopAtCleanup(t)
	in := &instance{name: "A", URL: p.URL, admin: p}
	sendOK0 := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, sendOK0)

	// the cooldown is a Redis key that expires with it
	c := r.Client()
	defer c.Close()
	var ttl time.Duration
	for deadline := time.Now().Add(2 * time.Second); ; {
		ttl = c.PTTL(t.Context(), "llm_failover:breaker:rr_sub").Val()
		if ttl > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if ttl < 2*time.Hour+50*time.Minute || ttl > 3*time.Hour {
		t.Fatalf("the cooldown key expires in %s, want about 3h", ttl)
	}

	if err := caddy.Stop(); err != nil {
		t.Fatal(err)
	}
	resetProviderStates() // a new process remembers nothing
	p.load(cfg)
	sendOK(t, in, "rr_key")
	if sub.Hits() != 1 {
		t.Fatal("the restarted instance retried the provider three hours from its reset")
	}
	if s := snapshot(t, "rr_sub"); s.LastClass != classify.Quota || s.Until.Sub(reset).Abs() > time.Second {
		t.Fatalf("adopted state %+v, want quota until %s", s, reset)
	}
}

// The later cooldown end wins in Redis: an instance that meets a short
// Retry-After does not shorten the longer cooldown another instance
// stored, and adopts that one instead.
func TestRedisShareLaterEndWins(t *testing.T) {
	r := testredis.Start(t)
	sub := newUpstream(t, "rl_sub", replyError(429, "rate_limit_error", "limited", "Retry-After", "30"))
	key := newUpstream(t, "rl_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", sub.providerBlock(), key.providerBlock()))
	stopAtCleanup(t)

	// another instance's 3h cooldown, stored while this one was not
	// listening (its message was lost)
	c := r.Client()
	defer c.Close()
	long := time.Now().Add(3 * time.Hour).Truncate(time.Millisecond)
	other, _ := json.Marshal(share.RedisDecision{Name: "rl_sub", State: breaker.Open, Until: long.UnixMilli(),
		Decided: time.Now().Add(-time.Minute).UnixMicro(), Class: classify.Quota, Instance: "other", Token: "other/1"})
	if err := c.Set(t.Context(), "llm_failover:breaker:rl_sub", other, 3*time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // the 429 with Retry-After: 30

	for deadline := time.Now().Add(2 * time.Second); ; {
		s := snapshot(t, "rl_sub")
		if s.Until.Equal(long) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("this instance did not adopt the longer stored cooldown: %+v", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
	var stored share.RedisDecision
	if err := json.Unmarshal([]byte(c.Get(t.Context(), "llm_failover:breaker:rl_sub").Val()), &stored); err != nil {
		t.Fatal(err)
	}
	if stored.Until != long.UnixMilli() || stored.Instance != "other" {
		t.Fatalf("the short cooldown replaced the long one in redis: %+v", stored)
	}
	if ttl := c.PTTL(t.Context(), "llm_failover:breaker:rl_sub").Val(); ttl < 2*time.Hour {
		t.Fatalf("the key expires in %s", ttl)
	}
}

// Redis stopped in the middle: requests are served on local state with
// no wait on Redis, one log line per interval at most, and when Redis is
// back (empty, as after a restart) sharing resumes: a cooldown decided
// during the outage reaches the other instance.
func TestRedisShareOutage(t *testing.T) {
	r := testredis.Start(t)
	sub := newUpstream(t, "ro_sub", replyMessage("from sub"))
	key := newUpstream(t, "ro_key", replyMessage("from key"))
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	share := redisShare(r)
	blocks := []string{sub.providerBlock(), key.providerBlock()}

	b := &instance{name: "B", URL: freeURL(t)}
	b.admin = &proxy{t: t, AdminAddr: freeAddr(t)}
	startChild(t, fleetCaddyfile(b.admin.AdminAddr, b.URL, share, "", blocks...), b.URL)
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, share, "\tlog {\n\t\toutput file "+logFile+"\n\t\tformat json\n\t}\n", blocks...))
	stopAtCleanup(t)
	a := &instance{name: "A", URL: p.URL, admin: p}
	sendOK(t, a, "ro_sub")
	sendOK(t, b, "ro_sub")

	r.Stop()
	outageStart := time.Now()
	// requests keep being served, each well within a bound no Redis
	// timeout fits in
	client := &http.Client{Timeout: 2 * time.Second}
	for i := range 20 {
		for _, in := range []*instance{a, b} {
			req, _ := http.NewRequest(http.MethodPost, in.URL+"/v1/messages", strings.NewReader(simpleRequest))
			res, err := client.Do(req)
			if err != nil {
				t.Fatalf("request %d to %s during the outage: %v", i, in.name, err)
			}
			if got := readAll(t, res); !strings.Contains(got, "from sub") {
				t.Fatalf("request %d to %s during the outage: %s", i, in.name, got)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A meets a 429 during the outage: a local decision Redis cannot take
	sub.setHandler(replyError(429, "rate_limit_error", "limited", "Retry-After", "600"))
	readAll(t, post(t, a.URL+"/v1/messages", simpleRequest))
	sendOK(t, a, "ro_key")
	outage := time.Since(outageStart)
	hitsBefore := sub.Hits()

	r.Restart()
	// A rewrites its decision into the empty Redis; B resubscribes and
	// reads it
	st := waitState(t, b, "ro_sub", breaker.Open, 10*time.Second)
	t.Logf("after an outage of %s, B adopted A's cooldown %s after Redis was back (%v)", outage, time.Since(outageStart)-outage, st["source"])
	outage = time.Since(outageStart) // the faults last until sharing resumes
	sendOK(t, b, "ro_key")
	if sub.Hits() != hitsBefore {
		t.Fatal("B sent a request to the provider A found cooling during the outage")
	}

	logText, _ := os.ReadFile(logFile)
	var faults int
	resumed := false
	for _, line := range strings.Split(string(logText), "\n") {
		if strings.Contains(line, `"logger":"http.handlers.llm_failover.share"`) {
			if strings.Contains(line, `"level":"warn"`) {
				faults++
			}
			resumed = resumed || strings.Contains(line, "sharing resumed")
		}
	}
	// one line per read_interval (200ms) at most, and at least one
	if maxLines := int(outage/(200*time.Millisecond)) + 2; faults == 0 || faults > maxLines {
		t.Fatalf("%d fault log lines during an outage of %s, want 1..%d:\n%s", faults, outage, maxLines, logText)
	}
	if !resumed {
		t.Fatalf("no log line says sharing resumed:\n%s", logText)
	}
}
