package share

import (
	"context"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// RedisCounters adds and reads counts, each key expiring when asked; a
// missing key reads 0; a key that is not a number is an error, not a
// count; with Redis stopped, calls fail within the timeout.
func TestRedisCounters(t *testing.T) {
	r := testredis.Start(t)
	rc, err := NewRedisCounters(Config{Redis: r.URL, Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	ctx := context.Background()
	exp := time.Now().Add(time.Hour)
	totals, err := rc.Add(ctx, []budget.Delta{{Key: "t:a", N: 5, ExpireAt: exp}, {Key: "t:b", N: 2, ExpireAt: exp}, {Key: "t:a", N: 1, ExpireAt: exp}})
	if err != nil || len(totals) != 3 || totals[0] != 5 || totals[1] != 2 || totals[2] != 6 {
		t.Fatalf("add: %v %v", totals, err)
	}
	got, err := rc.Get(ctx, []string{"t:a", "t:missing", "t:b"})
	if err != nil || got[0] != 6 || got[1] != 0 || got[2] != 2 {
		t.Fatalf("get: %v %v", got, err)
	}
	c := r.Client()
	defer c.Close()
	if ttl := c.PTTL(ctx, "t:a").Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("t:a expires in %v, want an hour", ttl)
	}
	c.Set(ctx, "t:junk", "x", 0)
	if _, err := rc.Get(ctx, []string{"t:junk"}); err == nil {
		t.Error("a key that is not a number read as a count")
	}
	r.Stop()
	start := time.Now()
	if _, err := rc.Add(ctx, []budget.Delta{{Key: "t:a", N: 1, ExpireAt: exp}}); err == nil {
		t.Error("add with redis stopped succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a failing call took %v", d)
	}
}
