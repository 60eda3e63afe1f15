package failover

import (
	"fmt"
	"slices"
	"sync/atomic"
)

// Selection policies across providers.
const (
	// PolicyPriority tries providers in declaration order (by tier first,
	// when tiers are given). The default.
	PolicyPriority = "priority"
	// PolicySpread rotates requests across the providers of a tier that
	// admit them (round robin), for keys or accounts of equal standing;
	// failover still moves to the next admitting provider, and to the next
	// tier once the whole tier is cooling.
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
// (spread: starting after the one the previous request got). It returns -1
// and why each provider was skipped when none admits.
func (h *Handler) selectProvider(req *llmRequest) (int, Admission, []skipped) {
	now := timeNow()
	var skips []skipped
	for _, tier := range h.tiers {
		n := len(tier.indices)
		start := 0
		if h.spread {
			start = int(tier.cursor.Load() % uint32(n))
		}
		for off := range n {
			k := (start + off) % n
			i := tier.indices[k]
			if req.tried[i] {
				continue
			}
			p := h.Providers[i]
			var adm Admission
			if req.kind == kindOther {
				adm = p.peek(now, req.clientKey) // takes no probe, counts nothing
			} else {
				adm = p.admit(req.r.Context(), now, req.clientKey)
			}
			if adm.OK {
				if h.spread {
					// the next request starts after this one, so a cooling
					// provider's share goes evenly to the others
					tier.cursor.Store(uint32(k + 1))
				}
				return i, adm, nil
			}
			skips = append(skips, skipped{name: p.Name, class: adm.Class, retryAt: adm.RetryAt})
		}
	}
	return -1, Admission{}, skips
}
