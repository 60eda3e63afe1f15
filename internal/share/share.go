// Package share shares breaker decisions (never credentials, never
// requests) between instances of the proxy, so that one instance's
// discovery spares the others and a restart remembers a reset hours away.
//
// Two backends keep the decisions: a storage (one entry per instance,
// polled; Caddy's configured storage in practice) and Redis (a cooldown is
// a key that expires with it, decisions are published, a half-open probe
// is a lease). Either way the later cooldown end wins: a short Retry-After
// seen by one instance never shortens a longer cooldown another one shared,
// and a close after a successful probe closes the provider everywhere.
// Faults of the store never fail or slow a request: requests use local
// state.
//
// Only what the fleet needs is shared, and what is read back is input:
// every provider-wide decision, but of a passthrough provider's per-client
// breakers only a cooldown for auth or quota, for at most MaxSharedClients
// clients; a read is bounded in keys, entries and bytes, whatever else
// the store holds.
//
// The package knows breakers only through Breakers, so it imports nothing
// of the handler.
package share

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/url"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Breakers is what a Sharer shares: the breakers of one handler, each
// under its shared name.
type Breakers interface {
	// Each calls fn for every breaker that is shared whatever befalls it:
	// each provider's own and its model-family scopes, a fixed few. fn
	// may call Named: Each must not hold a lock Named takes while fn runs.
	Each(fn func(name string, b *breaker.Breaker))
	// EachClient calls fn for every per-client breaker of a passthrough
	// provider, with its shared name (ClientName), as Each does.
	EachClient(fn func(name string, b *breaker.Breaker))
	// Named returns the breaker of a shared name; nil when no provider
	// here has that name. A client's breaker that does not exist is made
	// only when create is set.
	Named(name string, create bool) *breaker.Breaker
}

// ClientName is the shared name of a provider's breaker for one client
// credential (its fingerprint, never the credential).
func ClientName(provider, fingerprint string) string { return provider + "#" + fingerprint }

// isClientName reports whether a shared name is a client's breaker: a
// provider name never holds '#'.
func isClientName(name string) bool { return strings.IndexByte(name, '#') >= 0 }

// clientClassShared reports whether a client's cooldown of this class is
// shared: a refused credential or a spent quota is the client's own and
// lasts; every other class says something of the provider, which its
// shared breaker and each instance learn on their own.
func clientClassShared(c classify.Class) bool { return c == classify.Auth || c == classify.Quota }

// FamilyName is the shared name of a provider's cooldown scoped to a model
// family (its per-model subscription window): "subscription@sonnet".
func FamilyName(provider, family string) string { return provider + "@" + family }

// Config says where and how decisions are shared.
type Config struct {
	// Redis is the URL of a Redis server; empty: Storage is used.
	Redis string
	// Password returns the Redis password, asked at each new connection;
	// nil: none.
	Password func(ctx context.Context) (string, error)
	// Storage keeps the decisions when Redis is empty.
	Storage Storage
	// Key names this handler's entry in Storage among the instance's
	// (a hash of its providers' names).
	Key string

	// Instance names this instance in shared state; it survives restarts.
	Instance string
	// Now is the clock decisions are compared on.
	Now func() time.Time
	// Logger receives fault lines, at most one per Interval.
	Logger *zap.Logger

	// MaxReset caps the cooldown of an adopted decision at now+MaxReset,
	// as the handler caps a provider's own reset; zero: classify's default.
	MaxReset time.Duration

	// Interval, Prefix, Timeout, PurgeAfter, ProbeLease and ProbeWait are
	// described on the handler's share config; zero takes the default.
	Interval, Timeout, PurgeAfter, ProbeLease, ProbeWait time.Duration
	Prefix                                               string
}

