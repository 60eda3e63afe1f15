package failover

import (
	"encoding/json"
	"fmt"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"net/http"
	"path/filepath"
	"runtime"
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
		if left := time.Until(time.UnixMilli(stored.Until)); left > time.Minute {
			t.Fatalf("%s: the stored cooldown ends in %s, want the provider's 30s", name, left)
		}
	}
	// and the oversized value benched nothing here past the provider's own
	// Retry-After
	if s := snapshot(t, "hk_big"); s.State != breaker.Open || time.Until(s.Until) > time.Minute {
		t.Fatalf("hk_big: %s until %s from now, want open for the provider's 30s", s.State, time.Until(s.Until))
	}
}

// A storage entry is read whole up to 1 MiB, and each decision adopted
// from it names its instance. An instance name of 200 KB with a thousand
// client cooldowns must not become a thousand copies of it (each adopted
// breaker's last error quoted the name whole: 200 MB from one entry).
func TestStorageHugeInstanceNameIsNotCopied(t *testing.T) {
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	sub := newUpstream(t, "hi_sub", replyMessage("from sub"))
	key := newUpstream(t, "hi_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, sub.providerBlock("credential passthrough"), key.providerBlock()))
	stopAtCleanup(t)

	now := time.Now()
	huge := strings.Repeat("i", 200_000)
	f := share.StorageEntry{Instance: huge, WrittenAt: now, Breakers: map[string]breaker.Decision{
		"hi_key": {State: breaker.Open, Until: now.Add(2 * time.Hour), Class: classify.Quota, DecidedAt: now.Add(-time.Minute)}}}
	for i := range share.MaxSharedClients {
		f.Breakers[share.ClientName("hi_sub", fmt.Sprintf("%016x", i))] = breaker.Decision{State: breaker.Open,
			Until: now.Add(time.Hour), Class: classify.Quota, DecidedAt: now.Add(-time.Minute)}
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	writeEntry(t, prefix, "forger.json", f)
	// an honest entry beside it, read in the same pass
	writeEntry(t, prefix, "honest.json", share.StorageEntry{Instance: "honest", WrittenAt: now, Breakers: map[string]breaker.Decision{
		"hi_key": {State: breaker.Open, Until: now.Add(time.Hour), Class: classify.Quota, DecidedAt: now.Add(-time.Minute)}}})
	waitState(t, &instance{name: "A", URL: p.URL, admin: p}, "hi_key", breaker.Open, 3*time.Second)
	time.Sleep(500 * time.Millisecond) // more reads
	runtime.GC()
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew %d KiB after reading the entry", grew>>10)
	if grew > 32<<20 {
		t.Fatalf("heap grew %d MiB from one 1 MiB entry", grew>>20)
	}
	st := providerStatuses(t, p)
	for _, name := range []string{"hi_sub", "hi_key"} {
		if src, _ := st[name]["source"].(string); len(src) > 300 {
			t.Fatalf("%s: status source is %d bytes", name, len(src))
		}
		if le, _ := st[name]["last_error"].(string); len(le) > 300 {
			t.Fatalf("%s: status last_error is %d bytes", name, len(le))
		}
	}
}

// A shared cooldown's class is shown wherever a cooldown is: in every
// answer's X-LLM-Providers, the status API, the table and the all-out
// message. Only a class this proxy knows is taken: a forged one would put
// whatever its writer likes (another provider's entry, 100 KB) into the
// headers of every answer.
func TestStorageForgedClassIsIgnored(t *testing.T) {
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	a := newUpstream(t, "fc_a", replyMessage("from a"))
	b := newUpstream(t, "fc_b", replyMessage("from b"))
	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, a.providerBlock(), b.providerBlock()))
	stopAtCleanup(t)

	now := time.Now()
	forged := classify.Class(`x;retry-after=1, "fc_b";state=closed` + strings.Repeat("y", 100_000))
	writeEntry(t, prefix, "forger.json", share.StorageEntry{Instance: "forger", WrittenAt: now, Breakers: map[string]breaker.Decision{
		"fc_a": {State: breaker.Open, Until: now.Add(time.Hour), Class: forged, DecidedAt: now.Add(-time.Minute)}}})
	writeEntry(t, prefix, "honest.json", share.StorageEntry{Instance: "honest", WrittenAt: now, Breakers: map[string]breaker.Decision{
		"fc_b": {State: breaker.Open, Until: now.Add(time.Hour), Class: classify.Quota, DecidedAt: now.Add(-time.Minute)}}})
	waitState(t, &instance{name: "A", URL: p.URL, admin: p}, "fc_b", breaker.Open, 3*time.Second)
	time.Sleep(500 * time.Millisecond) // more reads

	res := post(t, p.URL+"/v1/messages", simpleRequest)
	body := readAll(t, res)
	hdr := res.Header.Get("X-LLM-Providers")
	if len(hdr) > 1000 || strings.Contains(hdr, "yyy") || strings.Contains(body, "yyy") || strings.Count(hdr, `"fc_b"`) > 1 {
		t.Fatalf("X-LLM-Providers (%d bytes) %.300q, body %.300q: a forged class reached the answer", len(hdr), hdr, body)
	}
	if res.StatusCode != http.StatusOK || res.Header.Get("X-LLM-Provider") != "fc_a" {
		t.Fatalf("%d from %q: want fc_a, whose forged cooldown is ignored", res.StatusCode, res.Header.Get("X-LLM-Provider"))
	}
	if c, _ := providerStatuses(t, p)["fc_a"]["last_class"].(string); len(c) > 100 {
		t.Fatalf("status last_class is %d bytes", len(c))
	}
}

