package failover

import (
	"math"
	"slices"
	"sync"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
)

// liveHandlers are the provisioned handlers, newest last, so the admin API
// and the metrics collector see the providers of the running config. During
// a reload old and new are both present until the old one is cleaned up.
var liveHandlers struct {
	sync.Mutex
	list []*Handler
}

func registerHandler(h *Handler) {
	liveHandlers.Lock()
	defer liveHandlers.Unlock()
	liveHandlers.list = append(liveHandlers.list, h)
}

func unregisterHandler(h *Handler) {
	liveHandlers.Lock()
	defer liveHandlers.Unlock()
	liveHandlers.list = slices.DeleteFunc(liveHandlers.list, func(x *Handler) bool { return x == h })
}

// liveProviders returns each provider of the running config once, by name,
// in priority order; the newest config's declaration wins.
func liveProviders() []*Provider {
	return liveByName(func(h *Handler) []*Provider {
		h.wrapped.mu.Lock()
		defer h.wrapped.mu.Unlock()
		return append(slices.Clip(h.Providers), h.wrapped.order...)
	}, func(p *Provider) string { return p.Name })
}

// liveByName returns each item of the live handlers once, by name, in the
// order items lists them; the newest config's item wins.
func liveByName[T any](items func(*Handler) []T, name func(T) string) []T {
	liveHandlers.Lock()
	defer liveHandlers.Unlock()
	var out []T
	seen := make(map[string]bool)
	for i := len(liveHandlers.list) - 1; i >= 0; i-- {
		for _, x := range items(liveHandlers.list[i]) {
			if !seen[name(x)] {
				seen[name(x)] = true
				out = append(out, x)
			}
		}
	}
	return out
}

// ProviderStatus is one provider in GET /llm/providers. It never holds a
// secret: the credential is a state such as ok, missing or expired.
type ProviderStatus struct {
	Name                string        `json:"name"`
	Upstream            string        `json:"upstream"`
	Tier                int           `json:"tier"`
	State               breaker.State `json:"state"`
	LastClass           Class         `json:"last_class"`
	LastFailure         string        `json:"last_failure"`
	LastError           string        `json:"last_error,omitempty"`
	CooldownUntil       string        `json:"cooldown_until"`
	CooldownLeftSeconds float64       `json:"cooldown_left_seconds"`
	CooldownLeft        string        `json:"cooldown_left"`
	ConsecutiveFailures int           `json:"consecutive_failures"`
	Requests            uint64        `json:"requests"`
	Successes           uint64        `json:"successes"`
	Failovers           uint64        `json:"failovers"`
	Credential          string        `json:"credential"`
	CredentialReason    string        `json:"credential_reason,omitempty"`
	// Source is where the state came from: "local" (this instance) or the
	// id of the instance that shared it (share).
	Source string `json:"source"`
	// SyncedAt is when shared state was last read from storage (share).
	SyncedAt string `json:"synced_at,omitempty"`
	// ClientsCooling counts the client credentials cooling on a
	// passthrough provider, whose breakers are per client.
	ClientsCooling int `json:"clients_cooling,omitempty"`
	// Clients counts the client credentials a passthrough provider keeps
	// a breaker for (at most 10000; idle ones are dropped).
	Clients int `json:"clients,omitempty"`
	// Usage is what the provider last reported about its own capacity
	// (for a passthrough provider: its most recent client's); absent
	// until it reports.
	Usage *UsageStatus `json:"usage,omitempty"`
	// MaxUtilization is the provider's max_utilization (0: none).
	MaxUtilization float64 `json:"max_utilization,omitempty"`
	// Saturated is set while the provider is at or above its
	// max_utilization: the window and when it resets.
	Saturated *SaturationStatus `json:"saturated,omitempty"`
	// SpendUSD is what the provider's answers cost at its prices, in US
	// dollars, since this instance started (0 without prices).
	SpendUSD float64 `json:"spend_usd"`
	// Scopes are the provider's cooldowns scoped to a model family (a
	// subscription's per-model window spent): requests for that family
	// skip the provider, the others still go to it.
	Scopes []ScopeStatus `json:"scopes,omitempty"`
}

