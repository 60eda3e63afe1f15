package failover

import (
	"container/list"
	"sync"
	"time"
)

// Per-client breakers of passthrough providers are bounded, since every
// distinct client credential makes one: a breaker that is closed (or whose
// cooldown has ended) and has not been used for clientIdle is dropped, and
// past maxClientBreakers the least recently used one goes first. A client
// whose breaker was dropped starts with a closed one, as a new client does.
const (
	// maxClientBreakers bounds the per-client breakers of one provider.
	maxClientBreakers = 10000
	// clientIdle is how long a per-client breaker that cools nothing is
	// kept after its last use.
	clientIdle = 10 * time.Minute
	// clientSweepInterval is how often idle breakers are looked for.
	clientSweepInterval = time.Minute
)

// clientBreakers holds one breaker per client credential fingerprint, most
// recently used first.
type clientBreakers struct {
	mu        sync.Mutex
	byKey     map[string]*list.Element // of *clientEntry
	lru       list.List
	lastSweep time.Time
	// retired sums the counters of dropped breakers, so the provider's
	// totals never go back.
	retired struct{ requests, successes, failovers uint64 }
}

type clientEntry struct {
	key  string
	b    *Breaker
	used time.Time
}

// get returns the client's breaker, making it if needed, and marks it used.
func (c *clientBreakers) get(key string, now time.Time) *Breaker {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byKey[key]; ok {
		e := el.Value.(*clientEntry)
		e.used = now
		c.lru.MoveToFront(el)
		return e.b
	}
	if c.byKey == nil {
		c.byKey = make(map[string]*list.Element)
	}
	c.sweepLocked(now, false)
	for c.lru.Len() >= maxClientBreakers {
		c.removeLocked(c.lru.Back())
	}
	e := &clientEntry{key: key, b: new(Breaker), used: now}
	c.byKey[key] = c.lru.PushFront(e)
	return e.b
}

// sweep drops idle breakers that cool nothing, at most once per
// clientSweepInterval unless force.
func (c *clientBreakers) sweep(now time.Time, force bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweepLocked(now, force)
}

func (c *clientBreakers) sweepLocked(now time.Time, force bool) {
	if !force && now.Sub(c.lastSweep) < clientSweepInterval {
		return
	}
	c.lastSweep = now
	// the least recently used are at the back: walk while they are idle
	for el := c.lru.Back(); el != nil; {
		e := el.Value.(*clientEntry)
		if now.Sub(e.used) < clientIdle {
			break
		}
		prev := el.Prev()
		if e.b.idle(now) {
			c.removeLocked(el)
		}
		el = prev
	}
}

func (c *clientBreakers) removeLocked(el *list.Element) {
	e := c.lru.Remove(el).(*clientEntry)
	delete(c.byKey, e.key)
	s := e.b.Snapshot(time.Time{})
	c.retired.requests += s.Requests
	c.retired.successes += s.Successes
	c.retired.failovers += s.Failovers
}

// each calls fn for every breaker, without holding the lock while fn runs.
func (c *clientBreakers) each(fn func(key string, b *Breaker)) {
	c.mu.Lock()
	entries := make([]*clientEntry, 0, c.lru.Len())
	for el := c.lru.Front(); el != nil; el = el.Next() {
		entries = append(entries, el.Value.(*clientEntry))
	}
	c.mu.Unlock()
	for _, e := range entries {
		fn(e.key, e.b)
	}
}

// counts returns how many breakers are kept, and the counters of those
// dropped.
func (c *clientBreakers) counts() (n int, requests, successes, failovers uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len(), c.retired.requests, c.retired.successes, c.retired.failovers
}

// idle reports whether the breaker cools nothing now and no probe is in
// flight: dropping it changes nothing for its client.
func (b *Breaker) idle(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.state {
	case "", StateClosed:
		return true
	case StateOpen:
		return !now.Before(b.until)
	}
	return !b.probing // half-open
}