// A client's shared name ends in its credential's fingerprint. A forged
// name with no fingerprint named the breaker of requests without a
// credential (which never cools: they are no client); one with any other
// text made a client of it.
func TestStorageForgedClientNamesMakeNoClient(t *testing.T) {
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	sub := newUpstream(t, "fn_sub", replyMessage("from sub"))
	key := newUpstream(t, "fn_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, sub.providerBlock("credential passthrough"), key.providerBlock()))
	stopAtCleanup(t)

	now := time.Now()
	cool := breaker.Decision{State: breaker.Open, Until: now.Add(time.Hour), Class: classify.Quota, DecidedAt: now.Add(-time.Minute)}
	writeEntry(t, prefix, "forger.json", share.StorageEntry{Instance: "forger", WrittenAt: now, Breakers: map[string]breaker.Decision{
		share.ClientName("fn_sub", ""):                  cool,
		share.ClientName("fn_sub", "not a fingerprint"): cool,
		share.ClientName("fn_sub", "#"):                 cool,
	}})
	writeEntry(t, prefix, "honest.json", share.StorageEntry{Instance: "honest", WrittenAt: now, Breakers: map[string]breaker.Decision{
		"fn_key": cool}})
	waitState(t, &instance{name: "A", URL: p.URL, admin: p}, "fn_key", breaker.Open, 3*time.Second)
	time.Sleep(500 * time.Millisecond) // more reads

	// a request that is no model call passes through without a credential
	req, _ := http.NewRequest(http.MethodHead, p.URL+"/", nil)
	res, err := freshConnClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK || sub.Hits() != 1 {
		t.Fatalf("HEAD / without a credential: %d after %d requests to fn_sub; want fn_sub's 200", res.StatusCode, sub.Hits())
	}
	wantNoClients(t, p, "fn_sub")
}

// Anyone who can publish on the decisions channel can name as many
// clients as it likes, each with a quota cooldown. The breakers shared
// state makes are as bounded as the decisions an instance shares: at most
// share.MaxSharedClients, and a client this instance serves keeps its own.
func TestRedisPublishedClientsBounded(t *testing.T) {
	r := testredis.Start(t)
	sub := clientsUpstream(t, "pc_sub")
	key := newUpstream(t, "pc_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", sub.providerBlock("credential passthrough"), key.providerBlock()))
	stopAtCleanup(t)
	res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer alice")
	if body := readAll(t, res); res.Header.Get("X-LLM-Provider") != "pc_sub" {
		t.Fatalf("alice: %d %s", res.StatusCode, body)
	}

	c := r.Client()
	defer c.Close()
	const forged = 3 * share.MaxSharedClients
	now := time.Now()
	pipe := c.Pipeline()
	for i := range forged {
		val, _ := json.Marshal(share.RedisDecision{Name: share.ClientName("pc_sub", fmt.Sprintf("%016x", i)), State: breaker.Open,
			Until: now.Add(time.Hour).UnixMilli(), Decided: now.Add(-time.Minute).UnixMicro(), Class: classify.Quota,
			Instance: "forger", Token: "forger/1"})
		pipe.Publish(t.Context(), "llm_failover:decisions", val)
	}
	if _, err := pipe.Exec(t.Context()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the subscriber has applied them
	n, _ := providerStatuses(t, p)["pc_sub"]["clients"].(float64)
	t.Logf("%d clients published: pc_sub keeps %v client breakers", forged, n)
	if n > share.MaxSharedClients+1 {
		t.Fatalf("pc_sub keeps %v client breakers after %d forged decisions, want at most %d and alice", n, forged, share.MaxSharedClients)
	}
	// alice is still served
	res = post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer alice")
	if body := readAll(t, res); res.StatusCode != http.StatusOK || res.Header.Get("X-LLM-Provider") != "pc_sub" {
		t.Fatalf("alice after the flood: %d from %q %s", res.StatusCode, res.Header.Get("X-LLM-Provider"), body)
	}
}
