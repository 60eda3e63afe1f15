package failover

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
)

// writeEntry stores another instance's entry the way the storage backend
// does.
func writeEntry(t *testing.T, dir, file string, f share.StorageEntry) {
	t.Helper()
	data, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// Two instances stored cooldowns for one provider: the later end wins,
// though the shorter one was decided last. A close decided after both
// ends it.
func TestShareStorageLaterEndWins(t *testing.T) {
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	now := time.Now()
	long := now.Add(3 * time.Hour).Truncate(time.Second)
	writeEntry(t, prefix, "long.json", share.StorageEntry{Instance: "long", WrittenAt: now, Breakers: map[string]breaker.Decision{
		"sl_sub": {State: breaker.Open, Until: long, Class: classify.Quota, DecidedAt: now.Add(-2 * time.Minute)}}})
	writeEntry(t, prefix, "short.json", share.StorageEntry{Instance: "short", WrittenAt: now, Breakers: map[string]breaker.Decision{
		"sl_sub": {State: breaker.Open, Until: now.Add(30 * time.Second), Class: classify.RateLimit, DecidedAt: now.Add(-time.Minute)}}})
	sub := newUpstream(t, "sl_sub", replyMessage("from sub"))
	key := newUpstream(t, "sl_key", replyMessage("from key"))
	p := newProxy(t)
	p.load(shareCaddyfile(p.AdminAddr, p.URL, storage, sub.providerBlock(), key.providerBlock()))
	stopAtCleanup(t)

	if s := snapshot(t, "sl_sub"); !s.Until.Equal(long) || s.LastClass != classify.Quota {
		t.Fatalf("adopted %+v, want the 3h quota cooldown", s)
	}
	in := &instance{name: "A", URL: p.URL, admin: p}
	sendOK(t, in, "sl_key")

	// the short cooldown's instance meets it again (and cools sl_key,
	// which shows when its entry was read): still not shorter
	writeEntry(t, prefix, "short.json", share.StorageEntry{Instance: "short", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"sl_sub": {State: breaker.Open, Until: time.Now().Add(time.Minute), Class: classify.RateLimit, DecidedAt: time.Now()},
		"sl_key": {State: breaker.Open, Until: time.Now().Add(time.Minute), Class: classify.RateLimit, DecidedAt: time.Now()}}})
	waitState(t, in, "sl_key", breaker.Open, 3*time.Second)
	if s := snapshot(t, "sl_sub"); !s.Until.Equal(long) {
		t.Fatalf("a later, shorter cooldown shortened the 3h one: %+v", s)
	}

	// a close decided after both ends the cooldown
	writeEntry(t, prefix, "long.json", share.StorageEntry{Instance: "long", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"sl_sub": {State: breaker.Closed, DecidedAt: time.Now().Add(time.Second)}}})
	waitState(t, in, "sl_sub", breaker.Closed, 3*time.Second)
	sendOK(t, in, "sl_sub")
}

// Entries of instances that stopped writing longer than purge_after ago
// are deleted unless a cooldown in them is still running; this instance's
// entry never holds an ended cooldown, such as a client's expired one.
func TestShareStoragePurgeAndNoExpiredEntries(t *testing.T) {
	clock := useFakeClock(t)
	storage := t.TempDir()
	prefix := filepath.Join(storage, "llm_failover", "breakers")
	now, old := clock.Now(), time.Now().Add(-2*time.Hour)
	writeEntry(t, prefix, "gone.json", share.StorageEntry{Instance: "gone", WrittenAt: old, Breakers: map[string]breaker.Decision{
		"sp_key": {State: breaker.Open, Until: now.Add(-time.Hour), Class: classify.RateLimit, DecidedAt: now.Add(-2 * time.Hour)}}})
	writeEntry(t, prefix, "gone-cooling.json", share.StorageEntry{Instance: "gone-cooling", WrittenAt: old, Breakers: map[string]breaker.Decision{
		"sp_other": {State: breaker.Open, Until: now.Add(time.Hour), Class: classify.Quota, DecidedAt: now.Add(-2 * time.Hour)}}})
	writeEntry(t, prefix, "alive.json", share.StorageEntry{Instance: "alive", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{}})

	sub := newUpstream(t, "sp_sub", replyError(429, "rate_limit_error", "usage", "anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-reset", epochSeconds(now.Add(5*time.Second))))
	key := newUpstream(t, "sp_key", replyMessage("from key"))
	p := newProxy(t)
	cfg := strings.Replace(shareCaddyfile(p.AdminAddr, p.URL, storage, sub.providerBlock("credential passthrough"), key.providerBlock()),
		"read_interval 200ms", "read_interval 200ms\n\t\t\tpurge_after 1h", 1)
	p.load(cfg)
	stopAtCleanup(t)

	if _, err := os.Stat(filepath.Join(prefix, "gone.json")); !os.IsNotExist(err) {
		t.Fatalf("the entry of an instance gone 2h (purge_after 1h) is still there: %v", err)
	}
	for _, f := range []string{"gone-cooling.json", "alive.json"} {
		if _, err := os.Stat(filepath.Join(prefix, f)); err != nil {
			t.Fatalf("%s was purged: %v", f, err)
		}
	}

	// a client's spent subscription opens its own breaker, which this
	// instance shares
	res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer client-one")
	if got := readAll(t, res); !strings.Contains(got, "from key") {
		t.Fatal(got)
	}
	own := ownEntry(t, prefix, func(f share.StorageEntry) bool { return len(f.Breakers) == 1 })
	var clientName string
	for name := range own.Breakers {
		clientName = name
	}
	if !strings.HasPrefix(clientName, "sp_sub#") {
		t.Fatalf("own entry %+v, want the client's breaker", own)
	}

	// the client's cooldown ends; the next write (after another decision)
	// leaves it out
	clock.Advance(10 * time.Second)
	if code, body := adminPost(t, p, "/llm/providers/sp_key/cooldown", `{"duration":"1h"}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	own = ownEntry(t, prefix, func(f share.StorageEntry) bool { _, ok := f.Breakers["sp_key"]; return ok })
	if _, ok := own.Breakers[clientName]; ok {
		t.Fatalf("the expired client cooldown was written: %+v", own.Breakers)
	}
}

// ownEntry polls this instance's storage entry until ok accepts it.
func ownEntry(t *testing.T, prefix string, ok func(share.StorageEntry) bool) share.StorageEntry {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	var last share.StorageEntry
	for {
		matches, _ := filepath.Glob(filepath.Join(prefix, instanceID()+"-*.json"))
		for _, m := range matches {
			data, err := os.ReadFile(m)
			if err != nil {
				continue
			}
			var f share.StorageEntry
			if json.Unmarshal(data, &f) == nil {
				last = f
				if ok(f) {
					return f
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("this instance's entry is not as expected: %+v (files %v)", last, matches)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
