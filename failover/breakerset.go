package failover

import (
	"container/list"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// breakerSet owns every breaker of one provider: the shared one, and for a
// passthrough provider one per client credential fingerprint, so that one
// person's exhausted subscription does not cool the provider for everyone
// else on a shared gateway. It lives in providerState, so it outlives a
// config. Whether a provider's requests go through per-client breakers is
// the provider's to say (perClient); the set only keeps them.
//
// Per-client breakers are bounded, since every distinct client credential
// makes one: a breaker that is closed (or whose cooldown has ended) and has
// not been used for clientIdle is dropped, and past maxClientBreakers the
// least recently used one that cools nothing goes first (else the one
// whose cooldown ends soonest). A client whose breaker was dropped
// starts with a closed one, as a new client does; the counters of dropped
// breakers are kept, so a provider's totals never go back.
type breakerSet struct {
	// whole is the shared breaker: the provider's only one, or for a
	// passthrough provider the one opened only by hand (admin API) or by
	// another instance, which then drains it for every client.
	whole providerBreaker
	// families are the provider's model-family scopes (classify.Families,
	// by index): a subscription's per-model window that is spent benches
	// only requests for that family. Fixed in number, so bounded.
	families [maxFamilies]providerBreaker
	// none governs, for a passthrough provider, the requests that carry no
	// credential: they are no client, so they make no per-client breaker
	// and count as none. Only requests that are not model calls reach the
	// provider without a credential (ServeHTTP passes it over for the
	// others), and those charge no breaker, so it never cools.
	none providerBreaker

	mu        sync.Mutex               // guards the per-client fields below
	byClient  map[string]*list.Element // of *clientEntry
	lru       list.List                // most recently used first
	lastSweep time.Time
	retired   breakerCounts
}

const (
	// maxFamilies bounds the family scopes of a provider
	// (len(classify.Families), checked by a test).
	maxFamilies = 4
	// maxClientBreakers bounds the per-client breakers of one provider.
	maxClientBreakers = 10000
	// clientIdle is how long a per-client breaker that cools nothing is
	// kept after its last use.
	clientIdle = 10 * time.Minute
	// clientSweepInterval is how often idle breakers are looked for.
	clientSweepInterval = time.Minute
	// evictScan is how many of the least recently used per-client
	// breakers are looked at to choose the one that goes past the cap.
	evictScan = 64
)

// providerBreaker is one breaker of a provider, with what the provider last
// reported about its own capacity to the requests the breaker governs
// (headroom.go): per client for a passthrough provider.
type providerBreaker struct {
	breaker.Breaker
	reported  atomic.Pointer[capacity.Report]
	announced atomic.Bool // its cooling was announced as an event (events.go)
}

type clientEntry struct {
	key  string
	b    *providerBreaker
	used time.Time
}

// breakerCounts are a breaker's request counters.
type breakerCounts struct{ requests, successes, failovers uint64 }

func (c *breakerCounts) add(s breaker.Snapshot) {
	c.requests += s.Requests
	c.successes += s.Successes
	c.failovers += s.Failovers
}

// shared returns the shared breaker.
func (s *breakerSet) shared() *providerBreaker { return &s.whole }

// family returns the breaker of a model family's scope, or nil for a
// family that is not one of classify.Families.
func (s *breakerSet) family(name string) *providerBreaker {
	if name == "" {
		return nil
	}
	for i, f := range classify.Families {
		if f == name && i < maxFamilies {
			return &s.families[i]
		}
	}
	return nil
}

// eachFamily calls fn for every family scope, with its family's name.
func (s *breakerSet) eachFamily(fn func(family string, b *providerBreaker)) {
	for i, f := range classify.Families {
		if i < maxFamilies {
			fn(f, &s.families[i])
		}
	}
}

// governing returns the breaker that governs a request from the client:
// its own when perClient (made if needed, and marked used), else the
// shared one.
func (s *breakerSet) governing(clientKey string, perClient bool, now time.Time) *providerBreaker {
	if !perClient {
		return &s.whole
	}
	return s.client(clientKey, now)
}

// client returns the client's breaker, making it if needed, and marks it
// used. The key "" (no credential) is no client: it gets none.
func (s *breakerSet) client(key string, now time.Time) *providerBreaker {
	if key == "" {
		return &s.none
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.byClient[key]; ok {
		e := el.Value.(*clientEntry)
		e.used = now
		s.lru.MoveToFront(el)
		return e.b
	}
	if s.byClient == nil {
		s.byClient = make(map[string]*list.Element)
	}
	s.sweepLocked(now, false)
	for s.lru.Len() >= maxClientBreakers {
		s.evictLocked(now)
	}
	e := &clientEntry{key: key, b: new(providerBreaker), used: now}
	s.byClient[key] = s.lru.PushFront(e)
	return e.b
}

// evictLocked drops one per-client breaker to make room. Among the
// evictScan least recently used, the first that cools nothing goes, else
// the one whose cooldown ends soonest: evicting a cooling breaker would
// send its client straight back to the exhausted provider, so a flood of
// new clients must not push out a long cooldown.
func (s *breakerSet) evictLocked(now time.Time) {
	var victim *list.Element
	var victimUntil time.Time
	n := 0
	for el := s.lru.Back(); el != nil && n < evictScan; el = el.Prev() {
		n++
		snap := el.Value.(*clientEntry).b.Snapshot(now)
		if snap.State != breaker.Open {
			victim = el
			break
		}
		if victim == nil || snap.Until.Before(victimUntil) {
			victim, victimUntil = el, snap.Until
		}
	}
	s.removeLocked(victim)
}

// knownClient returns the client's breaker, or nil, without making one or
// marking it used.
func (s *breakerSet) knownClient(key string) *providerBreaker {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.byClient[key]; ok {
		return el.Value.(*clientEntry).b
	}
	return nil
}

// peek answers like Breaker.Peek for the client: the shared breaker first,
// which drains every client when open, then the client's own.
func (s *breakerSet) peek(now time.Time, clientKey string, perClient bool) breaker.Admission {
	if adm := s.whole.Peek(now); !adm.OK || !perClient {
		return adm
	}
	return s.client(clientKey, now).Peek(now)
}

// sweepLocked drops idle per-client breakers that cool nothing, at most
// once per clientSweepInterval unless force. Making a client's breaker and
// walking them sweep; tests force it.
func (s *breakerSet) sweepLocked(now time.Time, force bool) {
	if !force && now.Sub(s.lastSweep) < clientSweepInterval {
		return
	}
	s.lastSweep = now
	// the least recently used are at the back: walk while they are idle
	for el := s.lru.Back(); el != nil; {
		e := el.Value.(*clientEntry)
		if now.Sub(e.used) < clientIdle {
			break
		}
		prev := el.Prev()
		if e.b.Idle(now) {
			s.removeLocked(el)
		}
		el = prev
	}
}

func (s *breakerSet) removeLocked(el *list.Element) {
	e := s.lru.Remove(el).(*clientEntry)
	delete(s.byClient, e.key)
	s.retired.add(e.b.Snapshot(time.Time{}))
}

// eachClient calls fn for every per-client breaker, with its client
// credential fingerprint, once idle ones are swept, without holding the
// set's lock while fn runs.
func (s *breakerSet) eachClient(now time.Time, fn func(fingerprint string, b *providerBreaker)) {
	s.mu.Lock()
	s.sweepLocked(now, false)
	entries := make([]*clientEntry, 0, s.lru.Len())
	for el := s.lru.Front(); el != nil; el = el.Next() {
		entries = append(entries, el.Value.(*clientEntry))
	}
	s.mu.Unlock()
	for _, e := range entries {
		fn(e.key, e.b)
	}
}

// clientsKept returns how many per-client breakers are kept, and the
// counters of those dropped.
func (s *breakerSet) clientsKept() (int, breakerCounts) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.lru.Len(), s.retired
}

// resetAll closes every breaker (admin API).
func (s *breakerSet) resetAll(now time.Time) {
	s.whole.Reset(now)
	s.eachFamily(func(_ string, b *providerBreaker) { b.Reset(now) })
	s.eachClient(now, func(_ string, b *providerBreaker) { b.Reset(now) })
}

// coolAll opens every breaker by hand until now+d (admin API: drain).
func (s *breakerSet) coolAll(now time.Time, d time.Duration) {
	s.whole.CoolFor(now, d, classify.Manual)
	s.eachClient(now, func(_ string, b *providerBreaker) { b.CoolFor(now, d, classify.Manual) })
}

// breakerSummary is a provider's breakers as its status reports them.
type breakerSummary struct {
	breaker.Snapshot
	// Clients and ClientsCooling count the per-client breakers kept, and
	// those of them open.
	Clients, ClientsCooling int
}

// summary returns the shared breaker's snapshot; when perClient, with the
// counters of every per-client breaker (dropped ones included) added and
// the most recent failure among them.
func (s *breakerSet) summary(now time.Time, perClient bool) breakerSummary {
	sum := breakerSummary{Snapshot: s.whole.Snapshot(now)}
	if !perClient {
		return sum
	}
	var counts breakerCounts
	s.eachClient(now, func(_ string, b *providerBreaker) {
		cs := b.Snapshot(now)
		counts.add(cs)
		if cs.State == breaker.Open {
			sum.ClientsCooling++
		}
		if cs.LastFailure.After(sum.LastFailure) {
			sum.LastFailure, sum.LastClass, sum.LastError = cs.LastFailure, cs.LastClass, cs.LastError
		}
	})
	kept, retired := s.clientsKept()
	sum.Clients = kept
	sum.Requests += counts.requests + retired.requests
	sum.Successes += counts.successes + retired.successes
	sum.Failovers += counts.failovers + retired.failovers
	return sum
}

// snapshotFor returns the state a client meets: the shared breaker's when
// it is open (it drains every client) or not perClient, else the client's
// own.
func (s *breakerSet) snapshotFor(now time.Time, clientKey string, perClient bool) breaker.Snapshot {
	snap := s.whole.Snapshot(now)
	if perClient && snap.State != breaker.Open {
		snap = s.client(clientKey, now).Snapshot(now)
	}
	return snap
}

// capacityFor returns the latest capacity report the provider made to the
// client (to every client when not perClient), or nil. It makes no
// per-client breaker.
func (s *breakerSet) capacityFor(clientKey string, perClient bool) *capacity.Report {
	if !perClient {
		return s.whole.reported.Load()
	}
	if b := s.knownClient(clientKey); b != nil {
		return b.reported.Load()
	}
	return nil
}

// eachCapacity calls fn with every capacity report kept: the shared
// breaker's, then when perClient each client's.
func (s *breakerSet) eachCapacity(now time.Time, perClient bool, fn func(*capacity.Report)) {
	if c := s.whole.reported.Load(); c != nil {
		fn(c)
	}
	if !perClient {
		return
	}
	s.eachClient(now, func(_ string, b *providerBreaker) {
		if c := b.reported.Load(); c != nil {
			fn(c)
		}
	})
}

// latestCapacity returns the most recently learned capacity report among
// those eachCapacity walks, or nil.
func (s *breakerSet) latestCapacity(now time.Time, perClient bool) *capacity.Report {
	var latest *capacity.Report
	s.eachCapacity(now, perClient, func(c *capacity.Report) {
		if latest == nil || c.Learned.After(latest.Learned) {
			latest = c
		}
	})
	return latest
}
