package failover

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

// Selection policies across providers.
const (
	// PolicyPriority tries providers in declaration order (by tier first,
	// when tiers are given). The default.
	PolicyPriority = "priority"
	// PolicySpread spreads requests across the providers of a tier that
	// admit them, for keys or accounts of equal standing: a conversation
	// stays on the provider that served it last (affinity), new ones go
	// to the provider with the most headroom by its usage headers, and
	// providers that report no usage take turns (round robin). Failover
	// still moves to the next admitting provider, and to the next tier
	// once the whole tier is cooling.
	PolicySpread = "spread"
)

// providerTier is a group of providers at one priority.
type providerTier struct {
	indices []int         // into Handler.Providers, in declaration order
	cursor  atomic.Uint32 // spread: where the next request starts
}

// buildTiers groups the providers by tier, lowest first.
func buildTiers(providers []*Provider) []*providerTier {
	byTier := make(map[int]*providerTier)
	var levels []int
	for i, p := range providers {
		t, ok := byTier[p.Tier]
		if !ok {
			t = new(providerTier)
			byTier[p.Tier] = t
			levels = append(levels, p.Tier)
		}
		t.indices = append(t.indices, i)
	}
	slices.Sort(levels)
	tiers := make([]*providerTier, len(levels))
	for i, l := range levels {
		tiers[i] = byTier[l]
	}
	return tiers
}

func validPolicy(p string) error {
	switch p {
	case "", PolicyPriority, PolicySpread:
		return nil
	}
	return fmt.Errorf("policy: want priority or spread, got %q", p)
}

// selectProvider returns the index of the provider that takes the request:
// tier by tier, the first untried provider whose breaker admits it
// (spread: the conversation's provider, then by headroom, else starting
// after the one the previous request got). A saturated provider
// (max_utilization) is passed over while any other admits the request. It
// returns -1 and why each provider was skipped when none admits.
func (h *Handler) selectProvider(req *llmRequest) (int, breaker.Admission, []skipped) {
	now := timeNow()
	var skips []skipped
	var saturated []int // passed over, in preference order
	var buf [maxSortedTier]int
	for _, tier := range h.tiers {
		order := h.tierOrder(tier, req, now, buf[:0])
		for _, k := range order {
			i := tier.indices[k]
			if req.tried[i] {
				continue
			}
			p := h.Providers[i]
			if p.saturated(now, req.clientKey) {
				saturated = append(saturated, i)
				continue
			}
			adm := admitRequest(p, req, now)
			if adm.OK {
				if h.spread {
					// the next request starts after this one, so a cooling
					// provider's share goes evenly to the others
					tier.cursor.Store(uint32(k + 1))
				}
				return i, adm, nil
			}
			skips = append(skips, skipped{name: p.Name, class: adm.Class,
				retryAt: p.honestRetryAt(now, req.clientKey, adm.RetryAt)})
		}
	}
	// nothing else admits: a saturated provider is still better than none
	for _, i := range saturated {
		p := h.Providers[i]
		adm := admitRequest(p, req, now)
		if adm.OK {
			return i, adm, nil
		}
		skips = append(skips, skipped{name: p.Name, class: adm.Class,
			retryAt: p.honestRetryAt(now, req.clientKey, adm.RetryAt)})
	}
	return -1, breaker.Admission{}, skips
}

// admitRequest asks provider p whether it takes the request.
func admitRequest(p *Provider, req *llmRequest, now time.Time) breaker.Admission {
	if req.kind == kindOther {
		return p.peek(now, req.clientKey) // takes no probe, counts nothing
	}
	return p.admit(req.r.Context(), now, req.clientKey)
}

// tierOrder returns the positions in tier, in the order they are tried:
// declaration order; with spread, rotation from the cursor, reordered by
// headroom when every provider reports its usage, and the provider that
// served the request's conversation last first.
func (h *Handler) tierOrder(tier *providerTier, req *llmRequest, now time.Time, buf []int) []int {
	n := len(tier.indices)
	start := 0
	if h.spread {
		start = int(tier.cursor.Load() % uint32(n))
	}
	order := buf
	for off := range n {
		order = append(order, (start+off)%n)
	}
	if !h.spread || n < 2 {
		return order
	}
	h.headroomOrder(tier, order, req, now)
	if pinned := h.pinnedProvider(req, now); pinned >= 0 {
		for j, k := range order {
			if tier.indices[k] == pinned {
				copy(order[1:j+1], order[:j])
				order[0] = k
				break
			}
		}
	}
	return order
}
