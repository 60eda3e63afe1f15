package failover

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/certmagic"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
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
//
// Of a passthrough provider's per-client breakers, only a client's
// cooldown for auth or quota is shared (and the close that ends it), for
// at most 1,000 clients: a client with a random token does not grow the
// shared state.
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

	// FailClosed refuses the model calls of limited clients (and of a
	// handler with its own limits) with 503 while Redis cannot be reached,
	// instead of counting them on this instance alone (the default, which
	// logs once). Needs Redis.
	FailClosed bool `json:"fail_closed,omitempty"`
}

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
		if c.FailClosed {
			return fmt.Errorf("share: fail_closed is for redis (with storage sharing, limits are counted per instance); set redis or remove fail_closed")
		}
		return nil
	}
	return share.ValidRedisURL(c.Redis)
}

// instanceID names this instance in shared state: Caddy's instance id,
// kept in Caddy's data directory, so a restarted instance reuses its own
// storage entry instead of leaving one behind at every start.
var instanceID = sync.OnceValue(func() string {
	if id, err := caddy.InstanceID(); err == nil {
		return id.String()
	}
	host, _ := os.Hostname()
	return strings.ReplaceAll(host, "/", "_") + "-" + share.RandomToken()
})

// newSharer sets up sharing of the handler's breakers (internal/share).
func newSharer(ctx caddy.Context, h *Handler, cfg *ShareConfig) (*share.Sharer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sc := share.Config{
		Redis:      cfg.Redis,
		Key:        h.shareKey(),
		Instance:   instanceID(),
		Now:        timeNow,
		Logger:     h.logger.Named("share"),
		Interval:   time.Duration(cfg.ReadInterval),
		Timeout:    time.Duration(cfg.Timeout),
		PurgeAfter: time.Duration(cfg.PurgeAfter),
		ProbeLease: time.Duration(cfg.ProbeLease),
		ProbeWait:  time.Duration(cfg.ProbeWait),
		MaxReset:   time.Duration(h.MaxReset),
		Prefix:     cfg.Prefix,
	}
	if st := ctx.Storage(); st != nil {
		sc.Storage = sizedStorage{st}
	}
	if cfg.PasswordRaw != nil {
		src, err := loadCredentialSource(ctx, cfg, "PasswordRaw", "share", "loading the redis password source")
		if err != nil {
			return nil, err
		}
		sc.Password = func(ctx context.Context) (string, error) {
			c, err := src.Credential(ctx)
			return c.Secret, err
		}
	}
	h.shareCfg = sc
	return share.New(sc, sharedBreakers{h})
}

// shareKey names the handler's storage entry among the instance's: a
// short stable hash of its providers' names, so two handlers of one
// instance do not overwrite each other.
func (h *Handler) shareKey() string {
	names := make([]string, 0, len(h.Providers))
	for _, p := range h.Providers {
		names = append(names, p.Name)
	}
	f := fnv.New32a()
	_, _ = f.Write([]byte(strings.Join(names, "\x00")))
	return hex.EncodeToString(f.Sum(nil))
}

// sharedBreakers is the handler's breakers as the sharer sees them: each
// provider's shared breaker under its name, its model-family scopes under
// share.FamilyName (a fixed few), and a passthrough provider's per-client
// breakers under share.ClientName.
type sharedBreakers struct{ h *Handler }

var _ share.Breakers = sharedBreakers{}

func (v sharedBreakers) Each(fn func(name string, b *breaker.Breaker)) {
	for _, p := range v.h.Providers {
		fn(p.Name, &p.state.breakers.shared().Breaker)
		if !p.passthrough {
			p.state.breakers.eachFamily(func(f string, b *providerBreaker) { fn(share.FamilyName(p.Name, f), &b.Breaker) })
		}
	}
}

func (v sharedBreakers) EachClient(fn func(name string, b *breaker.Breaker)) {
	now := timeNow()
	for _, p := range v.h.Providers {
		p.state.breakers.eachClient(now, func(fp string, b *providerBreaker) { fn(share.ClientName(p.Name, fp), &b.Breaker) })
	}
}

func (v sharedBreakers) Named(name string, create bool) *breaker.Breaker {
	for _, p := range v.h.Providers {
		switch {
		case name == p.Name:
			return &p.state.breakers.shared().Breaker
		case !p.passthrough && strings.HasPrefix(name, share.FamilyName(p.Name, "")):
			if b := p.familyBreaker(strings.TrimPrefix(name, share.FamilyName(p.Name, ""))); b != nil {
				return &b.Breaker
			}
			return nil
		case p.passthrough && strings.HasPrefix(name, share.ClientName(p.Name, "")):
			fp := strings.TrimPrefix(name, share.ClientName(p.Name, ""))
			if !isFingerprint(fp) {
				return nil // no client's: "" is the breaker of requests without a credential
			}
			if !create {
				if b := p.state.breakers.knownClient(fp); b != nil {
					return &b.Breaker
				}
				return nil
			}
			return &p.breakerFor(fp).Breaker
		}
	}
	return nil
}

// isFingerprint reports whether s is a credential's fingerprint as
// credsource.Fingerprint makes it: 16 lowercase hex digits. Shared state
// names no other client.
func isFingerprint(s string) bool {
	if len(s) != 16 {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// sizedStorage is Caddy's storage as the storage backend reads it: an
// entry's size is asked before it is loaded.
type sizedStorage struct{ certmagic.Storage }

var _ share.StorageSizer = sizedStorage{}

func (s sizedStorage) Size(ctx context.Context, key string) (int64, error) {
	info, err := s.Stat(ctx, key)
	return info.Size, err
}

// sharedName is the shared name of the breaker that governs the client's
// requests to p.
func (p *Provider) sharedName(clientKey string) string {
	if p.passthrough {
		return share.ClientName(p.Name, clientKey)
	}
	return p.Name
}
