package failover

import (
	"net/http"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Usage-aware routing: what providers report about their own capacity
// (internal/capacity) is kept per breaker, so per client for passthrough
// providers, and used to move before a limit hits (max_utilization), to
// place new conversations where there is headroom (policy spread), and to
// give an honest Retry-After when nothing admits.

// provisionUsageRouting sets up affinity.
func (h *Handler) provisionUsageRouting() error {
	if err := h.validateUsageRouting(); err != nil {
		return err
	}
	return h.provisionAffinity()
}

// capacityMaxReset caps the resets an upstream announces: max_reset, the
// cap of the cooldowns it asks for.
func (h *Handler) capacityMaxReset() time.Duration {
	if h.MaxReset > 0 {
		return time.Duration(h.MaxReset)
	}
	return classify.DefaultMaxReset
}

// learnCapacity keeps what a response's headers say about the provider's
// capacity, for the breaker (so the client) the attempt went through.
// committed says the response is being delivered: a success.
func (h *Handler) learnCapacity(a *attempt, hdr http.Header, now time.Time, committed bool) {
	if a.b == nil || hdr == nil {
		return
	}
	c, ok := capacity.Parse(hdr, now, h.capacityMaxReset())
	if !ok {
		if committed {
			// an answer delivered without usage headers is newer news
			// than a report that said the provider was used up: drop
			// that report, or it would keep a stale reset in Retry-After
			if old := a.b.reported.Load(); old != nil && !old.ExhaustedUntil(now).IsZero() {
				a.b.reported.CompareAndSwap(old, nil)
			}
		}
		return
	}
	kept := new(capacity.Report) // only now: &c would put c on the heap for every response
	*kept = c
	a.b.reported.Store(kept)
}

// capacityFor returns the latest capacity report of the provider for a
// client, or nil. It creates no per-client state.
func (p *Provider) capacityFor(clientKey string) *capacity.Report {
	return p.state.breakers.capacityFor(clientKey, p.passthrough)
}

// saturated reports whether the provider is at or above its
// max_utilization for this client.
func (p *Provider) saturated(now time.Time, clientKey string) bool {
	if p.maxUtil <= 0 {
		return false
	}
	_, ok := p.capacityFor(clientKey).Saturated(now, p.maxUtil)
	return ok
}

// honestRetryAt is when a provider that does not admit a request will
// serve again: its breaker's own time, or later when its usage headers
// said a window is used up until then.
func (p *Provider) honestRetryAt(now time.Time, clientKey string, retryAt time.Time) time.Time {
	if t := p.capacityFor(clientKey).ExhaustedUntil(now); t.After(retryAt) {
		return t
	}
	return retryAt
}

// skippedBy is the provider as an answer names it when it did not admit
// a request: why, until when by its own account too, and what it last
// reported of its limits to this client.
func (p *Provider) skippedBy(now time.Time, clientKey string, adm breaker.Admission) skipped {
	return skipped{name: p.Name, class: adm.Class, retryAt: p.honestRetryAt(now, clientKey, adm.RetryAt),
		limits: p.capacityFor(clientKey)}
}

// headroomOrder reorders the candidate positions of a spread tier (in
// rotation order) by headroom: lowest utilization of the binding window
// first, ties to the window that resets soonest (its unused quota is lost
// first). When a candidate reports nothing the rotation order stays, and
// it reports false. Insertion sort: tiers are small and this allocates
// nothing.
func (h *Handler) headroomOrder(tier *providerTier, order []int, req *llmRequest, now time.Time) bool {
	var keys [maxSortedTier]headroom
	if len(order) > len(keys) {
		return false
	}
	for j, k := range order {
		c := h.Providers[tier.indices[k]].capacityFor(req.clientKey)
		if c == nil {
			return false
		}
		w, ok := c.Binding(now)
		if !ok {
			return false
		}
		keys[j] = headroom{util: w.Utilization, reset: w.Reset}
	}
	for j := 1; j < len(order); j++ {
		for m := j; m > 0 && keys[m].less(keys[m-1]); m-- {
			keys[m], keys[m-1] = keys[m-1], keys[m]
			order[m], order[m-1] = order[m-1], order[m]
		}
	}
	return true
}

// maxSortedTier bounds the tiers headroomOrder sorts; a larger tier keeps
// rotation.
const maxSortedTier = 16

type headroom struct {
	util  float64
	reset time.Time
}

func (a headroom) less(b headroom) bool {
	if a.util != b.util {
		return a.util < b.util
	}
	if a.reset.IsZero() != b.reset.IsZero() {
		return !a.reset.IsZero() // a known reset comes first
	}
	return a.reset.Before(b.reset)
}
