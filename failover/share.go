package failover

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// ShareConfig turns on sharing breaker state (never credentials, never
// requests) between instances, so that one instance's discovery spares
// the others and a restart remembers a reset hours away.
//
// Without Redis, state goes through the storage Caddy is configured with
// (the `storage` global option; the file system by default): each instance
// writes its own decisions there and reads the others' every
// ReadInterval. That suits instances on one machine.
//
// With Redis, a cooldown is a key that expires when the cooldown ends, a
// decision is published to every instance at once, and a half-open
// provider is probed by exactly one instance of the fleet. That suits a
// fleet.
//
// Either way the later cooldown end wins: a short Retry-After seen by one
// instance never shortens a longer cooldown another one shared. A close
// after a successful probe closes the provider everywhere. Faults of the
// store never fail or slow a request: requests use local state.
type ShareConfig struct {
	// Redis is the URL of a Redis server: redis://host:6379/0, or
	// rediss:// for TLS. A password in the URL is refused: use Password.
	// Empty: Caddy's storage is used.
	Redis string `json:"redis,omitempty"`

	// PasswordRaw is the credential source (llm.credentials.*) of the
	// Redis password, asked for at each new connection.
	PasswordRaw json.RawMessage `json:"password,omitempty" caddy:"namespace=llm.credentials inline_key=source"`

	// ReadInterval is how often other instances' state is read from
	// storage and this instance's is written (storage); how often a lost
	// connection to Redis is retried and unsent decisions are resent
	// (Redis). It is also the shortest time between two log lines about a
	// fault. Default: 2s.
	ReadInterval caddy.Duration `json:"read_interval,omitempty"`

	// Prefix is the storage key prefix (default: llm_failover/breakers),
	// or the Redis key and channel prefix (default: llm_failover).
	Prefix string `json:"prefix,omitempty"`

	// Timeout bounds each background storage or Redis operation, and the
	// read at start that lets a restarted instance remember a cooldown.
	// Default: 5s (storage), 1s (Redis).
	Timeout caddy.Duration `json:"timeout,omitempty"`

	// PurgeAfter is how long the entry of an instance that stopped
	// writing is kept in storage once none of its cooldowns is running.
	// Redis keys expire on their own. Default: 24h.
	PurgeAfter caddy.Duration `json:"purge_after,omitempty"`

	// ProbeLease is how long an instance holds the fleet's half-open probe
	// of a provider (Redis): the others skip the provider until the probe's
	// result is published or the lease lapses. Default: 30s.
	ProbeLease caddy.Duration `json:"probe_lease,omitempty"`

	// ProbeWait bounds the one Redis call on the request path: taking the
	// probe lease, once per cooldown end. Past it the instance probes on
	// its own. Default: 10ms.
	ProbeWait caddy.Duration `json:"probe_wait,omitempty"`
}

// Defaults of ShareConfig.
const (
	defaultShareInterval   = 2 * time.Second
	defaultPurgeAfter      = 24 * time.Hour
	defaultProbeLease      = 30 * time.Second
	defaultProbeWait       = 10 * time.Millisecond
	defaultStorageTimeout  = 5 * time.Second
	defaultRedisTimeout    = time.Second
	defaultStoragePrefix   = "llm_failover/breakers"
	defaultRedisPrefix     = "llm_failover"
	keepClosedDecisionsFor = 10 * time.Minute
)

// validate checks the configuration without connecting anywhere.
func (c *ShareConfig) validate() error {
	for name, d := range map[string]caddy.Duration{"read_interval": c.ReadInterval, "timeout": c.Timeout,
		"purge_after": c.PurgeAfter, "probe_lease": c.ProbeLease, "probe_wait": c.ProbeWait} {
		if d < 0 {
			return fmt.Errorf("share: %s must not be negative", name)
		}
	}
	if c.Redis == "" {
		if c.PasswordRaw != nil {
			return fmt.Errorf("share: password is for redis; no redis URL is set")
		}
		return nil
	}
	return validRedisURL(c.Redis)
}

