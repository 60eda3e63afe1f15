package budget

import (
	"context"
	"sync/atomic"
	"time"
)

// Store is where a fleet keeps its counts: a number per key that expires.
// Faults are returned, never retried inside a call.
type Store interface {
	// Add adds each delta to its key, making the key expire at its
	// ExpireAt, and returns every key's total after the add.
	Add(ctx context.Context, deltas []Delta) ([]int64, error)
	// Get returns each key's total; 0 for a key that does not exist.
	Get(ctx context.Context, keys []string) ([]int64, error)
}

// Syncer shares counters through a Store: it sends what this instance
// counted and learns what the fleet counted, every interval, off the
// request path. While the store fails, counts stay pending here (so
// limits hold locally) and are sent once it answers again.
type Syncer struct {
	Store    Store
	Prefix   string // key prefix, such as "llm_failover:limit:"
	Interval time.Duration
	Timeout  time.Duration
	Now      func() time.Time
	// Counters lists the counters to share; called once per round.
	Counters func() []*Counter
	// Down and Up are called when the store starts failing and when it
	// answers again: once per change.
	Down func(err error)
	Up   func()

	down  atomic.Bool
	since atomic.Int64 // unix nanos of the last successful round
}

// Healthy reports whether the last round reached the store.
func (s *Syncer) Healthy() bool { return !s.down.Load() }

// SyncedAt is when a round last reached the store; zero before.
func (s *Syncer) SyncedAt() time.Time {
	if ns := s.since.Load(); ns != 0 {
		return time.Unix(0, ns)
	}
	return time.Time{}
}

// Run syncs every interval until ctx ends, with a last send on the way
// out so that a reload or stop loses nothing counted.
func (s *Syncer) Run(ctx context.Context) {
	t := time.NewTicker(s.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.Round(context.Background())
			return
		case <-t.C:
			s.Round(ctx)
		}
	}
}

// Round sends every pending count and reads the fleet's counts of every
// bucket in the counters' windows once.
func (s *Syncer) Round(ctx context.Context) {
	counters := s.Counters()
	if len(counters) == 0 {
		return
	}
	now := s.Now()
	var deltas []Delta
	var idxs []int64
	owners := make([]*Counter, 0, len(counters))
	for _, c := range counters {
		before := len(deltas)
		deltas, idxs = c.take(now, s.Prefix, deltas, idxs)
		for range len(deltas) - before {
			owners = append(owners, c)
		}
	}
	opCtx, cancel := context.WithTimeout(ctx, s.Timeout)
	defer cancel()
	if len(deltas) > 0 {
		totals, err := s.Store.Add(opCtx, deltas)
		for i, d := range deltas {
			ok := err == nil && i < len(totals)
			var total int64
			if ok {
				total = totals[i]
			}
			owners[i].sent(idxs[i], d.N, total, ok)
		}
		if err != nil {
			s.failed(err)
			return
		}
	}
	keys := make([]string, 0, len(counters)*Buckets)
	for _, c := range counters {
		first, last := c.indices(now)
		for j := first; j <= last; j++ {
			keys = append(keys, c.Key(s.Prefix, j))
		}
	}
	totals, err := s.Store.Get(opCtx, keys)
	if err != nil {
		s.failed(err)
		return
	}
	k := 0
	for _, c := range counters {
		first, last := c.indices(now)
		for j := first; j <= last; j++ {
			if k < len(totals) && totals[k] > 0 {
				c.learn(now, j, totals[k])
			}
			k++
		}
	}
	s.since.Store(time.Now().UnixNano())
	if s.down.Swap(false) && s.Up != nil {
		s.Up()
	}
}

func (s *Syncer) failed(err error) {
	if !s.down.Swap(true) && s.Down != nil {
		s.Down(err)
	}
}
