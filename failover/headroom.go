package failover

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Usage-aware routing: what providers report about their own capacity
// (internal/capacity) is kept per breaker, so per client for passthrough
// providers, and used to move before a limit hits (max_utilization), to
// place new conversations where there is headroom (policy spread), and to
// give an honest Retry-After when nothing admits.

// validateUsageRouting checks the usage-routing options, so JSON config
// gets the checks the Caddyfile parser makes.
func (h *Handler) validateUsageRouting() error {
	if err := validMaxUtilization(h.MaxUtilization); err != nil {
		return err
	}
	for _, p := range h.Providers {
		if err := validMaxUtilization(p.MaxUtilization); err != nil {
			return fmt.Errorf("provider %s: %v", p.Name, err)
		}
	}
	if h.AffinityHeader != "" && !validHeaderName(h.AffinityHeader) {
		return fmt.Errorf("affinity_header: %q is not a header name: write one such as X-Conversation-Id", h.AffinityHeader)
	}
	return nil
}

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
func (h *Handler) learnCapacity(a *attempt, hdr http.Header, now time.Time) {
	if a.b == nil || hdr == nil {
		return
	}
	c, ok := capacity.Parse(hdr, now, h.capacityMaxReset())
	if !ok {
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

// headroomOrder reorders the candidate positions of a spread tier (in
// rotation order) by headroom: lowest utilization of the binding window
// first, ties to the window that resets soonest (its unused quota is lost
// first). When a candidate reports nothing the rotation order stays.
// Insertion sort: tiers are small and this allocates nothing.
func (h *Handler) headroomOrder(tier *providerTier, order []int, req *llmRequest, now time.Time) {
	var keys [maxSortedTier]headroom
	if len(order) > len(keys) {
		return
	}
	for j, k := range order {
		c := h.Providers[tier.indices[k]].capacityFor(req.clientKey)
		if c == nil {
			return
		}
		w, ok := c.Binding(now)
		if !ok {
			return
		}
		keys[j] = headroom{util: w.Utilization, reset: w.Reset}
	}
	for j := 1; j < len(order); j++ {
		for m := j; m > 0 && keys[m].less(keys[m-1]); m-- {
			keys[m], keys[m-1] = keys[m-1], keys[m]
			order[m], order[m-1] = order[m-1], order[m]
		}
	}
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

// formatUsage is the usage column of `caddy llm`:
// "5h 87% · resets in 1h12m | 7d 41%". The binding window says when it
// resets.
func formatUsage(u *UsageStatus) string {
	if u == nil || len(u.Windows) == 0 {
		if u != nil && u.Status != "" {
			return u.Status
		}
		return "-"
	}
	names := make([]string, 0, len(u.Windows))
	for name := range u.Windows {
		names = append(names, name)
	}
	slices.SortFunc(names, func(a, b string) int {
		if ra, rb := capacity.Rank(a), capacity.Rank(b); ra != rb {
			return ra - rb
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, 0, len(names))
	for _, name := range names {
		w := u.Windows[name]
		if w.Utilization == nil {
			continue
		}
		s := fmt.Sprintf("%s %d%%", name, int(math.Round(*w.Utilization*100)))
		if name == u.Binding && w.ResetsInSeconds > 0 {
			s += " · resets in " + compactDuration(time.Duration(w.ResetsInSeconds)*time.Second)
		}
		parts = append(parts, s)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " | ")
}

// compactDuration writes a duration as 3d4h, 1h12m, 4m or 30s: two units
// at most, which is what a reset hours away needs.
func compactDuration(d time.Duration) string {
	d = d.Round(time.Second)
	switch {
	case d >= 24*time.Hour:
		days, hours := d/(24*time.Hour), (d%(24*time.Hour))/time.Hour
		if hours == 0 {
			return strconv.Itoa(int(days)) + "d"
		}
		return fmt.Sprintf("%dd%dh", days, hours)
	case d >= time.Hour:
		hours, mins := d/time.Hour, (d%time.Hour)/time.Minute
		if mins == 0 {
			return strconv.Itoa(int(hours)) + "h"
		}
		return fmt.Sprintf("%dh%dm", hours, mins)
	case d >= time.Minute:
		return strconv.Itoa(int(d/time.Minute)) + "m"
	}
	return strconv.Itoa(int(d/time.Second)) + "s"
}

// utilizationCollector reports providers' utilization at scrape time, so
// a window that is no longer reported disappears. Its window label comes
// from a capped set (capacity.Parse keeps a few names beyond the known
// ones).
type utilizationCollector struct{ desc *prometheus.Desc }

func newUtilizationCollector() *utilizationCollector {
	return &utilizationCollector{desc: prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "utilization_ratio"),
		"Utilization of a provider's usage window (0-1) as the provider last reported it; for a passthrough provider, the highest among its clients.",
		[]string{"provider", "window"}, nil)}
}

func (c *utilizationCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *utilizationCollector) Collect(ch chan<- prometheus.Metric) {
	now := timeNow()
	for _, p := range liveProviders() {
		byWindow := make(map[string]float64)
		p.state.breakers.eachCapacity(now, p.passthrough, func(cp *capacity.Report) {
			for _, w := range cp.Windows {
				if !w.HasUtilization {
					continue
				}
				util := w.Utilization
				if !w.Live(now) {
					util = 0
				}
				if old, ok := byWindow[w.Name]; !ok || util > old {
					byWindow[w.Name] = util
				}
			}
		})
		for w, util := range byWindow {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, util, p.Name, w)
		}
	}
}

// parseMaxUtilization reads `max_utilization <percent>` (90% or 90) as a
// fraction.
func parseMaxUtilization(d *caddyfile.Dispenser) (float64, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	v := d.Val()
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || !(f > 0 && f <= 100) {
		return 0, d.Errf("max_utilization: want a percent above 0 and at most 100, such as 90%%, got %q", v)
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return f / 100, nil
}

// validMaxUtilization checks a max_utilization fraction from JSON config.
func validMaxUtilization(f float64) error {
	if f < 0 || f > 1 || math.IsNaN(f) {
		return fmt.Errorf("max_utilization: want a fraction in (0, 1], got %v", f)
	}
	return nil
}

// parseAffinity reads `affinity header <Name>` or `affinity off`.
func (h *Handler) parseAffinity(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		h.AffinityOff = true
	case len(args) == 2 && args[0] == "header" && validHeaderName(args[1]):
		h.AffinityHeader = args[1]
	default:
		return d.Err("affinity: want `affinity header <Header-Name>` or `affinity off`")
	}
	return nil
}
