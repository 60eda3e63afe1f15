package share

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// countingStorage counts the entries loaded and tells their sizes.
type countingStorage struct {
	*memStorage
	loads  int
	loaded int // bytes
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	s.loads++
	v, err := s.memStorage.Load(ctx, key)
	s.loaded += len(v)
	return v, err
}

func (s *countingStorage) Size(ctx context.Context, key string) (int64, error) {
	v, err := s.memStorage.Load(ctx, key)
	return int64(len(v)), err
}

// clientBreakers is a provider "p" with a shared breaker and many clients:
// cooling for auth (never served), cooling for overloaded, and one served
// client cooling for quota.
func clientBreakers(now time.Time, auth, overloaded int) *fakeBreakers {
	bs := newFakeBreakers("p")
	for i := range auth {
		b := bs.Named(ClientName("p", fmt.Sprint("random", i)), true)
		b.Failure(now, breaker.Failure{Class: classify.Auth, Cooldown: time.Hour, MaxCooldown: time.Hour})
	}
	for i := range overloaded {
		b := bs.Named(ClientName("p", fmt.Sprint("busy", i)), true)
		b.Failure(now, breaker.Failure{Class: classify.Overloaded, Cooldown: time.Minute, MaxCooldown: time.Hour})
	}
	b := bs.Named(ClientName("p", "alice"), true)
	b.Admit(now, "")
	b.Success(now)
	b.Failure(now, breaker.Failure{Class: classify.Quota, Cooldown: time.Minute, MaxCooldown: time.Hour})
	return bs
}

// An instance shares at most MaxSharedClients per-client decisions, none
// of a client that cooled for anything but auth or quota, and a client
// that was served once is among them.
func TestStorageClientDecisionsCapped(t *testing.T) {
	t.Parallel()
	st := newMemStorage()
	bs := clientBreakers(shareT0, MaxSharedClients+500, 50)
	s := newStorageSharer(t, st, bs, shareT0)
	s.storage().write(context.Background())
	data, err := st.Load(context.Background(), DefaultStoragePrefix+"/me-k.json")
	if err != nil {
		t.Fatal(err)
	}
	var own StorageEntry
	if err := json.Unmarshal(data, &own); err != nil {
		t.Fatal(err)
	}
	clients := 0
	for name, d := range own.Breakers {
		if strings.Contains(name, "busy") {
			t.Fatalf("shared %s (%s): it never cooled for auth or quota", name, d.Class)
		}
		if isClientName(name) {
			clients++
		}
	}
	t.Logf("%d clients cooling: %d shared, entry of %d bytes", MaxSharedClients+551, clients, len(data))
	if clients > MaxSharedClients {
		t.Fatalf("%d per-client decisions shared, want at most %d", clients, MaxSharedClients)
	}
	if _, ok := own.Breakers[ClientName("p", "alice")]; !ok {
		t.Fatal("the served client's quota cooldown is not shared")
	}
}

// A read loads at most maxStorageReads entries, those of this handler's
// kind first, and never one past maxStorageEntryBytes: a prefix crowded
// by another writer still lets a peer's cooldown through.
func TestStorageReadBudget(t *testing.T) {
	t.Parallel()
	st := &countingStorage{memStorage: newMemStorage()}
	filler, _ := json.Marshal(StorageEntry{Instance: "filler", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{}})
	for i := range 20000 {
		st.m[fmt.Sprintf("%s/filler%05d.json", DefaultStoragePrefix, i)] = filler
	}
	huge := make([]byte, maxStorageEntryBytes+1)
	st.m[DefaultStoragePrefix+"/huge-k.json"] = huge
	st.put(t, "peer-k.json", StorageEntry{Instance: "peer", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"p": {State: breaker.Open, Until: shareT0.Add(time.Hour), Class: classify.Quota, DecidedAt: shareT0}}})
	bs := newFakeBreakers("p")
	s := newStorageSharer(t, st, bs, shareT0)
	start := time.Now()
	s.storage().read(context.Background())
	t.Logf("one read of a prefix holding %d entries: %s, %d loaded", len(st.m), time.Since(start), st.loads)
	if st.loads > maxStorageReads {
		t.Fatalf("one read loaded %d entries, want at most %d", st.loads, maxStorageReads)
	}
	if snap := bs.get("p").Snapshot(shareT0); snap.State != breaker.Open {
		t.Fatalf("the peer's cooldown was not read: %+v", snap)
	}
}

