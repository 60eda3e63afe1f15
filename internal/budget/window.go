package budget

import (
	"sync"
	"time"
)

// Buckets is how many buckets a window is cut into. A window forgets in
// steps of one bucket (a 5h window every 5 minutes), so what it counts
// is the last Window, give or take one bucket, and never twice the limit
// across a boundary, as a fixed window would allow.
const Buckets = 60

// Counter counts one limit's units over a rolling window: a ring of
// Buckets buckets aligned on Unix time, so every instance of a fleet cuts
// the same buckets and can share them by name. Each bucket holds what the
// shared store last said the fleet counted (known), what this instance
// counted since and has not yet sent (pending), and what is on its way
// (sending). A Counter locks only itself.
type Counter struct {
	// Name is the counter's key in a shared store, unique per scope,
	// kind and window.
	Name  string
	width int64 // nanoseconds per bucket

	mu    sync.Mutex
	slots [Buckets]bucket
}

type bucket struct {
	idx                     int64 // the bucket's index since the Unix epoch
	known, pending, sending int64
}

func (b *bucket) sum() int64 { return b.known + b.pending + b.sending }

// NewCounter makes a counter for a window (clamped to MinWindow..MaxWindow).
func NewCounter(name string, window time.Duration) *Counter {
	window = min(max(window, MinWindow), MaxWindow)
	return &Counter{Name: name, width: int64(window) / Buckets}
}

// Window is the span the counter counts over.
func (c *Counter) Window() time.Duration { return time.Duration(c.width * Buckets) }

func (c *Counter) index(now time.Time) int64 { return now.UnixNano() / c.width }

// slot returns the bucket of index idx, emptied if it held an older one.
// Called with mu held.
func (c *Counter) slot(idx int64) *bucket {
	b := &c.slots[mod(idx)]
	if b.idx != idx {
		*b = bucket{idx: idx}
	}
	return b
}

func mod(idx int64) int {
	m := idx % Buckets
	if m < 0 {
		m += Buckets
	}
	return int(m)
}

// Add counts n units now.
func (c *Counter) Add(now time.Time, n int64) {
	if n <= 0 {
		return
	}
	c.mu.Lock()
	c.slot(c.index(now)).pending += n
	c.mu.Unlock()
}

// Used is what the window holds now.
func (c *Counter) Used(now time.Time) int64 {
	used, _ := c.Check(now, 0)
	return used
}

// Check returns what the window holds now and, when that is max or more,
// when enough of it frees up to fall below limit (zero otherwise, and
// for limit 0).
func (c *Counter) Check(now time.Time, limit int64) (used int64, freeAt time.Time) {
	idx := c.index(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.slots {
		if b := &c.slots[i]; b.idx > idx-Buckets && b.idx <= idx {
			used += b.sum()
		}
	}
	if limit <= 0 || used < limit {
		return used, time.Time{}
	}
	left := used
	for j := idx - Buckets + 1; j <= idx; j++ {
		if b := &c.slots[mod(j)]; b.idx == j {
			left -= b.sum()
		}
		if left < limit {
			// bucket j leaves the window when bucket j+Buckets begins
			return used, time.Unix(0, (j+Buckets)*c.width)
		}
	}
	return used, time.Unix(0, (idx+Buckets)*c.width) // unreachable: left reaches 0
}

// Delta is what one bucket of one counter adds to a shared store.
type Delta struct {
	Key      string
	N        int64
	ExpireAt time.Time // when the bucket has left every window
}

// Key is the store key of the counter's bucket idx.
func (c *Counter) Key(prefix string, idx int64) string {
	return prefix + c.Name + ":" + itoa(idx)
}

// take moves what is pending into sending and returns it as deltas, with
// the bucket indices they belong to.
func (c *Counter) take(now time.Time, prefix string, out []Delta, idxs []int64) ([]Delta, []int64) {
	idx := c.index(now)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.slots {
		b := &c.slots[i]
		if b.pending == 0 || b.idx <= idx-Buckets || b.idx > idx {
			continue
		}
		b.sending += b.pending
		out = append(out, Delta{Key: c.Key(prefix, b.idx), N: b.pending,
			ExpireAt: time.Unix(0, (b.idx+Buckets+1)*c.width)})
		idxs = append(idxs, b.idx)
		b.pending = 0
	}
	return out, idxs
}

// sent settles a delta of bucket idx: total is the fleet's count after it.
// ok false: it was not stored, and is pending again.
func (c *Counter) sent(idx, n, total int64, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := &c.slots[mod(idx)]
	if b.idx != idx {
		return // the bucket left the window meanwhile
	}
	b.sending -= n
	if !ok {
		b.pending += n
		return
	}
	// the store's total holds this delta and whatever others sent, never
	// what is still pending or sending
	b.known = max(b.known, total)
}

// learn sets the fleet's count of bucket idx as the store holds it.
func (c *Counter) learn(now time.Time, idx, total int64) {
	cur := c.index(now)
	if idx <= cur-Buckets || idx > cur {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.slot(idx)
	// the store holds what this instance sent; pending and sending are
	// still on their way
	b.known = max(b.known, total)
}

// indices lists the bucket indices of the window as of now.
func (c *Counter) indices(now time.Time) (first, last int64) {
	idx := c.index(now)
	return idx - Buckets + 1, idx
}

func itoa(n int64) string {
	var buf [20]byte
	i := len(buf)
	neg := n < 0
	if neg {
		n = -n
	}
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			break
		}
	}
	if neg {
		i--
		buf[i] = '-'
	}
	return string(buf[i:])
}
