// Package capacity reads what providers report about their own capacity
// on every response. A subscription sends the unified headers:
//
//	anthropic-ratelimit-unified-status                 allowed | allowed_warning | rejected
//	anthropic-ratelimit-unified-reset                  epoch seconds
//	anthropic-ratelimit-unified-<window>-utilization   0..1 (windows 5h, 7d, model-scoped ones)
//	anthropic-ratelimit-unified-<window>-reset         epoch seconds
//	anthropic-ratelimit-unified-<window>-status        allowed | allowed_warning | rejected
//	anthropic-ratelimit-unified-representative-claim   the window that binds
//	anthropic-ratelimit-unified-overage-status
//	anthropic-ratelimit-unified-fallback               available (a fallback model can serve)
//
// and an API key sends anthropic-ratelimit-{requests,tokens,input-tokens,
// output-tokens}-{limit,remaining,reset} (reset in RFC 3339). This package
// reads them, pure and bounded: an upstream decides the header names, so
// unknown windows beyond maxExtraWindows are ignored, numbers are clamped
// and resets are capped.
package capacity

import (
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Status values, as the unified headers spell them.
const (
	StatusAllowed        = "allowed"
	StatusAllowedWarning = "allowed_warning"
	StatusRejected       = "rejected"
)

// Bounds on what an upstream can make the proxy keep.
const (
	// maxExtraWindows is how many unified windows besides 5h and 7d are
	// kept (model-scoped ones such as 7d_opus); further names are ignored.
	maxExtraWindows = 4
	// maxWindowName bounds the length of a window name.
	maxWindowName = 24
	// saturationRecheck is how long a saturation without a known reset
	// lasts before the provider is tried again to learn more.
	saturationRecheck = 5 * time.Minute
)

// Report is what a provider last said about its own capacity.
type Report struct {
	// Learned is when the response that said it arrived.
	Learned time.Time
	// Status and Reset are the subscription's overall unified status and
	// reset; empty and zero when not sent.
	Status string
	Reset  time.Time
	// RepresentativeClaim is the window the provider says binds.
	RepresentativeClaim string
	OverageStatus       string
	// FallbackAvailable: the subscription says a fallback model can
	// serve (unified-fallback: available).
	FallbackAvailable bool
	// Windows are the subscription's windows (5h, 7d, ...) and an API
	// key's limits (requests, tokens, input_tokens, output_tokens).
	Windows []Window
}

// Window is one usage window or rate limit of a provider.
type Window struct {
	Name string
	// Utilization is the fraction of the window used, 0..1; meaningful
	// when HasUtilization. For an API-key limit it is 1-remaining/limit.
	Utilization    float64
	HasUtilization bool
	// Reset is when the window resets; zero when not said.
	Reset  time.Time
	Status string
	// Limit and Remaining are an API-key limit's own figures (HasLimit).
	Limit, Remaining int64
	HasLimit         bool
}

const (
	ratelimitPrefix = "Anthropic-Ratelimit-"
	unifiedRest     = "Unified-"
)

// Parse reads the capacity headers of one response. Resets later
// than now+maxReset are cut to it. It reports false when the response
// carries none.
func Parse(h http.Header, now time.Time, maxReset time.Duration) (Report, bool) {
	var p capacityParser
	for k, vs := range h {
		if len(vs) == 0 || len(k) <= len(ratelimitPrefix) || !strings.EqualFold(k[:len(ratelimitPrefix)], ratelimitPrefix) {
			continue
		}
		if p.c.Windows == nil {
			p.c.Windows = make([]Window, 0, 4)
		}
		p.header(k[len(ratelimitPrefix):], strings.TrimSpace(vs[0]), now, maxReset)
	}
	if !p.found {
		return Report{}, false
	}
	p.c.Learned = now
	// API-key limits: utilization from what is left
	for i := range p.c.Windows {
		w := &p.c.Windows[i]
		if w.HasLimit {
			w.Remaining = min(w.Remaining, w.Limit)
			if w.Limit > 0 {
				w.Utilization, w.HasUtilization = 1-float64(w.Remaining)/float64(w.Limit), true
			}
		}
	}
	slices.SortFunc(p.c.Windows, func(a, b Window) int {
		if ra, rb := Rank(a.Name), Rank(b.Name); ra != rb {
			return ra - rb
		}
		return strings.Compare(a.Name, b.Name)
	})
	return p.c, true
}

// Rank orders windows for display: 5h, 7d, other subscription
// windows, then an API key's limits.
func Rank(name string) int {
	switch name {
	case "5h":
		return 0
	case "7d":
		return 1
	case "requests":
		return 3
	case "tokens":
		return 4
	case "input_tokens":
		return 5
	case "output_tokens":
		return 6
	}
	return 2
}

type capacityParser struct {
	c      Report
	found  bool
	extras int
}

// header reads one header; rest is its name after anthropic-ratelimit-.
// Names are compared without regard to case, without allocating: this
// runs on every response.
func (p *capacityParser) header(rest, v string, now time.Time, maxReset time.Duration) {
	if len(rest) > len(unifiedRest) && strings.EqualFold(rest[:len(unifiedRest)], unifiedRest) {
		p.unified(rest[len(unifiedRest):], v, now, maxReset)
		return
	}
	kind, field, ok := cutLast(rest)
	if !ok {
		return
	}
	var name string
	switch {
	case strings.EqualFold(kind, "requests"):
		name = "requests"
	case strings.EqualFold(kind, "tokens"):
		name = "tokens"
	case strings.EqualFold(kind, "input-tokens"):
		name = "input_tokens"
	case strings.EqualFold(kind, "output-tokens"):
		name = "output_tokens"
	default:
		return
	}
	switch {
	case strings.EqualFold(field, "limit"), strings.EqualFold(field, "remaining"):
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return
		}
		w := p.window(name, true)
		if strings.EqualFold(field, "limit") {
			w.Limit = n
			w.HasLimit = true
		} else {
			w.Remaining = n
		}
		p.found = true
	case strings.EqualFold(field, "reset"):
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			return
		}
		p.window(name, true).Reset = capReset(t, now, maxReset)
		p.found = true
	}
}

