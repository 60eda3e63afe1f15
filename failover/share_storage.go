package failover

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
)

// sharedFile is what one instance stores.
type sharedFile struct {
	Instance  string                      `json:"instance"`
	WrittenAt time.Time                   `json:"written_at"`
	Breakers  map[string]breaker.Decision `json:"breakers"`
}

// storageBackend shares decisions through Caddy's storage: one entry per
// instance and handler, rewritten every interval and at once after a
// decision; the others' entries are read every interval.
type storageBackend struct {
	s       *sharer
	storage certmagic.Storage
	prefix  string
	key     string // this instance's entry

	wroteAt    time.Time // loop goroutine only
	wroteEmpty bool
}

var _ shareBackend = (*storageBackend)(nil)

func newStorageBackend(ctx caddy.Context, s *sharer, cfg *ShareConfig) *storageBackend {
	b := &storageBackend{s: s, storage: ctx.Storage(), prefix: cfg.Prefix}
	if b.prefix == "" {
		b.prefix = defaultStoragePrefix
	}
	// one entry per instance and handler (its providers' names), so two
	// handlers of one instance do not overwrite each other
	names := make([]string, 0, len(s.h.Providers))
	for _, p := range s.h.Providers {
		names = append(names, p.Name)
	}
	b.key = path.Join(b.prefix, instanceID()+"-"+nameHash(strings.Join(names, "\x00"))+".json")
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
	now := timeNow()
	f := sharedFile{Instance: instanceID(), WrittenAt: time.Now(), Breakers: map[string]breaker.Decision{}}
	b.s.decisions(now, func(name string, _ *breaker.Breaker, st breaker.Decision) { f.Breakers[name] = st })
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
	st     breaker.Decision
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
	now := timeNow()
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
		var f sharedFile
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
		for name, st := range f.Breakers {
			all = append(all, sharedDecision{name, st, f.Instance})
		}
	}
	sort.SliceStable(all, func(i, j int) bool { return all[i].st.DecidedAt.Before(all[j].st.DecidedAt) })
	for _, d := range all {
		b.s.apply(now, d.name, d.st, d.origin)
	}
	b.s.syncedAt.Store(time.Now().UnixNano())
}

// stale reports whether an entry's instance stopped writing longer than
// purge_after ago and none of its cooldowns is still running.
func (b *storageBackend) stale(now time.Time, f *sharedFile) bool {
	if f.WrittenAt.IsZero() || time.Since(f.WrittenAt) < b.s.purgeAfter {
		return false
	}
	for _, st := range f.Breakers {
		if st.State == breaker.Open && st.Until.After(now) {
			return false
		}
	}
	return true
}

func isNotExist(err error) bool {
	return err != nil && (os.IsNotExist(err) || strings.Contains(err.Error(), "not exist") ||
		strings.Contains(err.Error(), "no such file"))
}

// nameHash is a short stable hash of a handler's provider names.
func nameHash(s string) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(s))
	return hex.EncodeToString(h.Sum(nil))
}