// fillRedis writes n keys under the breaker prefix and n names into the
// client index, as another writer sharing the Redis could.
func fillRedis(t *testing.T, r *testredis.Server, n int) {
	t.Helper()
	c := r.Client()
	defer c.Close()
	// in chunks: a script that runs for seconds makes Redis answer BUSY
	for from := 0; from < n; from += 10000 {
		err := c.Eval(t.Context(), `
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
	local name = 'p#filler' .. i
	redis.call('SET', 'llm_failover:breaker:' .. name,
		'{"name":"' .. name .. '","state":"open","until":' .. ARGV[3] .. ',"class":"auth","decided_us":' .. ARGV[4] .. ',"instance":"filler","token":"filler/1"}')
	redis.call('ZADD', 'llm_failover:clients', ARGV[3], name)
end
return 0`, nil, from+1, min(from+10000, n), time.Now().Add(time.Hour).UnixMilli(), time.Now().UnixMicro()).Err()
		if err != nil {
			t.Fatal(err)
		}
	}
}

// With 300k keys under the prefix, and as many names in the client index,
// a read costs what it costs on an empty Redis: the provider-wide
// decisions and at most MaxSharedClients clients.
func TestRedisReadBudget(t *testing.T) {
	t.Parallel()
	r := testredis.Start(t)
	const filled = 300_000
	fillRedis(t, r, filled)
	a, as := redisSharer(t, r, "a", "p")
	as.get("p").Failure(time.Now(), breaker.Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour})
	a.Kick()

	bs := newFakeBreakers("p")
	b, err := New(Config{Redis: r.URL, Instance: "b"}, bs)
	if err != nil {
		t.Fatal(err)
	}
	rb := b.backend.(*redisBackend)
	t.Cleanup(func() { rb.client.Close() })
	waitFor(t, "a's cooldown is stored", func() bool {
		return rb.client.Exists(t.Context(), "llm_failover:breaker:p").Val() == 1
	})
	start := time.Now()
	if err := rb.read(context.Background()); err != nil {
		t.Fatalf("read with %d keys under the prefix: %v", filled, err)
	}
	took := time.Since(start)
	t.Logf("one read with %d keys and index entries under the prefix: %s, %d client breakers made", filled, took, bs.made)
	if snap := bs.get("p").Snapshot(time.Now()); snap.State != breaker.Open {
		t.Fatalf("a's cooldown was not read: %+v", snap)
	}
	if bs.made > MaxSharedClients {
		t.Fatalf("one read made %d client breakers, want at most %d", bs.made, MaxSharedClients)
	}
}

// A client whose cooldown the fleet never heard of probes without a lease
// (no key); one whose cooldown is shared takes the fleet's lease.
func TestRedisLeaseOnlyForSharedClients(t *testing.T) {
	t.Parallel()
	r := testredis.Start(t)
	s, bs := redisSharer(t, r, "a", "p")
	now := time.Now()
	busy := bs.Named(ClientName("p", "busy"), true)
	busy.Failure(now, breaker.Failure{Class: classify.Overloaded, Cooldown: time.Minute, MaxCooldown: time.Hour})
	alice := bs.Named(ClientName("p", "alice"), true)
	alice.Failure(now, breaker.Failure{Class: classify.Quota, Cooldown: time.Minute, MaxCooldown: time.Hour})
	s.Kick()
	c := r.Client()
	defer c.Close()
	// once written (a write releases the writer's own lease)
	waitFor(t, "alice's cooldown is shared", func() bool {
		return c.Exists(t.Context(), "llm_failover:breaker:p#alice").Val() == 1
	})
	s.clientDecisions(now) // what every write chooses
	later := now.Add(2 * time.Minute)
	for _, b := range []*breaker.Breaker{busy, alice} {
		adm := b.Admit(later, "")
		if !adm.Probe {
			t.Fatalf("no probe: %+v", adm)
		}
	}
	s.ClaimProbe(ClientName("p", "busy"), busy, breaker.Admission{OK: true, Probe: true})
	if c.Exists(t.Context(), "llm_failover:probe:p#busy").Val() != 0 {
		t.Fatal("a lease key for a client whose cooldown was never shared")
	}
	// a resync rewrites alice's decision, which releases the writer's
	// lease: claim again if one came in between
	waitFor(t, "a lease for a client whose quota cooldown is shared", func() bool {
		s.ClaimProbe(ClientName("p", "alice"), alice, breaker.Admission{OK: true, Probe: true})
		return c.Exists(t.Context(), "llm_failover:probe:p#alice").Val() == 1
	})
}

