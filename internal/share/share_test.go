package share

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// fakeBreakers is a handler's breakers by shared name; a name it does not
// know is a provider that is not here.
type fakeBreakers struct {
	mu   sync.Mutex
	m    map[string]*breaker.Breaker
	made int // client breakers made by Named
}

func newFakeBreakers(names ...string) *fakeBreakers {
	f := &fakeBreakers{m: map[string]*breaker.Breaker{}}
	for _, n := range names {
		f.m[n] = new(breaker.Breaker)
	}
	return f
}

// Each calls fn without holding the lock, as the handler's view does: fn
// may look a name up (a write that lost to a stored decision adopts it).
func (f *fakeBreakers) Each(fn func(string, *breaker.Breaker)) { f.each(false, fn) }

// EachClient calls fn for the names that are a client's (ClientName).
func (f *fakeBreakers) EachClient(fn func(string, *breaker.Breaker)) { f.each(true, fn) }

func (f *fakeBreakers) each(clients bool, fn func(string, *breaker.Breaker)) {
	f.mu.Lock()
	m := make(map[string]*breaker.Breaker, len(f.m))
	for n, b := range f.m {
		if isClientName(n) == clients {
			m[n] = b
		}
	}
	f.mu.Unlock()
	for n, b := range m {
		fn(n, b)
	}
}

// Named makes a client's breaker when create is set, as a passthrough
// provider "p" does.
func (f *fakeBreakers) Named(name string, create bool) *breaker.Breaker {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.m[name]; ok || !create || !strings.HasPrefix(name, "p#") {
		return b
	}
	f.m[name] = new(breaker.Breaker)
	f.made++
	return f.m[name]
}

func (f *fakeBreakers) get(name string) *breaker.Breaker { return f.Named(name, false) }

// memStorage is a Storage in memory.
type memStorage struct {
	mu sync.Mutex
	m  map[string][]byte
}

func newMemStorage() *memStorage { return &memStorage{m: map[string][]byte{}} }

func (s *memStorage) Store(_ context.Context, key string, value []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = append([]byte(nil), value...)
	return nil
}

func (s *memStorage) Load(_ context.Context, key string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return v, nil
}

func (s *memStorage) Delete(_ context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[key]; !ok {
		return fs.ErrNotExist
	}
	delete(s.m, key)
	return nil
}

func (s *memStorage) List(_ context.Context, prefix string, _ bool) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var keys []string
	for k := range s.m {
		if strings.HasPrefix(k, prefix+"/") {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

func (s *memStorage) put(t *testing.T, key string, e StorageEntry) {
	t.Helper()
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Store(context.Background(), DefaultStoragePrefix+"/"+key, data)
}

func (s *memStorage) has(key string) bool {
	_, err := s.Load(context.Background(), DefaultStoragePrefix+"/"+key)
	return err == nil
}

var shareT0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func newStorageSharer(t *testing.T, st Storage, b Breakers, now time.Time) *Sharer {
	t.Helper()
	s, err := New(Config{Storage: st, Key: "k", Instance: "me", Now: func() time.Time { return now }}, b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *Sharer) storage() *storageBackend { return s.backend.(*storageBackend) }

// Two instances stored cooldowns for one breaker: the later end wins,
// though the shorter one was decided last; a close decided after both ends
// it. Names no provider here has are ignored.
func TestStorageLaterEndWinsThenLaterClose(t *testing.T) {
	t.Parallel()
	st := newMemStorage()
	long := shareT0.Add(3 * time.Hour)
	st.put(t, "long.json", StorageEntry{Instance: "long", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"sub":   {State: breaker.Open, Until: long, Class: classify.Quota, DecidedAt: shareT0.Add(-2 * time.Minute)},
		"other": {State: breaker.Open, Until: long, Class: classify.Quota, DecidedAt: shareT0.Add(-2 * time.Minute)}}})
	st.put(t, "short.json", StorageEntry{Instance: "short", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"sub": {State: breaker.Open, Until: shareT0.Add(30 * time.Second), Class: classify.RateLimit, DecidedAt: shareT0.Add(-time.Minute)}}})
	bs := newFakeBreakers("sub")
	s := newStorageSharer(t, st, bs, shareT0)
	s.storage().read(context.Background())
	snap := bs.get("sub").Snapshot(shareT0)
	if snap.State != breaker.Open || !snap.Until.Equal(long) || snap.LastClass != classify.Quota {
		t.Fatalf("adopted %+v, want the 3h quota cooldown", snap)
	}
	if origin, _ := bs.get("sub").Provenance(); origin != "long" {
		t.Fatalf("origin %q, want the instance that decided it", origin)
	}
	if s.SyncedAt().IsZero() {
		t.Fatal("a complete read is not marked as synced")
	}
	st.put(t, "short.json", StorageEntry{Instance: "short", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"sub": {State: breaker.Closed, DecidedAt: shareT0.Add(time.Second)}}})
	s.storage().read(context.Background())
	if snap := bs.get("sub").Snapshot(shareT0); snap.State != breaker.Closed {
		t.Fatalf("a close decided after both cooldowns left %+v", snap)
	}
}