// Defaults of Config.
const (
	DefaultInterval       = 2 * time.Second
	DefaultPurgeAfter     = 24 * time.Hour
	DefaultProbeLease     = 30 * time.Second
	DefaultProbeWait      = 10 * time.Millisecond
	DefaultStorageTimeout = 5 * time.Second
	DefaultRedisTimeout   = time.Second
	DefaultStoragePrefix  = "llm_failover/breakers"
	DefaultRedisPrefix    = "llm_failover"
	// keepClosedDecisionsFor is how long a close is shared, so that an
	// older cooldown written late cannot undo it.
	keepClosedDecisionsFor = 10 * time.Minute
	// MaxClockSkew is how far in the future a shared decision may be
	// dated: a later one (a clock far ahead, or a forged entry) would win
	// over every decision made here, an admin reset included, and is
	// ignored.
	MaxClockSkew = 5 * time.Second
	// MaxSharedClients caps the per-client decisions a handler shares,
	// and those Redis keeps for the fleet under one prefix: a client
	// with a random token must not grow the shared state.
	MaxSharedClients = 1000
	// maxNameLen bounds a shared name read from the store: a provider
	// name (64) and a fingerprint, with room to spare.
	maxNameLen = 200
	// maxDecisionBytes bounds one decision read from Redis (about 200
	// bytes as written).
	maxDecisionBytes = 1024
	// maxInstanceLen bounds the instance a shared decision names: Caddy's
	// instance id (36), or a host name (253) and a token. Every breaker
	// that adopts a decision keeps the name, so one entry of 1 MiB must
	// not name a huge one a thousand times over.
	maxInstanceLen = 300
)

// ValidRedisURL checks a Redis URL: redis:// or rediss://, a host, and no
// password (a password in a URL ends up in logs and configs).
func ValidRedisURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("share: redis URL: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("share: redis URL %q: scheme must be redis or rediss", u.Redacted())
	}
	if u.Host == "" {
		return fmt.Errorf("share: redis URL %q: no host", u.Redacted())
	}
	if _, ok := u.User.Password(); ok {
		return fmt.Errorf("share: redis URL %q carries a password; give it with `password <credential source>` instead", u.Redacted())
	}
	return nil
}

// backend is where shared decisions are kept: a Storage (storage.go) or
// Redis (redis.go).
type backend interface {
	// load reads the shared decisions once, bounded by the timeout, so a
	// restarted instance does not retry a provider hours from its reset.
	load(ctx context.Context)
	// run writes this instance's decisions when kicked and applies the
	// others', until ctx ends.
	run(ctx context.Context)
}

// probeClaimer is a backend that grants a half-open provider's probe to
// one instance of the fleet.
type probeClaimer interface {
	// claimProbe takes the probe of the named breaker, bounded to a few
	// milliseconds. When another instance holds it, it returns false and
	// when the lease lapses.
	claimProbe(name string) (granted bool, until time.Time)
	// releaseProbe gives up this instance's lease of the named breaker's
	// probe, bounded by the store timeout.
	releaseProbe(name string)
}

// Sharer shares one handler's breakers in the background. Requests never
// wait on it, save the bounded probe claim.
type Sharer struct {
	breakers   Breakers
	backend    backend
	instance   string
	now        func() time.Time
	interval   time.Duration
	timeout    time.Duration
	purgeAfter time.Duration
	maxReset   time.Duration
	logger     *zap.Logger
	kickCh     chan struct{}
	done       chan struct{} // closed when the backend's run has returned

	syncedAt  atomic.Int64 // unix nanos of the last successful read
	faultMu   sync.Mutex
	lastFault time.Time
	faulty    bool // the last operation failed; guarded by faultMu
	// saidFuture: a decision dated in the future was logged once
	saidFuture atomic.Bool

	clientsMu sync.Mutex
	// sharedClients are the per-client breakers whose decisions are
	// shared now, at most MaxSharedClients; guarded by clientsMu
	sharedClients map[string]struct{}
	// adoptedClients are the per-client breakers shared state made here,
	// with when their cooldown ends, at most MaxSharedClients; guarded
	// by clientsMu
	adoptedClients map[string]time.Time
	prunedAt       time.Time // when ended adoptedClients were last dropped
}

