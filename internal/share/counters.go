package share

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
)

// RedisCounters keeps a fleet's limit counts in Redis: one integer key
// per bucket of a window, added to with INCRBY and made to expire (PEXPIREAT)
// once the bucket has left its window, so the keys a fleet holds are
// bounded by its limits times budget.Buckets. It is a budget.Store; the
// budget.Syncer calls it off the request path.
type RedisCounters struct {
	client *redis.Client
}

var _ budget.Store = (*RedisCounters)(nil)

// NewRedisCounters connects to cfg.Redis lazily (at the first call), with
// cfg's password and timeout.
func NewRedisCounters(cfg Config) (*RedisCounters, error) {
	if err := ValidRedisURL(cfg.Redis); err != nil {
		return nil, err
	}
	timeout := cfg.Timeout
	if timeout <= 0 {
		timeout = DefaultRedisTimeout
	}
	opt, err := redisOptions(cfg, timeout)
	if err != nil {
		return nil, err
	}
	return &RedisCounters{client: redis.NewClient(opt)}, nil
}

// Add adds each delta in one round trip and returns the totals.
func (r *RedisCounters) Add(ctx context.Context, deltas []budget.Delta) ([]int64, error) {
	pipe := r.client.Pipeline()
	incrs := make([]*redis.IntCmd, len(deltas))
	for i, d := range deltas {
		incrs[i] = pipe.IncrBy(ctx, d.Key, d.N)
		pipe.PExpireAt(ctx, d.Key, d.ExpireAt)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, err
	}
	out := make([]int64, len(deltas))
	for i, c := range incrs {
		out[i] = c.Val()
	}
	return out, nil
}

// Get reads the keys, 0 for a missing one, in batches of MGET.
func (r *RedisCounters) Get(ctx context.Context, keys []string) ([]int64, error) {
	out := make([]int64, 0, len(keys))
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 512)]
		keys = keys[len(batch):]
		vals, err := r.client.MGet(ctx, batch...).Result()
		if err != nil {
			return nil, err
		}
		for _, v := range vals {
			var n int64
			if s, ok := v.(string); ok {
				if n, err = strconv.ParseInt(s, 10, 64); err != nil {
					return nil, fmt.Errorf("a limit counter in redis is not a number: %.40q", s)
				}
			}
			out = append(out, n)
		}
	}
	return out, nil
}

// Close closes the connections.
func (r *RedisCounters) Close() error { return r.client.Close() }