func validRedisURL(s string) error {
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

// instanceID names this instance in shared state: Caddy's instance id,
// kept in Caddy's data directory, so a restarted instance reuses its own
// storage entry instead of leaving one behind at every start.
var instanceID = sync.OnceValue(func() string {
	if id, err := caddy.InstanceID(); err == nil {
		return id.String()
	}
	host, _ := os.Hostname()
	return strings.ReplaceAll(host, "/", "_") + "-" + randomToken()
})

func randomToken() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// shareBackend is where shared decisions are kept: Caddy's storage
// (share_storage.go) or Redis (share_redis.go).
type shareBackend interface {
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
}

// sharer shares a handler's breakers in the background. Requests never
// wait on it, save the bounded probe claim.
type sharer struct {
	h          *Handler
	backend    shareBackend
	interval   time.Duration
	timeout    time.Duration
	purgeAfter time.Duration
	logger     *zap.Logger
	kickCh     chan struct{}
	done       chan struct{} // closed when the backend's run has returned

	syncedAt  atomic.Int64 // unix nanos of the last successful read
	faultMu   sync.Mutex
	lastFault time.Time
	faulty    bool // the last operation failed; guarded by faultMu
}

func newSharer(ctx caddy.Context, h *Handler, cfg *ShareConfig) (*sharer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &sharer{
		h:          h,
		interval:   time.Duration(cfg.ReadInterval),
		timeout:    time.Duration(cfg.Timeout),
		purgeAfter: time.Duration(cfg.PurgeAfter),
		logger:     h.logger.Named("share"),
		kickCh:     make(chan struct{}, 1),
		done:       make(chan struct{}),
	}
	if s.interval <= 0 {
		s.interval = defaultShareInterval
	}
	if s.purgeAfter <= 0 {
		s.purgeAfter = defaultPurgeAfter
	}
	if cfg.Redis != "" {
		if s.timeout <= 0 {
			s.timeout = defaultRedisTimeout
		}
		b, err := newRedisBackend(ctx, s, cfg)
		if err != nil {
			return nil, err
		}
		s.backend = b
		return s, nil
	}
	if s.timeout <= 0 {
		s.timeout = defaultStorageTimeout
	}
	s.backend = newStorageBackend(ctx, s, cfg)
	return s, nil
}

// start reads the shared state once, then syncs in the background until
// the config is unloaded.
func (s *sharer) start(ctx caddy.Context) {
	s.backend.load(ctx)
	go func() {
		defer close(s.done)
		s.backend.run(ctx)
	}()
}

// stop waits, bounded, for the backend's run to return. Caddy cancels the
// config's context before it cleans up modules, so the run is ending; a
// write still in flight would otherwise land after the config is gone.
func (s *sharer) stop() {
	if s == nil {
		return
	}
	select {
	case <-s.done:
	case <-time.After(s.timeout + time.Second):
		s.logger.Warn("shared state: the background loop did not stop in time")
	}
}

// loop is a backend's schedule until ctx ends: write on every kick, tick
// every interval, and resync on every signal of resyncs (nil: never).
func (s *sharer) loop(ctx context.Context, write, tick func(context.Context), resyncs <-chan struct{}, resync func(context.Context)) {
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
// shared names: the provider's name, and name + "#" + the client
// fingerprint for per-client breakers.
func (s *sharer) breakersOf(fn func(name string, b *breaker.Breaker)) {
	now := timeNow()
	for _, p := range s.h.Providers {
		fn(p.Name, &p.state.breakers.shared().Breaker)
		p.state.breakers.eachClient(now, func(fp string, b *providerBreaker) { fn(clientBreakerName(p.Name, fp), &b.Breaker) })
	}
}

// clientBreakerName is the shared name of a per-client breaker.
func clientBreakerName(provider, fingerprint string) string { return provider + "#" + fingerprint }

// decisions lists this instance's decisions worth sharing as of now: a
// cooldown that has not ended, or a close recent enough that others may
// still hold the cooldown it ended. An expired decision is never written.
func (s *sharer) decisions(now time.Time, fn func(name string, b *breaker.Breaker, st breaker.Decision)) {
	s.breakersOf(func(name string, b *breaker.Breaker) {
		st, ok := b.Export()
		if ok && worthSharing(now, st) {
			fn(name, b, st)
		}
	})
}

func worthSharing(now time.Time, st breaker.Decision) bool {
	if st.State == breaker.Open {
		return st.Until.After(now)
	}
	return now.Sub(st.DecidedAt) < keepClosedDecisionsFor
}

// apply adopts another instance's decision for the named breaker, by the
// rule of Breaker.Adopt. origin is the deciding instance's id.
func (s *sharer) apply(now time.Time, name string, st breaker.Decision, origin string) {
	if origin == instanceID() {
		origin = "" // our own decision, from before a restart
	}
	for _, p := range s.h.Providers {
		switch {
		case name == p.Name:
			p.state.breakers.shared().Adopt(now, st, origin)
			return
		case p.passthrough && strings.HasPrefix(name, clientBreakerName(p.Name, "")):
			p.breakerFor(strings.TrimPrefix(name, clientBreakerName(p.Name, ""))).Adopt(now, st, origin)
			return
		}
	}
}

// claimProbe makes a half-open probe the fleet's only one where the
// backend can: when another instance holds the probe, this request skips
// the provider like a cooling one.
func (s *sharer) claimProbe(p *Provider, clientKey string, b *breaker.Breaker, adm breaker.Admission) breaker.Admission {
	if s == nil || !adm.Probe {
		return adm
	}
	c, ok := s.backend.(probeClaimer)
	if !ok {
		return adm
	}
	name := p.Name
	if p.passthrough {
		name = clientBreakerName(p.Name, clientKey)
	}
	if granted, until := c.claimProbe(name); !granted {
		return b.YieldProbe(until)
	}
	return adm
}

// fault logs a store problem at most once per interval: store faults never
// fail or slow a request, and must not flood the log either.
func (s *sharer) fault(msg string, err error, key string) {
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
func (s *sharer) recovered() {
	s.faultMu.Lock()
	defer s.faultMu.Unlock()
	if s.faulty {
		s.faulty = false
		s.logger.Info("shared breaker state reachable again; sharing resumed")
	}
}

// unmarshalShareOption parses the share subdirectives of the Redis
// backend and the purge age:
//
//	redis redis://127.0.0.1:6379/0
//	password env REDIS_PASSWORD
//	purge_after 24h
//	probe_lease 30s
//	probe_wait 10ms
func unmarshalShareOption(d *caddyfile.Dispenser, c *ShareConfig) error {
	switch d.Val() {
	case "redis":
		u, err := parsedArg(d, "", func(s string) (string, error) { return s, validRedisURL(s) })
		if err != nil {
			return err
		}
		c.Redis = u
	case "password":
		if !d.NextArg() {
			return d.Err("share: password needs a credential source: env, file, command, ...")
		}
		raw, err := unmarshalCredentialSource(d)
		if err != nil {
			return err
		}
		c.PasswordRaw = raw
	default:
		opt := d.Val()
		dur, err := parseDurationArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "purge_after":
			c.PurgeAfter = dur
		case "probe_lease":
			c.ProbeLease = dur
		case "probe_wait":
			c.ProbeWait = dur
		}
	}
	return nil
}
