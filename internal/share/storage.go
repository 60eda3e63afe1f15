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

	wroteAt    time.Time // loop goroutine only
	wroteEmpty bool
}

var _ backend = (*storageBackend)(nil)

func newStorageBackend(s *Sharer, cfg Config) *storageBackend {
	b := &storageBackend{s: s, storage: cfg.Storage, prefix: cfg.Prefix}
	if b.prefix == "" {
		b.prefix = DefaultStoragePrefix
	}
	// one entry per instance and handler, so two handlers of one instance
	// do not overwrite each other
	b.key = path.Join(b.prefix, s.instance+"-"+cfg.Key+".json")
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

// read adopts the decisions of every entry under the prefix, oldest
// first, so that a close wins over the cooldowns decided before it and
// among cooldowns the later end wins. Entries of instances that stopped
// writing longer than purge_after ago, holding no running cooldown, are
// deleted.
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
	now := b.s.now()
	var all []sharedDecision
	for _, key := range keys {
		// this instance's own entry too: after a restart it holds what
		// the local state has forgotten
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := b.storage.Load(opCtx, key)
		if err != nil {
			b.s.fault("reading a shared breaker entry", err, key)
			continue
		}
		var f StorageEntry
		if err := json.Unmarshal(data, &f); err != nil || f.Instance == "" {
			b.s.fault("a shared breaker entry is corrupt", fmt.Errorf("%v", err), key)
			continue
		}
		if b.stale(now, &f) {
			if err := b.storage.Delete(opCtx, key); err != nil && !isNotExist(err) {
				b.s.fault("purging a stale shared breaker entry", err, key)
			}
			continue
		}
		for name, d := range f.Breakers {
			all = append(all, sharedDecision{name, d, f.Instance})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].d.DecidedAt.Before(all[j].d.DecidedAt) })
	for _, d := range all {
		b.s.apply(now, d.name, d.d, d.origin)
	}
	b.s.synced()
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
