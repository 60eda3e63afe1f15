package share

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

// Storage is the part of a key-value storage the storage backend uses;
// Caddy's configured storage (certmagic.Storage) is one.
type Storage interface {
	Store(ctx context.Context, key string, value []byte) error
	Load(ctx context.Context, key string) ([]byte, error)
	Delete(ctx context.Context, key string) error
	List(ctx context.Context, path string, recursive bool) ([]string, error)
}

// StorageSizer is a Storage that tells an entry's size without loading
// it; the handler's view of Caddy's storage is one (certmagic's Stat).
// An entry past maxStorageEntryBytes is then never loaded.
type StorageSizer interface {
	Size(ctx context.Context, key string) (int64, error)
}

// Bounds of a storage read: another writer may put anything under the
// prefix.
const (
	// maxStorageReads is how many entries one read loads: this handler's
	// kind first (its providers' hash ends their names), then the others
	// in turn, from where the last read stopped.
	maxStorageReads = 64
	// maxStorageEntryBytes bounds one entry: MaxSharedClients decisions
	// and the provider-wide ones fit many times over.
	maxStorageEntryBytes = 1 << 20
	// maxStorageReadBytes bounds what one read parses, about 0.1 s of
	// CPU: an honest entry with MaxSharedClients decisions is about
	// 130 KiB, and entries past the budget are read next time.
	maxStorageReadBytes = 4 << 20
)

// StorageEntry is what one instance stores in a Storage: its decisions by
// breaker name.
type StorageEntry struct {
	Instance  string                      `json:"instance"`
	WrittenAt time.Time                   `json:"written_at"`
	Breakers  map[string]breaker.Decision `json:"breakers"`
}

// storageBackend shares decisions through a Storage: one entry per
// instance and handler, rewritten every interval and at once after a
// decision; the others' entries are read every interval.
type storageBackend struct {
	s       *Sharer
	storage Storage
	prefix  string
	key     string // this instance's entry
	suffix  string // ends the entries of handlers with the same providers

	wroteAt    time.Time // loop goroutine only
	wroteEmpty bool
	// next is where the next read goes on, among the entries of this
	// handler's kind and among the others; loop goroutine only
	next [2]int
}

var _ backend = (*storageBackend)(nil)

func newStorageBackend(s *Sharer, cfg Config) *storageBackend {
	b := &storageBackend{s: s, storage: cfg.Storage, prefix: cfg.Prefix}
	if b.prefix == "" {
		b.prefix = DefaultStoragePrefix
	}
	// one entry per instance and handler, so two handlers of one instance
	// do not overwrite each other
	b.suffix = "-" + cfg.Key + ".json"
	b.key = path.Join(b.prefix, s.instance+b.suffix)
	return b
}

func (b *storageBackend) load(ctx context.Context) { b.read(ctx) }

func (b *storageBackend) run(ctx context.Context) {
	b.s.loop(ctx, b.write, b.tick, nil, nil)
}

// tick writes this instance's entry, which also keeps it from being
// purged, and reads the others'.
func (b *storageBackend) tick(ctx context.Context) {
	b.write(ctx)
	b.read(ctx)
}

// write stores this instance's live decisions. An instance with nothing
// to share writes its empty entry once, then only now and then, so that
// its entry is not purged while it runs.
func (b *storageBackend) write(ctx context.Context) {
	now := b.s.now()
	f := StorageEntry{Instance: b.s.instance, WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{}}
	b.s.decisions(now, func(name string, d breaker.Decision) { f.Breakers[name] = d })
	if len(f.Breakers) == 0 && b.wroteEmpty && time.Since(b.wroteAt) < b.s.purgeAfter/4 {
		return
	}
	data, err := json.Marshal(f)
	if err != nil {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, b.s.timeout)
	defer cancel()
	if err := b.storage.Store(opCtx, b.key, data); err != nil {
		b.s.fault("writing shared breaker state", err, b.key)
		return
	}
	b.wroteAt, b.wroteEmpty = time.Now(), len(f.Breakers) == 0
}

// sharedDecision is one entry's decision for one breaker.
type sharedDecision struct {
	name   string
	d      breaker.Decision
	origin string
}