// ScopeStatus is one running cooldown scoped to a model family.
type ScopeStatus struct {
	Scope               string  `json:"scope"`
	Class               Class   `json:"class"`
	CooldownUntil       string  `json:"cooldown_until"`
	CooldownLeftSeconds float64 `json:"cooldown_left_seconds"`
	CooldownLeft        string  `json:"cooldown_left"`
	// Source is "local" or the id of the instance that shared it.
	Source string `json:"source"`
}

// scopes reports the family scopes cooling now, in classify.Families order.
func (p *Provider) scopes(now time.Time) []ScopeStatus {
	var out []ScopeStatus
	p.state.breakers.eachFamily(func(f string, b *providerBreaker) {
		s := b.Snapshot(now)
		if s.State != breaker.Open || !now.Before(s.Until) {
			return
		}
		src := "local"
		if origin, _ := b.Provenance(); origin != "" {
			src = origin
		}
		out = append(out, ScopeStatus{Scope: f, Class: s.LastClass, CooldownUntil: s.Until.UTC().Format(time.RFC3339),
			CooldownLeftSeconds: math.Round(s.Until.Sub(now).Seconds()*1000) / 1000, CooldownLeft: humanLeft(now, s.Until),
			Source: src})
	})
	return out
}

// status reports a provider as of now.
func (p *Provider) status(now time.Time) ProviderStatus {
	s := p.state.breakers.summary(now, p.passthrough)
	cred := p.credentialStatus()
	out := ProviderStatus{
		Name:                p.Name,
		Upstream:            p.Upstream,
		Tier:                p.Tier,
		State:               s.State,
		LastClass:           s.LastClass,
		LastError:           s.LastError,
		ConsecutiveFailures: s.ConsecutiveFailures,
		Requests:            s.Requests,
		Successes:           s.Successes,
		Failovers:           s.Failovers,
		Credential:          string(cred.State),
		CredentialReason:    cred.Reason,
		ClientsCooling:      s.ClientsCooling,
		Clients:             s.Clients,
		SpendUSD:            dollars(p.state.spend.Load()),
	}
	out.Source = "local"
	if origin, _ := p.state.breakers.shared().Provenance(); origin != "" {
		out.Source = origin
	}
	if p.owner != nil && p.owner.sharer != nil {
		if at := p.owner.sharer.SyncedAt(); !at.IsZero() {
			out.SyncedAt = at.UTC().Format(time.RFC3339)
		}
	}
	p.fillUsage(&out, now)
	out.Scopes = p.scopes(now)
	switch {
	case p.wrapped:
		out.Credential, out.CredentialReason = "client's", "the wrapped reverse_proxy sends the client's credential on (with its header_up changes)"
	case p.source == nil:
		out.Credential, out.CredentialReason = "none", "the client's credential is removed and none is set"
	}
	if !s.LastFailure.IsZero() {
		out.LastFailure = s.LastFailure.UTC().Format(time.RFC3339)
	}
	if s.State == breaker.Open {
		out.CooldownUntil = s.Until.UTC().Format(time.RFC3339)
		left := s.Until.Sub(now)
		out.CooldownLeftSeconds = math.Round(left.Seconds()*1000) / 1000
		out.CooldownLeft = humanLeft(now, s.Until)
	}
	return out
}

// resetProvider closes every breaker of a provider.
func (p *Provider) reset() {
	now := timeNow()
	p.state.breakers.resetAll(now)
	p.shareNow()
	p.noteManual(now)
}

// coolFor drains a provider by hand: every breaker of it opens for d.
func (p *Provider) coolFor(now time.Time, d time.Duration) {
	p.state.breakers.coolAll(now, d)
	p.shareNow()
	p.noteManual(now)
}

