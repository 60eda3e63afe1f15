package failover

import (
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
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
	level   int           // the providers' `tier`
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
			t = &providerTier{level: p.Tier}
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
		order, why, pinned := h.tierOrder(tier, req, now, buf[:0])
		for j, k := range order {
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
				if h.spread && req.kind != kindOther {
					// the next request starts after this one, so a cooling
					// provider's share goes evenly to the others; a request
					// that is not a model call (Claude Code's HEAD / before
					// each conversation) moves nothing placement uses
					tier.cursor.Store(uint32(k + 1))
				}
				if pinned && j == 0 {
					why = orderAffinity
				}
				h.logSelection(req, p, tier.level, why, skips, saturated)
				return i, adm, nil
			}
			skips = append(skips, p.skippedBy(now, req.clientKey, adm))
		}
	}
	// nothing else admits: a saturated provider is still better than none
	for _, i := range saturated {
		p := h.Providers[i]
		adm := admitRequest(p, req, now)
		if adm.OK {
			h.logSelection(req, p, p.Tier, orderSaturated, skips, saturated)
			return i, adm, nil
		}
		skips = append(skips, p.skippedBy(now, req.clientKey, adm))
	}
	return -1, breaker.Admission{}, skips
}

// admitRequest asks provider p whether it takes the request.
func admitRequest(p *Provider, req *llmRequest, now time.Time) breaker.Admission {
	if fb := p.familyScope(req); fb != nil {
		// the model's family is benched here: skip without asking (no
		// probe: the family's window resets at the time the provider gave)
		if adm := fb.Peek(now); !adm.OK {
			return adm
		}
	}
	if req.kind == kindOther {
		return p.peek(now, req.clientKey) // takes no probe, counts nothing
	}
	return p.admit(req.r.Context(), now, req.clientKey)
}

// orderReason says why a provider came first in its tier's order, for the
// debug line of each selection.
type orderReason uint8

const (
	orderDeclaration orderReason = iota // priority: declaration order
	orderRotation                       // spread: round robin
	orderHeadroom                       // spread: most headroom by usage headers
	orderAffinity                       // spread: the conversation's provider
	orderSaturated                      // at max_utilization, taken since nothing else admits
)

func (r orderReason) String() string {
	return [...]string{"declaration order", "rotation", "headroom", "conversation affinity", "saturated; nothing else admits"}[r]
}

// tierOrder returns the positions in tier, in the order they are tried,
// and what ordered them: declaration order; with spread, rotation from the
// cursor, reordered by headroom when every provider reports its usage, and
// (pinned) the provider that served the request's conversation last put
// first.
func (h *Handler) tierOrder(tier *providerTier, req *llmRequest, now time.Time, buf []int) (order []int, why orderReason, pinned bool) {
	n := len(tier.indices)
	start := 0
	if h.spread {
		start = int(tier.cursor.Load() % uint32(n))
	}
	order = buf
	for off := range n {
		order = append(order, (start+off)%n)
	}
	if !h.spread {
		return order, orderDeclaration, false
	}
	if n < 2 {
		return order, orderRotation, false
	}
	why = orderRotation
	if h.headroomOrder(tier, order, req, now) {
		why = orderHeadroom
	}
	if conv := h.pinnedProvider(req, now); conv >= 0 {
		for j, k := range order {
			if tier.indices[k] == conv {
				copy(order[1:j+1], order[:j])
				order[0] = k
				pinned = true
				break
			}
		}
	}
	return order, why, pinned
}

// logSelection writes the debug line of a selection, as reverse_proxy
// logs "selected upstream": which provider, in which tier, why, and which
// were passed over as cooling or saturated. Nothing is built unless debug
// logging is on.
func (h *Handler) logSelection(req *llmRequest, p *Provider, tier int, why orderReason, cooling []skipped, saturated []int) {
	c := h.logger.Check(zapcore.DebugLevel, "selected provider")
	if c == nil {
		return
	}
	fields := []zap.Field{zap.String("provider", p.Name), zap.Int("tier", tier), zap.Stringer("reason", why),
		zap.Int("attempt", req.attempts+1), zap.String("request_id", requestID(req.r))}
	if len(cooling) > 0 {
		names := make([]string, len(cooling))
		for i, s := range cooling {
			names[i] = s.name + " (" + string(s.class) + ")"
		}
		fields = append(fields, zap.Strings("skipped_cooling", names))
	}
	if len(saturated) > 0 && why != orderSaturated {
		names := make([]string, len(saturated))
		for i, k := range saturated {
			names[i] = h.Providers[k].Name
		}
		fields = append(fields, zap.Strings("skipped_saturated", names))
	}
	c.Write(fields...)
}
