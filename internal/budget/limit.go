// Package budget holds the pure core of spending limits: price tables,
// limits on tokens, requests and spend over rolling windows, the counters
// that keep them (rings of buckets, optionally synced with a shared
// store), and the words that describe them. It knows nothing of Caddy or
// of the handler.
package budget

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// Kind is what a limit counts.
type Kind string

// The kinds of limits.
const (
	Tokens   Kind = "tokens"   // input + output + cache tokens, as reported
	Requests Kind = "requests" // requests admitted
	Spend    Kind = "spend"    // tokens × the serving provider's prices
)

// Bounds of a limit.
const (
	MinWindow = time.Minute
	MaxWindow = 31 * 24 * time.Hour
	// maxAmount bounds a limit's amount in its unit (tokens, requests,
	// micro-dollars), far below where sums could overflow.
	maxAmount = int64(1) << 53
)

// Limit is at most Max of Kind over any Window-long stretch. Max is in
// the kind's unit: tokens, requests, or micro-dollars for spend.
type Limit struct {
	Kind   Kind
	Max    int64
	Window time.Duration
}

// ParseLimit reads the arguments of a limit line:
//
//	tokens|requests|spend N per DURATION
//
// N is a whole number of tokens or requests, or dollars for spend (cents
// allowed). DURATION is 1m to 31d: 90m, 5h, 1d, 30d, 1h30m.
func ParseLimit(args []string) (Limit, error) {
	const syntax = "limit tokens|requests|spend N per DURATION"
	if len(args) != 4 || args[2] != "per" {
		return Limit{}, fmt.Errorf("limit: want %s, such as `limit tokens 2000000 per 5h`", syntax)
	}
	l := Limit{Kind: Kind(args[0])}
	n := strings.ReplaceAll(strings.ReplaceAll(args[1], "_", ""), ",", "")
	switch l.Kind {
	case Tokens, Requests:
		v, err := strconv.ParseInt(n, 10, 64)
		if err != nil || v < 1 || v > maxAmount {
			return Limit{}, fmt.Errorf("limit %s: %q is not a whole number from 1 to %d", l.Kind, args[1], maxAmount)
		}
		l.Max = v
	case Spend:
		v, err := strconv.ParseFloat(strings.TrimPrefix(n, "$"), 64)
		if err != nil || math.IsNaN(v) || v < 0.000001 || v*1e6 > float64(maxAmount) {
			return Limit{}, fmt.Errorf("limit spend: %q is not an amount of dollars, such as 20 or 2.50", args[1])
		}
		l.Max = int64(math.Round(v * 1e6))
	default:
		return Limit{}, fmt.Errorf("limit: unknown kind %q; want tokens, requests or spend (%s)", args[0], syntax)
	}
	w, err := ParseWindow(args[3])
	if err != nil {
		return Limit{}, err
	}
	l.Window = w
	return l, nil
}

// Validate checks a limit given in JSON.
func (l Limit) Validate() error {
	switch l.Kind {
	case Tokens, Requests, Spend:
	default:
		return fmt.Errorf("limit: unknown kind %q; want tokens, requests or spend", l.Kind)
	}
	if l.Max < 1 || l.Max > maxAmount {
		return fmt.Errorf("limit %s: the amount must be from 1 to %d", l.Kind, maxAmount)
	}
	if l.Window < MinWindow || l.Window > MaxWindow {
		return fmt.Errorf("limit %s: the window must be from 1m to 31d, such as 5h or 1d", l.Kind)
	}
	return nil
}

// ParseWindow reads a window: Go's duration syntax (90m, 5h, 1h30m) or a
// whole number of days (1d, 30d), from 1m to 31d.
func ParseWindow(s string) (time.Duration, error) {
	var d time.Duration
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 1 || n > 31 {
			return 0, fmt.Errorf("limit window %q: write a duration from 1m to 31d, such as 5h or 7d", s)
		}
		d = time.Duration(n) * 24 * time.Hour
	} else {
		v, err := time.ParseDuration(s)
		if err != nil {
			return 0, fmt.Errorf("limit window %q: write a duration from 1m to 31d, such as 5h or 7d", s)
		}
		d = v
	}
	if d < MinWindow || d > MaxWindow {
		return 0, fmt.Errorf("limit window %q: must be from 1m to 31d", s)
	}
	return d, nil
}

// String says the limit in words: "2,000,000 tokens per 5h", "$20 per 1d".
func (l Limit) String() string {
	return l.Amount(l.Max) + " per " + FormatWindow(l.Window)
}

// Amount says n of the limit's unit: "2,000,000 tokens", "600 requests",
// "$20".
func (l Limit) Amount(n int64) string {
	switch l.Kind {
	case Spend:
		return Dollars(n)
	case Requests:
		return humanize.Comma(n) + " requests"
	default:
		return humanize.Comma(n) + " tokens"
	}
}

// Label is the limit's short name in metrics and status: "tokens per 5h".
func (l Limit) Label() string { return string(l.Kind) + " per " + FormatWindow(l.Window) }

// FormatWindow writes a duration the way a limit's window is written:
// 30d, 5h, 1h30m, 90s.
func FormatWindow(d time.Duration) string {
	const day = 24 * time.Hour
	var b strings.Builder
	if d >= day {
		b.WriteString(strconv.FormatInt(int64(d/day), 10) + "d")
		d %= day
	}
	if d >= time.Hour {
		b.WriteString(strconv.FormatInt(int64(d/time.Hour), 10) + "h")
		d %= time.Hour
	}
	if d >= time.Minute {
		b.WriteString(strconv.FormatInt(int64(d/time.Minute), 10) + "m")
		d %= time.Minute
	}
	if d > 0 || b.Len() == 0 {
		b.WriteString(strconv.FormatInt(int64((d+time.Second-1)/time.Second), 10) + "s")
	}
	return b.String()
}

// FormatWait says how long until t, rounded up to the unit that matters:
// 45s, 12m, 2h5m, 3d4h.
func FormatWait(now, t time.Time) string {
	d := t.Sub(now)
	switch {
	case d <= 0:
		return "0s"
	case d < time.Minute:
		return FormatWindow(d.Round(time.Second))
	case d < 24*time.Hour:
		return FormatWindow(ceil(d, time.Minute))
	default:
		return FormatWindow(ceil(d, time.Hour))
	}
}

func ceil(d, unit time.Duration) time.Duration { return (d + unit - 1) / unit * unit }

// formatDollars writes dollars with thousands separators and cents when
// there are any: 20, 0.42, 1,234.50; below a cent, 0.0042.
func formatDollars(v float64) string {
	if v > 0 && v < 0.01 {
		return strconv.FormatFloat(v, 'g', 2, 64)
	}
	cents := int64(math.Round(v * 100))
	if cents%100 == 0 {
		return humanize.Comma(cents / 100)
	}
	return humanize.Comma(cents/100) + fmt.Sprintf(".%02d", cents%100)
}