// shareNow shares a decision made by hand at once.
func (p *Provider) shareNow() {
	if p.owner != nil {
		p.owner.sharer.Kick()
	}
}

// UsageStatus is a provider's capacity as it last reported it, in GET
// /llm/providers.
type UsageStatus struct {
	// Windows maps a window (5h, 7d, ..., or an API key's requests,
	// tokens, input_tokens, output_tokens) to its figures.
	Windows map[string]WindowStatus `json:"windows"`
	// Binding is the window that limits the provider most now.
	Binding             string `json:"binding,omitempty"`
	Status              string `json:"status,omitempty"`
	Reset               string `json:"reset,omitempty"`
	RepresentativeClaim string `json:"representative_claim,omitempty"`
	OverageStatus       string `json:"overage_status,omitempty"`
	LearnedAt           string `json:"learned_at"`
}

// WindowStatus is one window of UsageStatus.
type WindowStatus struct {
	Utilization     *float64 `json:"utilization,omitempty"`
	Reset           string   `json:"reset,omitempty"`
	ResetsInSeconds float64  `json:"resets_in_seconds,omitempty"`
	Status          string   `json:"status,omitempty"`
	Limit           *int64   `json:"limit,omitempty"`
	Remaining       *int64   `json:"remaining,omitempty"`
}

// usageStatus reports the provider's latest capacity: for a passthrough
// provider, the most recently learned among its clients.
func (p *Provider) usageStatus(now time.Time) (*UsageStatus, *capacity.Report) {
	c := p.state.breakers.latestCapacity(now, p.passthrough)
	if c == nil {
		return nil, nil
	}
	u := &UsageStatus{
		Windows: make(map[string]WindowStatus, len(c.Windows)), Status: c.Status,
		RepresentativeClaim: c.RepresentativeClaim, OverageStatus: c.OverageStatus,
		LearnedAt: c.Learned.UTC().Format(time.RFC3339),
	}
	if !c.Reset.IsZero() {
		u.Reset = c.Reset.UTC().Format(time.RFC3339)
	}
	if w, ok := c.Binding(now); ok {
		u.Binding = w.Name
	}
	for _, w := range c.Windows {
		ws := WindowStatus{Status: w.Status}
		if w.HasUtilization {
			util := math.Round(w.Utilization*10000) / 10000
			if !w.Live(now) {
				util = 0
			}
			ws.Utilization = &util
		}
		if !w.Reset.IsZero() {
			ws.Reset = w.Reset.UTC().Format(time.RFC3339)
			ws.ResetsInSeconds = max(0, math.Round(w.Reset.Sub(now).Seconds()))
		}
		if w.HasLimit {
			limit, remaining := w.Limit, w.Remaining
			ws.Limit, ws.Remaining = &limit, &remaining
		}
		u.Windows[w.Name] = ws
	}
	return u, c
}

// fillUsage adds the provider's usage and saturation to its status.
func (p *Provider) fillUsage(out *ProviderStatus, now time.Time) {
	u, c := p.usageStatus(now)
	out.Usage = u
	out.MaxUtilization = p.maxUtil
	if s, ok := c.Saturated(now, p.maxUtil); ok {
		out.Saturated = &SaturationStatus{Window: s.Window, Until: s.Until.UTC().Format(time.RFC3339),
			LeftSeconds: math.Round(s.Until.Sub(now).Seconds())}
	}
}

// SaturationStatus says that a provider is at or above its
// max_utilization: other providers are preferred until Until.
type SaturationStatus struct {
	Window      string  `json:"window"`
	Until       string  `json:"until"`
	LeftSeconds float64 `json:"left_seconds"`
}

// StatusResponse is the body of GET /llm/providers.
type StatusResponse struct {
	Providers []ProviderStatus `json:"providers"`
}