// New makes a Sharer of breakers; Start starts it.
func New(cfg Config, breakers Breakers) (*Sharer, error) {
	s := &Sharer{
		breakers:   breakers,
		instance:   cfg.Instance,
		now:        cfg.Now,
		interval:   cfg.Interval,
		timeout:    cfg.Timeout,
		purgeAfter: cfg.PurgeAfter,
		maxReset:   cfg.MaxReset,
		logger:     cfg.Logger,
		kickCh:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = zap.NewNop()
	}
	if s.instance == "" {
		s.instance = RandomToken()
	}
	if s.interval <= 0 {
		s.interval = DefaultInterval
	}
	if s.purgeAfter <= 0 {
		s.purgeAfter = DefaultPurgeAfter
	}
	if s.maxReset <= 0 {
		s.maxReset = classify.DefaultMaxReset
	}
	if cfg.Redis != "" {
		if err := ValidRedisURL(cfg.Redis); err != nil {
			return nil, err
		}
		if s.timeout <= 0 {
			s.timeout = DefaultRedisTimeout
		}
		b, err := newRedisBackend(s, cfg)
		if err != nil {
			return nil, err
		}
		s.backend = b
		return s, nil
	}
	if cfg.Storage == nil {
		return nil, fmt.Errorf("share: no storage and no redis URL")
	}
	if s.timeout <= 0 {
		s.timeout = DefaultStorageTimeout
	}
	s.backend = newStorageBackend(s, cfg)
	return s, nil
}

// RandomToken is 16 random hex digits.
func RandomToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Start reads the shared state once, then syncs in the background until
// ctx ends.
func (s *Sharer) Start(ctx context.Context) {
	s.backend.load(ctx)
	go func() {
		defer close(s.done)
		s.backend.run(ctx)
	}()
}

// Stop waits, bounded, for the background loop to return once the context
// given to Start has ended: a write still in flight would otherwise land
// after its config is gone.
func (s *Sharer) Stop() {
	if s == nil {
		return
	}
	select {
	case <-s.done:
	case <-time.After(s.timeout + time.Second):
		s.logger.Warn("shared state: the background loop did not stop in time")
	}
}

// SyncedAt is when the shared state was last read whole; zero before the
// first read.
func (s *Sharer) SyncedAt() time.Time {
	if s == nil {
		return time.Time{}
	}
	if ns := s.syncedAt.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

func (s *Sharer) synced() { s.syncedAt.Store(time.Now().UnixNano()) }

// loop is a backend's schedule until ctx ends: write on every kick, tick
// every interval, and resync on every signal of resyncs (nil: never).
func (s *Sharer) loop(ctx context.Context, write, tick func(context.Context), resyncs <-chan struct{}, resync func(context.Context)) {
	t := time.NewTicker(s.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kickCh:
			write(ctx)
		case <-resyncs:
			resync(ctx)
		case <-t.C:
			tick(ctx)
		}
	}
}

// Kick asks for a write now: a decision hours long is worth one write.
func (s *Sharer) Kick() {
	if s == nil {
		return
	}
	select {
	case s.kickCh <- struct{}{}:
	default:
	}
}

// decisions lists this instance's decisions worth sharing as of now: a
// cooldown that has not ended, or a close recent enough that others may
// still hold the cooldown it ended. An expired decision is never written.
// Every provider-wide decision is listed; per-client ones as clientDecisions
// chooses them.
func (s *Sharer) decisions(now time.Time, fn func(name string, d breaker.Decision)) {
	s.breakers.Each(func(name string, b *breaker.Breaker) {
		d, ok := b.Export()
		if ok && worthSharing(now, d) {
			fn(name, d)
		}
	})
	for _, c := range s.clientDecisions(now) {
		fn(c.name, c.d)
	}
}