// Two instances each share 700 clients' auth cooldowns: Redis keeps at
// most MaxSharedClients of them for the fleet, keys and index alike. An
// index another writer made a string stops no write.
func TestRedisClientIndexCapsTheFleet(t *testing.T) {
	t.Parallel()
	r := testredis.Start(t)
	c := r.Client()
	defer c.Close()
	countKeys := func() int {
		n := 0
		iter := c.Scan(t.Context(), 0, "llm_failover:breaker:p#*", 1000).Iterator()
		for iter.Next(t.Context()) {
			n++
		}
		return n
	}
	// written here, not by a background loop: each write is whole when
	// it returns
	writer := func(name string) (*redisBackend, *fakeBreakers) {
		bs := newFakeBreakers("p")
		s, err := New(Config{Redis: r.URL, Instance: name}, bs)
		if err != nil {
			t.Fatal(err)
		}
		rb := s.backend.(*redisBackend)
		t.Cleanup(func() { rb.client.Close() })
		return rb, bs
	}
	for _, name := range []string{"a", "b"} {
		rb, bs := writer(name)
		now := time.Now()
		for j := range 700 {
			b := bs.Named(ClientName("p", fmt.Sprint(name, j)), true)
			b.Failure(now, breaker.Failure{Class: classify.Auth, Cooldown: time.Duration(j+1) * time.Minute, MaxCooldown: 24 * time.Hour})
		}
		rb.write(context.Background())
		if rb.down.Load() {
			t.Fatalf("instance %s: a write failed", name)
		}
	}
	keys, index := countKeys(), c.ZCard(t.Context(), "llm_failover:clients").Val()
	t.Logf("two instances of 700 cooling clients each: %d client keys, %d in the index", keys, index)
	if keys > MaxSharedClients || index > MaxSharedClients {
		t.Fatalf("%d client keys and %d index entries, want at most %d", keys, index, MaxSharedClients)
	}

	// an index that is not a sorted set
	if err := c.Set(t.Context(), "llm_failover:clients", "junk", 0).Err(); err != nil {
		t.Fatal(err)
	}
	rb, bs := writer("c")
	bs.Named(ClientName("p", "carol"), true).Failure(time.Now(), breaker.Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour})
	rb.write(context.Background())
	waitFor(t, "carol's cooldown is written despite the broken index", func() bool {
		return c.Exists(t.Context(), "llm_failover:breaker:p#carol").Val() == 1
	})
}

// Whoever can write the storage can fill 64 entries named like this
// handler's with a MiB of decisions each: parsing them all took 1.6-2.1 s
// of CPU at every read (every 2 s). A read parses at most
// maxStorageReadBytes; the entries after go on at the next read, so an
// honest peer among them is still read within a few.
func TestStorageReadBytesBudget(t *testing.T) {
	t.Parallel()
	st := &countingStorage{memStorage: newMemStorage()}
	for e := range maxStorageReads {
		f := StorageEntry{Instance: fmt.Sprint("junk", e), WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{}}
		for i := range 9000 {
			f.Breakers[fmt.Sprintf("z%05d", i)] = breaker.Decision{State: breaker.Open, Until: shareT0.Add(time.Hour), Class: classify.Quota, DecidedAt: shareT0}
		}
		st.put(t, fmt.Sprintf("junk%02d-k.json", e), f)
	}
	st.put(t, "peer-k.json", StorageEntry{Instance: "peer", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"p": {State: breaker.Open, Until: shareT0.Add(time.Hour), Class: classify.Quota, DecidedAt: shareT0}}})
	bs := newFakeBreakers("p")
	s := newStorageSharer(t, st, bs, shareT0)
	total := 0
	for _, v := range st.m {
		total += len(v)
	}
	reads := 0
	for bs.get("p").Snapshot(shareT0).State != breaker.Open {
		if reads++; reads > total/maxStorageReadBytes+2 {
			t.Fatalf("the peer's cooldown was not read in %d reads", reads-1)
		}
		st.loaded = 0
		start := time.Now()
		s.storage().read(context.Background())
		t.Logf("read %d: %d KiB parsed in %s", reads, st.loaded>>10, time.Since(start))
		if st.loaded > maxStorageReadBytes {
			t.Fatalf("one read parsed %d KiB of entries, want at most %d KiB", st.loaded>>10, maxStorageReadBytes>>10)
		}
	}
}
