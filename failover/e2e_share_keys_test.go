package failover

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// What a passthrough provider's clients can make the fleet store is
// bounded: a client that never cooled for auth or quota gets no key, the
// per-client entries are capped, and a client that was served once keeps
// its place past the cap. A keyspace crowded by another writer never stops
// sharing.

// redisKeys counts the keys matching pattern.
func redisKeys(t *testing.T, r *testredis.Server, pattern string) []string {
	t.Helper()
	c := r.Client()
	defer c.Close()
	var keys []string
	iter := c.Scan(t.Context(), 0, pattern, 1000).Iterator()
	for iter.Next(t.Context()) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return keys
}

// sendAs sends n requests, each with its own client token made by token(i),
// from a few goroutines, and wants every one answered 200.
func sendAs(t *testing.T, url string, n int, token func(i int) string) {
	t.Helper()
	var wg sync.WaitGroup
	next := make(chan int)
	errs := make(chan string, n)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				res := post(t, url+"/v1/messages", simpleRequest, "Authorization", "Bearer "+token(i))
				if body := readAll(t, res); res.StatusCode != http.StatusOK {
					errs <- fmt.Sprintf("%s: %d %s", token(i), res.StatusCode, body)
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

// clientsUpstream is a subscription provider that refuses tokens
// starting with "random-" (auth), is overloaded for tokens starting with
// "busy-", and serves alice until she sends X-Alice-Spent, then finds her
// subscription spent (quota) for three hours.
func clientsUpstream(t *testing.T, name string) *fakeUpstream {
	return newUpstream(t, name, func(w http.ResponseWriter, req *http.Request, body []byte) {
		token := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
		switch {
		case strings.HasPrefix(token, "busy-"):
			replyError(529, "overloaded_error", "Overloaded")(w, req, body)
		case strings.HasPrefix(token, "random-"):
			replyError(401, "authentication_error", "invalid x-api-key")(w, req, body)
		case token == "alice" && req.Header.Get("X-Alice-Spent") != "":
			replyError(429, "rate_limit_error", "usage", "anthropic-ratelimit-unified-status", "rejected",
				"anthropic-ratelimit-unified-reset", fmt.Sprint(time.Now().Add(3*time.Hour).Unix()))(w, req, body)
		default:
			replyMessage("from sub")(w, req, body)
		}
	})
}

func TestRedisPassthroughClientKeysBounded(t *testing.T) {
	r := testredis.Start(t)
	sub := clientsUpstream(t, "pk_sub")
	key := newUpstream(t, "pk_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", sub.providerBlock("credential passthrough"), key.providerBlock()))
	stopAtCleanup(t)
	const clientKeys = "llm_failover:breaker:pk_sub#*"

	// alice is served, as a real subscriber is
	res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer alice")
	if body := readAll(t, res); res.Header.Get("X-LLM-Provider") != "pk_sub" {
		t.Fatalf("alice: %d %s", res.StatusCode, body)
	}

	// clients the provider finds overloaded cool, but not for auth or
	// quota: nothing of theirs is shared
	sendAs(t, p.URL, 200, func(i int) string { return fmt.Sprint("busy-", i) })
	time.Sleep(500 * time.Millisecond) // a few write intervals
	if keys := redisKeys(t, r, clientKeys); len(keys) != 0 {
		t.Fatalf("%d keys for clients that never cooled for auth or quota, want 0 (first: %s)", len(keys), keys[0])
	}

	// random tokens cool for auth: at most the cap of them is shared
	const random = share.MaxSharedClients + 300
	sendAs(t, p.URL, random, func(i int) string { return fmt.Sprint("random-", i) })
	time.Sleep(500 * time.Millisecond)
	keys := redisKeys(t, r, clientKeys)
	t.Logf("%d requests with random tokens left %d client keys in redis (cap %d)", random, len(keys), share.MaxSharedClients)
	if len(keys) > share.MaxSharedClients {
		t.Fatalf("%d client keys in redis, want at most %d", len(keys), share.MaxSharedClients)
	}

	// alice's subscription runs out: hers is shared, cap or not
	res = post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer alice", "X-Alice-Spent", "1")
	if body := readAll(t, res); res.Header.Get("X-LLM-Provider") != "pk_key" {
		t.Fatalf("alice, spent: %d %s", res.StatusCode, body)
	}
	c := r.Client()
	defer c.Close()
	for deadline := time.Now().Add(2 * time.Second); ; {
		found := false
		for _, k := range redisKeys(t, r, clientKeys) {
			var d share.RedisDecision
			if json.Unmarshal([]byte(c.Get(t.Context(), k).Val()), &d) == nil && d.Class == classify.Quota {
				found = true
			}
		}
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the quota cooldown of a client that was served is not shared once the cap is full")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if keys := redisKeys(t, r, clientKeys); len(keys) > share.MaxSharedClients {
		t.Fatalf("%d client keys in redis, want at most %d", len(keys), share.MaxSharedClients)
	}
}

// The storage backend shares the same: this instance's entry holds no
// decision of a client that never cooled for auth or quota, at most the
// cap of the others, and the served client's among them.
func TestStoragePassthroughClientEntriesBounded(t *testing.T) {
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	sub := clientsUpstream(t, "pe_sub")
	key := newUpstream(t, "pe_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, sub.providerBlock("credential passthrough"), key.providerBlock()))
	stopAtCleanup(t)

	res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer alice")
	if body := readAll(t, res); res.Header.Get("X-LLM-Provider") != "pe_sub" {
		t.Fatalf("alice: %d %s", res.StatusCode, body)
	}
	sendAs(t, p.URL, 200, func(i int) string { return fmt.Sprint("busy-", i) })
	const random = share.MaxSharedClients + 300
	sendAs(t, p.URL, random, func(i int) string { return fmt.Sprint("random-", i) })
	res = post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer alice", "X-Alice-Spent", "1")
	if body := readAll(t, res); res.Header.Get("X-LLM-Provider") != "pe_key" {
		t.Fatalf("alice, spent: %d %s", res.StatusCode, body)
	}
	own := ownEntry(t, prefix, func(f share.StorageEntry) bool {
		for _, d := range f.Breakers {
			if d.Class == classify.Quota {
				return true
			}
		}
		return false
	})
	clients := 0
	for name, d := range own.Breakers {
		if strings.HasPrefix(name, "pe_sub#") {
			clients++
		}
		if d.Class != classify.Auth && d.Class != classify.Quota {
			t.Fatalf("shared %s: %+v, a client that never cooled for auth or quota", name, d)
		}
	}
	t.Logf("200 overloaded clients and %d random tokens: %d per-client decisions in this instance's entry", random, clients)
	if clients > share.MaxSharedClients {
		t.Fatalf("%d per-client decisions in this instance's entry, want at most %d", clients, share.MaxSharedClients)
	}
}

// fillKeyspace writes n keys under the breaker prefix, as another writer
// sharing the Redis could: decisions of clients of the provider no
// instance knows.
func fillKeyspace(t *testing.T, r *testredis.Server, provider string, n int) {
	t.Helper()
	c := r.Client()
	defer c.Close()
	// in chunks: a script that runs for seconds makes Redis answer BUSY
	for from := 0; from < n; from += 10000 {
		err := c.Eval(t.Context(), `
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
	local name = ARGV[3] .. '#filler' .. i
	redis.call('SET', 'llm_failover:breaker:' .. name,
		'{"name":"' .. name .. '","state":"closed","decided_us":' .. ARGV[4] .. ',"instance":"filler","token":"filler/1"}')
end
return 0`, nil, from+1, min(from+10000, n), provider, time.Now().Add(-time.Minute).UnixMicro()).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// With 300k keys under the prefix, an instance that starts still reads the
// cooldown another instance shared, within its budget, and its sharing
// stays up.
func TestRedisShareCrowdedKeyspace(t *testing.T) {
	r := testredis.Start(t)
	const filled = 300_000
	fillKeyspace(t, r, "ck_sub", filled)
	sub := newUpstream(t, "ck_sub", replyError(429, "rate_limit_error", "limited", "Retry-After", "60"))
	key := newUpstream(t, "ck_key", replyMessage("from key"))
	blocks := []string{sub.providerBlock(), key.providerBlock()}

	p := newProxy(t)
	p.load(fleetCaddyfile(p.AdminAddr, p.URL, redisShare(r), "", blocks...))
	stopAtCleanup(t)
	a := &instance{name: "A", URL: p.URL, admin: p}
	res := post(t, a.URL+"/v1/messages", simpleRequest)
	if body := readAll(t, res); res.Header.Get("X-LLM-Provider") != "ck_key" || sub.Hits() != 1 {
		t.Fatalf("A: %d %s", res.StatusCode, body)
	}

	// B starts after the decision: it has only its read to learn it
	b := &instance{name: "B", URL: freeURL(t), admin: &proxy{t: t, AdminAddr: freeAddr(t)}}
	started := time.Now()
	startChild(t, fleetCaddyfile(b.admin.AdminAddr, b.URL, redisShare(r), "", blocks...), b.URL)
	t.Logf("B started in %s with %d keys under the prefix", time.Since(started), filled)
	st := waitState(t, b, "ck_sub", breaker.Open, 3*time.Second)
	if st["source"] == "local" {
		t.Fatalf("B's cooldown is its own: %v", st)
	}
	sendOK(t, b, "ck_key")
	if sub.Hits() != 1 {
		t.Fatalf("B sent a request to the provider A found cooling")
	}

	// B's reads keep succeeding: it says when it last read shared state
	for deadline := time.Now().Add(3 * time.Second); ; {
		if providerStatuses(t, b.admin)["ck_sub"]["synced_at"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("B never finished a read of shared state")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