// clientDecision is a per-client decision that may be shared.
type clientDecision struct {
	name   string
	d      breaker.Decision
	served bool // the client's credential was served once: a real client
}

// clientDecisions chooses the per-client decisions to share: only those
// of a cooldown for auth or quota (or the close that ended one), and at
// most MaxSharedClients. A client's place is kept while its decision is
// worth sharing, so a flood of new clients changes nothing once the cap
// is full; a client that was served once takes the place of one that
// never was.
func (s *Sharer) clientDecisions(now time.Time) []clientDecision {
	var all []clientDecision
	s.breakers.EachClient(func(name string, b *breaker.Breaker) {
		d, ok := b.Export()
		if !ok || !worthSharing(now, d) {
			return
		}
		snap := b.Snapshot(now)
		class := d.Class
		if d.State != breaker.Open {
			class = snap.LastClass // the cooldown this close ended
		}
		if clientClassShared(class) {
			all = append(all, clientDecision{name: name, d: d, served: snap.Successes > 0})
		}
	})
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	// kept places first, then the served, then the rest; among equals
	// the one whose cooldown ends last
	sort.SliceStable(all, func(i, j int) bool {
		_, ki := s.sharedClients[all[i].name]
		_, kj := s.sharedClients[all[j].name]
		if ki != kj {
			return ki
		}
		if all[i].served != all[j].served {
			return all[i].served
		}
		return all[i].d.Until.After(all[j].d.Until)
	})
	if len(all) > MaxSharedClients {
		// a served client takes the last kept place of one never served
		chosen := all[:MaxSharedClients]
		for _, c := range all[MaxSharedClients:] {
			if !c.served {
				break
			}
			for i := len(chosen) - 1; i >= 0; i-- {
				if !chosen[i].served {
					chosen[i] = c
					break
				}
			}
		}
		all = chosen
	}
	s.sharedClients = make(map[string]struct{}, len(all))
	for _, c := range all {
		s.sharedClients[c.name] = struct{}{}
	}
	return all
}

// knownClass reports whether a cooldown's class is one of this proxy's:
// a breaker's last class, one set by hand, or none.
func knownClass(c classify.Class) bool {
	if c == classify.None || c == classify.Manual {
		return true
	}
	_, ok := classify.Parse(string(c))
	return ok
}

// future reports whether a decision is dated past now+MaxClockSkew.
func future(now time.Time, d breaker.Decision) bool {
	return d.DecidedAt.After(now.Add(MaxClockSkew))
}

func worthSharing(now time.Time, d breaker.Decision) bool {
	if d.State == breaker.Open {
		return d.Until.After(now)
	}
	return now.Sub(d.DecidedAt) < keepClosedDecisionsFor
}

// apply adopts another instance's decision for the named breaker, by the
// rule of Breaker.Adopt. origin is the deciding instance's id. Shared
// state is input like any other: a decision dated more than MaxClockSkew
// ahead is ignored (logged once), as is one whose name or instance is
// longer than any written or a cooldown of a class this proxy does not
// know (it would be shown in every answer's X-LLM-Providers), and a
// cooldown ends by now+max_reset at the latest.
func (s *Sharer) apply(now time.Time, name string, d breaker.Decision, origin string) {
	if origin == s.instance {
		origin = "" // our own decision, from before a restart
	}
	if len(name) > maxNameLen || len(origin) > maxInstanceLen || (d.State == breaker.Open && !knownClass(d.Class)) {
		return
	}
	if future(now, d) {
		if !s.saidFuture.Swap(true) {
			s.logger.Warn("ignoring shared breaker decisions dated in the future; is an instance's clock ahead?",
				zap.String("breaker", name), zap.String("instance", origin), zap.Time("decided_at", d.DecidedAt))
		}
		return
	}
	if d.State == breaker.Open && d.Until.After(now.Add(s.maxReset)) {
		d.Until = now.Add(s.maxReset)
	}
	// a client's breaker is made only for a cooldown this instance would
	// have shared itself: a close, or any other class, for a client not
	// seen here changes nothing and costs a breaker
	create := d.State == breaker.Open && clientClassShared(d.Class)
	if isClientName(name) && d.State == breaker.Open && !create {
		return
	}
	if create && s.breakers.Named(name, false) == nil && !s.mayMakeClient(now, name, d.Until) {
		return
	}
	if b := s.breakers.Named(name, create); b != nil {
		b.Adopt(now, d, origin)
	}
}