// unified reads one anthropic-ratelimit-unified-* header (u is the rest).
func (p *capacityParser) unified(u, v string, now time.Time, maxReset time.Duration) {
	switch {
	case strings.EqualFold(u, "status"):
		if s, ok := capacityStatus(v); ok {
			p.c.Status, p.found = s, true
		}
		return
	case strings.EqualFold(u, "reset"):
		if t, ok := epochReset(v, now, maxReset); ok {
			p.c.Reset, p.found = t, true
		}
		return
	case strings.EqualFold(u, "representative-claim"):
		if validWindowName(v) {
			p.c.RepresentativeClaim, p.found = strings.ToLower(v), true
		}
		return
	case strings.EqualFold(u, "fallback"):
		if strings.EqualFold(v, "available") {
			p.c.FallbackAvailable, p.found = true, true
		}
		return
	case strings.EqualFold(u, "overage-status"):
		if s, ok := capacityStatus(v); ok {
			p.c.OverageStatus, p.found = s, true
		}
		return
	}
	name, field, ok := cutLast(u)
	if !ok || !validWindowName(name) || strings.EqualFold(name, "overage") || strings.EqualFold(name, "fallback") {
		return
	}
	name = strings.ToLower(name) // allocates nothing when it is (canonical keys keep "5h", "7d_opus")
	switch {
	case strings.EqualFold(field, "utilization"):
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || math.IsNaN(f) {
			return
		}
		if w := p.window(name, false); w != nil {
			w.Utilization, w.HasUtilization = min(max(f, 0), 1), true
			p.found = true
		}
	case strings.EqualFold(field, "reset"):
		if t, ok := epochReset(v, now, maxReset); ok {
			if w := p.window(name, false); w != nil {
				w.Reset, p.found = t, true
			}
		}
	case strings.EqualFold(field, "status"):
		if s, ok := capacityStatus(v); ok {
			if w := p.window(name, false); w != nil {
				w.Status, p.found = s, true
			}
		}
	}
}

// window returns the window named name, adding it. Beyond 5h, 7d and the
// API-key limits at most maxExtraWindows names are kept: the
// alphabetically first ones, so the choice does not depend on the order
// the headers are read in. It returns nil for a name that is not kept.
func (p *capacityParser) window(name string, apiKey bool) *Window {
	for i := range p.c.Windows {
		if p.c.Windows[i].Name == name {
			return &p.c.Windows[i]
		}
	}
	if apiKey || name == "5h" || name == "7d" {
		p.c.Windows = append(p.c.Windows, Window{Name: name})
		return &p.c.Windows[len(p.c.Windows)-1]
	}
	if p.extras < maxExtraWindows {
		p.extras++
		p.c.Windows = append(p.c.Windows, Window{Name: name})
		return &p.c.Windows[len(p.c.Windows)-1]
	}
	// full: this name replaces the alphabetically last extra window if it
	// comes before it
	last := -1
	for i, w := range p.c.Windows {
		if isExtraWindow(w.Name) && (last < 0 || w.Name > p.c.Windows[last].Name) {
			last = i
		}
	}
	if last < 0 || name > p.c.Windows[last].Name {
		return nil
	}
	p.c.Windows[last] = Window{Name: name}
	return &p.c.Windows[last]
}

func isExtraWindow(name string) bool { return Rank(name) == 2 }