// This instance writes its running cooldowns and recent closes, never an
// ended cooldown; an entry of an instance that stopped writing long ago is
// purged unless one of its cooldowns still runs.
func TestStorageWritesLiveDecisionsAndPurges(t *testing.T) {
	t.Parallel()
	st := newMemStorage()
	bs := newFakeBreakers("cooling", "ended", "closed")
	f := breaker.Failure{Class: classify.Overloaded, Cooldown: time.Minute, MaxCooldown: time.Hour}
	bs.get("cooling").Failure(shareT0, breaker.Failure{Class: classify.Quota, Cooldown: time.Hour, MaxCooldown: time.Hour})
	bs.get("ended").Failure(shareT0.Add(-2*time.Minute), f)
	bs.get("closed").Failure(shareT0.Add(-2*time.Minute), f)
	bs.get("closed").Admit(shareT0, "")
	bs.get("closed").Success(shareT0)

	old := time.Now().Add(-48 * time.Hour)
	st.put(t, "gone.json", StorageEntry{Instance: "gone", WrittenAt: old, Breakers: map[string]breaker.Decision{}})
	st.put(t, "gone-cooling.json", StorageEntry{Instance: "gone-cooling", WrittenAt: old, Breakers: map[string]breaker.Decision{
		"x": {State: breaker.Open, Until: shareT0.Add(time.Hour), DecidedAt: shareT0}}})

	s := newStorageSharer(t, st, bs, shareT0)
	s.storage().tick(context.Background())
	data, err := st.Load(context.Background(), DefaultStoragePrefix+"/me-k.json")
	if err != nil {
		t.Fatal(err)
	}
	var own StorageEntry
	if err := json.Unmarshal(data, &own); err != nil {
		t.Fatal(err)
	}
	if _, ok := own.Breakers["ended"]; ok || len(own.Breakers) != 2 ||
		own.Breakers["cooling"].State != breaker.Open || own.Breakers["closed"].State != breaker.Closed {
		t.Fatalf("own entry %s: want the running cooldown and the recent close only", data)
	}
	if st.has("gone.json") || !st.has("gone-cooling.json") {
		t.Fatal("want the stale entry purged and the one with a running cooldown kept")
	}
}

// A corrupt entry is skipped, the others are read.
func TestStorageCorruptEntrySkipped(t *testing.T) {
	t.Parallel()
	st := newMemStorage()
	_ = st.Store(context.Background(), DefaultStoragePrefix+"/bad.json", []byte("{not json"))
	st.put(t, "good.json", StorageEntry{Instance: "good", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"sub": {State: breaker.Open, Until: shareT0.Add(time.Hour), DecidedAt: shareT0}}})
	bs := newFakeBreakers("sub")
	newStorageSharer(t, st, bs, shareT0).storage().read(context.Background())
	if snap := bs.get("sub").Snapshot(shareT0); snap.State != breaker.Open {
		t.Fatalf("a corrupt entry stopped the read: %+v", snap)
	}
}

func TestValidRedisURL(t *testing.T) {
	t.Parallel()
	for s, want := range map[string]string{
		"redis://127.0.0.1:6379/0":        "",
		"rediss://cache.internal:6380/2":  "",
		"redis://u:secret@127.0.0.1:6379": "carries a password",
		"tcp://127.0.0.1:6379":            "scheme must be redis or rediss",
		"redis:///0":                      "no host",
	} {
		err := ValidRedisURL(s)
		if (want == "") != (err == nil) || (err != nil && (!strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "secret"))) {
			t.Errorf("%s: %v, want %q", s, err, want)
		}
	}
}

// A nil Sharer (sharing off) grants every probe and ignores kicks.
func TestNilSharer(t *testing.T) {
	t.Parallel()
	var s *Sharer
	s.Kick()
	s.Stop()
	adm := breaker.Admission{OK: true, Probe: true}
	if got := s.ClaimProbe("x", new(breaker.Breaker), adm); got != adm {
		t.Fatalf("nil sharer changed the admission: %+v", got)
	}
	if !s.SyncedAt().IsZero() {
		t.Fatal("nil sharer has synced")
	}
}

func ExampleClientName() {
	fmt.Println(ClientName("subscription", "3f2a"))
	// Output: subscription#3f2a
}

// A shared cooldown is taken with any class of this proxy's (an open
// breaker's last class may be one that cools nothing, a request's own
// fault that came back while it cooled), and never with another text.
func TestSharedCooldownClassKnown(t *testing.T) {
	t.Parallel()
	st := newMemStorage()
	until := shareT0.Add(time.Hour)
	st.put(t, "peer.json", StorageEntry{Instance: "peer", WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{
		"a": {State: breaker.Open, Until: until, Class: classify.ContextWindow, DecidedAt: shareT0.Add(-time.Minute)},
		"b": {State: breaker.Open, Until: until, Class: classify.Manual, DecidedAt: shareT0.Add(-time.Minute)},
		"c": {State: breaker.Open, Until: until, Class: "quota, \"d\";state=closed", DecidedAt: shareT0.Add(-time.Minute)}}})
	bs := newFakeBreakers("a", "b", "c")
	s := newStorageSharer(t, st, bs, shareT0)
	s.storage().read(context.Background())
	for name, want := range map[string]breaker.State{"a": breaker.Open, "b": breaker.Open, "c": breaker.Closed} {
		if snap := bs.get(name).Snapshot(shareT0); snap.State != want && !(want == breaker.Closed && snap.State == "") {
			t.Errorf("%s: %+v, want %s", name, snap, want)
		}
	}
}
