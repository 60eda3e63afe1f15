package failover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
)

// ShareConfig turns on sharing breaker state between instances through the
// storage Caddy is configured with (the `storage` global option: the file
// system by default, redis, consul, postgres, ... modules for a cluster).
// Each instance writes its own decisions under Prefix and reads the
// others'. The latest decision per provider wins; a cooldown whose end has
// passed is ignored. Credentials and requests are never stored.
type ShareConfig struct {
	// ReadInterval is how often other instances' state is read and this
	// instance's is written. An instance that opens or closes a breaker
	// writes at once; others adopt it within one interval. Default: 2s.
	ReadInterval caddy.Duration `json:"read_interval,omitempty"`

	// Prefix is the storage key prefix. Default: llm_failover/breakers.
	Prefix string `json:"prefix,omitempty"`

	// Timeout bounds each storage operation, so a slow store delays
	// nothing but the next sync. Default: 5s.
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// instanceID names this process in shared state. It is new at every
// start: a restarted instance reads its own earlier decisions like any
// other instance's.
var instanceID = func() string {
	host, _ := os.Hostname()
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return strings.ReplaceAll(host, "/", "_") + "-" + hex.EncodeToString(b)
}()

// sharedFile is what one instance stores.
type sharedFile struct {
	Instance  string                 `json:"instance"`
	WrittenAt time.Time              `json:"written_at"`
	Breakers  map[string]SharedState `json:"breakers"`
}

// sharer syncs a handler's breakers with storage in the background.
// Requests never wait on it.
type sharer struct {
	h        *Handler
	storage  certmagic.Storage
	key      string // this instance's entry
	prefix   string
	interval time.Duration
	timeout  time.Duration
	logger   *zap.Logger
	kickCh   chan struct{}

	syncedAt  atomic.Int64 // unix nanos of the last successful read
	faultMu   sync.Mutex
	lastFault time.Time
}

func newSharer(ctx caddy.Context, h *Handler, cfg *ShareConfig) *sharer {
	s := &sharer{
		h:        h,
		storage:  ctx.Storage(),
		prefix:   cfg.Prefix,
		interval: time.Duration(cfg.ReadInterval),
		timeout:  time.Duration(cfg.Timeout),
		logger:   h.logger.Named("share"),
		kickCh:   make(chan struct{}, 1),
	}
	if s.prefix == "" {
		s.prefix = "llm_failover/breakers"
	}
	if s.interval <= 0 {
		s.interval = 2 * time.Second
	}
	if s.timeout <= 0 {
		s.timeout = 5 * time.Second
	}
	// one entry per instance and handler (its providers' names), so two
	// handlers of one instance do not overwrite each other
	names := make([]string, 0, len(h.Providers))
	for _, p := range h.Providers {
		names = append(names, p.Name)
	}
	s.key = path.Join(s.prefix, instanceID+"-"+nameHash(strings.Join(names, "\x00"))+".json")
	return s
}

// start reads the stored state once (bounded by the timeout) so a
// restarted instance does not retry a provider that is hours from its
// reset, then syncs in the background until the config is unloaded.
func (s *sharer) start(ctx caddy.Context) {
	s.read(ctx)
	go s.loop(ctx)
}

func (s *sharer) loop(ctx context.Context) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kickCh:
			s.write(ctx)
		case <-t.C:
			s.write(ctx)
			s.read(ctx)
		}
	}
}

// kick asks for a write now: a decision hours long is worth one write.
func (s *sharer) kick() {
	if s == nil {
		return
	}
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

// breakersOf lists the breakers of the handler's providers with their
// storage names: the provider's name, and name + "#" + the client
// fingerprint for per-client breakers.
func (s *sharer) breakersOf(fn func(key string, b *Breaker)) {
	for _, p := range s.h.Providers {
		fn(p.Name, &p.state.shared)
		p.state.eachClient(func(fp string, b *Breaker) { fn(p.Name+"#"+fp, b) })
	}
}

func (s *sharer) write(ctx context.Context) {
	f := sharedFile{Instance: instanceID, WrittenAt: time.Now(), Breakers: map[string]SharedState{}}
	s.breakersOf(func(key string, b *Breaker) {
		if st, ok := b.export(); ok {
			f.Breakers[key] = st
		}
	})
	if len(f.Breakers) == 0 {
		return
	}
	data, err := json.Marshal(f)
	if err != nil {
		return
	}
	opCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.storage.Store(opCtx, s.key, data); err != nil {
		s.fault("writing shared breaker state", err, s.key)
	}
}

// read adopts newer decisions from every other entry under the prefix.
func (s *sharer) read(ctx context.Context) {
	opCtx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	keys, err := s.storage.List(opCtx, s.prefix, false)
	if err != nil {
		if !isNotExist(err) {
			s.fault("listing shared breaker state", err, s.prefix)
		}
		return
	}
	remote := map[string]struct {
		st     SharedState
		origin string
	}{}
	for _, key := range keys {
		// this instance's own entry too: after a restart in the same
		// process it holds what the local state has forgotten
		if !strings.HasSuffix(key, ".json") {
			continue
		}
		data, err := s.storage.Load(opCtx, key)
		if err != nil {
			s.fault("reading a shared breaker entry", err, key)
			continue
		}
		var f sharedFile
		if err := json.Unmarshal(data, &f); err != nil || f.Instance == "" {
			s.fault("a shared breaker entry is corrupt", fmt.Errorf("%v", err), key)
			continue
		}
		for name, st := range f.Breakers {
			if cur, ok := remote[name]; !ok || st.DecidedAt.After(cur.st.DecidedAt) {
				origin := f.Instance
				if origin == instanceID {
					origin = "" // our own decision, from before a reload
				}
				remote[name] = struct {
					st     SharedState
					origin string
				}{st, origin}
			}
		}
	}
	now := timeNow()
	for _, p := range s.h.Providers {
		for name, r := range remote {
			switch {
			case name == p.Name:
				p.state.shared.adopt(now, r.st, r.origin)
			case strings.HasPrefix(name, p.Name+"#") && p.passthrough:
				p.breaker(strings.TrimPrefix(name, p.Name+"#")).adopt(now, r.st, r.origin)
			}
		}
	}
	s.syncedAt.Store(time.Now().UnixNano())
}

// fault logs a storage problem at most once per interval: storage faults
// never fail or slow a request, and must not flood the log either.
func (s *sharer) fault(msg string, err error, key string) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if time.Since(s.lastFault) < s.interval {
		return
	}
	s.lastFault = time.Now()
	s.logger.Warn(msg+"; carrying on with local state", zap.String("key", key), zap.Error(err))
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