// mayMakeClient reports whether shared state may make a breaker for a
// client not known here, and counts it: at most MaxSharedClients of
// those are running at once, as many as an instance shares, so that
// whoever can publish or store decisions cannot push this instance's own
// clients out of their breakers. One whose cooldown ended leaves room.
func (s *Sharer) mayMakeClient(now time.Time, name string, until time.Time) bool {
	s.clientsMu.Lock()
	defer s.clientsMu.Unlock()
	if s.adoptedClients == nil {
		s.adoptedClients = make(map[string]time.Time)
	}
	if _, ok := s.adoptedClients[name]; !ok && len(s.adoptedClients) >= MaxSharedClients {
		if now.Sub(s.prunedAt) < time.Second {
			return false // a flood: pruned at most once a second
		}
		s.prunedAt = now
		for n, u := range s.adoptedClients {
			if !u.After(now) {
				delete(s.adoptedClients, n)
			}
		}
		if len(s.adoptedClients) >= MaxSharedClients {
			return false
		}
	}
	s.adoptedClients[name] = until
	return true
}

// ClaimProbe makes a half-open probe the fleet's only one where the
// backend can: when another instance holds the probe of the named
// breaker, b yields it and the request skips the provider like a cooling
// one. A nil Sharer grants every probe.
func (s *Sharer) ClaimProbe(name string, b *breaker.Breaker, adm breaker.Admission) breaker.Admission {
	if s == nil || !adm.Probe {
		return adm
	}
	c, ok := s.backend.(probeClaimer)
	if !ok || !s.fleetKnows(name, b) {
		return adm
	}
	if granted, until := c.claimProbe(name); !granted {
		return b.YieldProbe(until)
	}
	return adm
}

// fleetKnows reports whether the fleet may be waiting on the named
// breaker's probe: a provider-wide breaker, or a client's whose cooldown
// was shared (by this instance, or adopted from another). A client no one
// shared anything of probes without a lease, and makes no key.
func (s *Sharer) fleetKnows(name string, b *breaker.Breaker) bool {
	if !isClientName(name) {
		return true
	}
	s.clientsMu.Lock()
	_, ok := s.sharedClients[name]
	s.clientsMu.Unlock()
	if ok {
		return true
	}
	origin, _ := b.Provenance()
	return origin != ""
}

// ReleaseProbe gives up the fleet's probe of the named breaker, held by
// this instance, when the probing attempt ended without a verdict (its
// client went away): the other instances need not wait for the lease to
// lapse. It returns at once; the store is told in the background.
func (s *Sharer) ReleaseProbe(name string) {
	if s == nil {
		return
	}
	if c, ok := s.backend.(probeClaimer); ok {
		go c.releaseProbe(name)
	}
}

// fault logs a store problem at most once per interval: store faults never
// fail or slow a request, and must not flood the log either.
func (s *Sharer) fault(msg string, err error, key string) {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	s.faulty = true
	if time.Since(s.lastFault) < s.interval {
		return
	}
	s.lastFault = time.Now()
	s.logger.Warn(msg+"; carrying on with local state", zap.String("key", key), zap.Error(err))
}

// recovered logs once that the store answers again after a fault.
func (s *Sharer) recovered() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.faulty {
		s.faulty = false
		s.logger.Info("shared breaker state reachable again; sharing resumed")
	}
}