// read adopts the decisions of the entries under the prefix, oldest
// first, so that a close wins over the cooldowns decided before it and
// among cooldowns the later end wins. It loads at most maxStorageReads
// entries, each at most maxStorageEntryBytes, maxStorageReadBytes in all
// (where the storage tells sizes; else one entry more): those of handlers with the
// same providers first, each group in turn from where the last read
// stopped, so the instances sharing this handler's providers are read
// every interval however much else the prefix holds. Entries of instances
// that stopped writing longer than purge_after ago, holding no running
// cooldown, are deleted.
func (b *storageBackend) read(ctx context.Context) {
	opCtx, cancel := context.WithTimeout(ctx, b.s.timeout)
	defer cancel()
	keys, err := b.storage.List(opCtx, b.prefix, false)
	if err != nil {
		if !isNotExist(err) {
			b.s.fault("listing shared breaker state", err, b.prefix)
		}
		return
	}
	var groups [2][]string // this handler's kind, the others
	for _, key := range keys {
		// this instance's own entry too: after a restart it holds what
		// the local state has forgotten
		switch {
		case strings.HasSuffix(key, b.suffix):
			groups[0] = append(groups[0], key)
		case strings.HasSuffix(key, ".json"):
			groups[1] = append(groups[1], key)
		}
	}
	budget, bytesLeft := maxStorageReads, maxStorageReadBytes
	now := b.s.now()
	var all []sharedDecision
	for g, group := range groups {
		sort.Strings(group)
		n := 0
		for n < len(group) && budget > 0 && bytesLeft > 0 {
			key := group[(b.next[g]+n)%len(group)]
			var size int
			var fits bool
			all, size, fits = b.readEntry(opCtx, now, key, all, bytesLeft)
			if !fits {
				break // the first entry of the next read
			}
			n, budget, bytesLeft = n+1, budget-1, bytesLeft-size
		}
		if len(group) > 0 {
			b.next[g] = (b.next[g] + n) % len(group)
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].d.DecidedAt.Before(all[j].d.DecidedAt) })
	for _, d := range all {
		b.s.apply(now, d.name, d.d, d.origin)
	}
	b.s.synced()
}

// readEntry appends the decisions of one entry to all, or deletes the
// entry when it is stale, and returns the bytes it parsed. An entry the
// storage says is larger than bytesLeft is not loaded (fits is false):
// it waits for the next read.
func (b *storageBackend) readEntry(ctx context.Context, now time.Time, key string, all []sharedDecision, bytesLeft int) (_ []sharedDecision, size int, fits bool) {
	if sz, ok := b.storage.(StorageSizer); ok {
		if n, err := sz.Size(ctx, key); err == nil && n > maxStorageEntryBytes {
			b.s.fault("a shared breaker entry is too large; skipped", fmt.Errorf("%d bytes", n), key)
			return all, 0, true
		} else if err == nil && n > int64(bytesLeft) {
			return all, 0, false
		}
	}
	data, err := b.storage.Load(ctx, key)
	if err != nil {
		b.s.fault("reading a shared breaker entry", err, key)
		return all, 0, true
	}
	if len(data) > maxStorageEntryBytes {
		b.s.fault("a shared breaker entry is too large; skipped", fmt.Errorf("%d bytes", len(data)), key)
		return all, 0, true
	}
	var f StorageEntry
	if err := json.Unmarshal(data, &f); err != nil || f.Instance == "" {
		b.s.fault("a shared breaker entry is corrupt", fmt.Errorf("%v", err), key)
		return all, len(data), true
	}
	if b.stale(now, &f) {
		if err := b.storage.Delete(ctx, key); err != nil && !isNotExist(err) {
			b.s.fault("purging a stale shared breaker entry", err, key)
		}
		return all, len(data), true
	}
	clients := 0
	for name, d := range f.Breakers {
		if isClientName(name) {
			if clients++; clients > MaxSharedClients {
				continue
			}
		}
		all = append(all, sharedDecision{name, d, f.Instance})
	}
	return all, len(data), true
}

// stale reports whether an entry's instance stopped writing longer than
// purge_after ago and none of its cooldowns is still running.
func (b *storageBackend) stale(now time.Time, f *StorageEntry) bool {
	if f.WrittenAt.IsZero() || time.Since(f.WrittenAt) < b.s.purgeAfter {
		return false
	}
	for _, d := range f.Breakers {
		if d.State == breaker.Open && d.Until.After(now) {
			return false
		}
	}
	return true
}

func isNotExist(err error) bool {
	return err != nil && (errors.Is(err, fs.ErrNotExist) || strings.Contains(err.Error(), "not exist") ||
		strings.Contains(err.Error(), "no such file"))
}