// IsExtraWindow reports whether a window is a subscription window beyond
// 5h and 7d (model-scoped ones such as 7d_opus): the names an upstream
// chooses.
func IsExtraWindow(name string) bool { return isExtraWindow(name) }

// MaxExtraWindows is how many extra windows a report keeps.
const MaxExtraWindows = maxExtraWindows

// cutLast splits "7d-utilization" into "7d" and "utilization".
func cutLast(s string) (string, string, bool) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	return s[:i], s[i+1:], true
}

// validWindowName accepts short names of letters, digits, '_' and '-'.
func validWindowName(s string) bool {
	if s == "" || len(s) > maxWindowName {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i] | 0x20 // lower-case letters; digits, '_' and '-' are checked as they are
		if !(c >= 'a' && c <= 'z') && !(s[i] >= '0' && s[i] <= '9') && s[i] != '_' && s[i] != '-' {
			return false
		}
	}
	return true
}

func capacityStatus(v string) (string, bool) {
	for _, s := range [...]string{StatusAllowed, StatusAllowedWarning, StatusRejected} {
		if strings.EqualFold(v, s) {
			return s, true
		}
	}
	return "", false
}

// epochReset reads epoch seconds, capped at now+maxReset.
func epochReset(v string, now time.Time, maxReset time.Duration) (time.Time, bool) {
	secs, err := strconv.ParseFloat(v, 64)
	if err != nil || !(secs > 0) { // also rejects NaN
		return time.Time{}, false
	}
	if limit := now.Add(maxReset); secs >= float64(limit.Unix()) { // also keeps int64(secs) from overflowing
		return limit, true
	}
	return time.Unix(int64(secs), 0), true
}

func capReset(t, now time.Time, maxReset time.Duration) time.Time {
	if limit := now.Add(maxReset); t.After(limit) {
		return limit
	}
	return t
}

// Live reports whether the window's figures still hold at now: past its
// reset the window has started over and its utilization says nothing.
func (w Window) Live(now time.Time) bool {
	return w.Reset.IsZero() || now.Before(w.Reset)
}

// Binding returns the window that limits the provider most at now: the
// highest utilization among live windows (ties: the later reset, which
// binds longer). It reports false when no window has a utilization.
func (c *Report) Binding(now time.Time) (Window, bool) {
	var best Window
	found := false
	for _, w := range c.Windows {
		if !w.HasUtilization {
			continue
		}
		if !w.Live(now) {
			w.Utilization = 0
		}
		if !found || w.Utilization > best.Utilization ||
			(w.Utilization == best.Utilization && w.Reset.After(best.Reset)) {
			best, found = w, true
		}
	}
	return best, found
}

// Saturation is a provider at or above its max_utilization: a preference
// to use others, never a cooldown.
type Saturation struct {
	Window string
	Until  time.Time
}

// Saturated reports whether some window is at or above maxUtil (0..1) at
// now, or says rejected, and until when: the latest reset among those
// windows, or Learned+saturationRecheck when no reset is known. When a
// provider sends no utilization at all, an allowed_warning status counts.
// maxUtil <= 0 never saturates.
func (c *Report) Saturated(now time.Time, maxUtil float64) (Saturation, bool) {
	if maxUtil <= 0 || c == nil {
		return Saturation{}, false
	}
	var s Saturation
	anyUtilization := false
	for _, w := range c.Windows {
		anyUtilization = anyUtilization || w.HasUtilization
		if !w.Live(now) {
			continue
		}
		if (w.HasUtilization && w.Utilization >= maxUtil) || w.Status == StatusRejected {
			until := w.Reset
			if until.IsZero() {
				until = c.Learned.Add(saturationRecheck)
			}
			if until.After(now) && until.After(s.Until) {
				s = Saturation{Window: w.Name, Until: until}
			}
		}
	}
	if s.Window == "" && !anyUtilization && (c.Status == StatusAllowedWarning || c.Status == StatusRejected) {
		until := c.Reset
		if until.IsZero() || !until.After(now) {
			until = c.Learned.Add(saturationRecheck)
		}
		if until.After(now) {
			s = Saturation{Window: "unified", Until: until}
		}
	}
	return s, s.Window != ""
}

// ExhaustedUntil is when a provider whose windows are used up (status
// rejected, or utilization 1) admits work again by its own account; zero
// when none is.
func (c *Report) ExhaustedUntil(now time.Time) time.Time {
	if c == nil {
		return time.Time{}
	}
	var until time.Time
	for _, w := range c.Windows {
		if w.Live(now) && !w.Reset.IsZero() &&
			(w.Status == StatusRejected || (w.HasUtilization && w.Utilization >= 1)) && w.Reset.After(until) {
			until = w.Reset
		}
	}
	if c.Status == StatusRejected && c.Reset.After(now) && c.Reset.After(until) {
		until = c.Reset
	}
	return until
}
