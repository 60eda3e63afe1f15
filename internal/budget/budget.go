package budget

import (
	"time"
)

// Meter is one limit and the counter that keeps it.
type Meter struct {
	Limit
	Counter *Counter
}

// Budget is the limits of one scope (a client, or all traffic of a
// handler) with their counters.
type Budget struct {
	// Name is who the limits are for, as a refusal names them: a client's
	// name, or "all clients".
	Name   string
	Meters []Meter
}

// Refusal says which limit a request is over and when enough of it frees
// up for the next one.
type Refusal struct {
	Meter  Meter
	Used   int64
	FreeAt time.Time
}

// Message says the refusal in words: "alice: 2,000,000 tokens per 5h;
// more free in 12m".
func (r Refusal) Message(scope string, now time.Time) string {
	return scope + ": " + r.Meter.Limit.String() + "; more free in " + FormatWait(now, r.FreeAt)
}

// Check reports whether the scope is over any of its limits now. Over
// several, the refusal is the one that frees up last: the request would be
// refused until then anyway.
func (b *Budget) Check(now time.Time) (Refusal, bool) {
	var worst Refusal
	over := false
	for _, m := range b.Meters {
		used, freeAt := m.Counter.Check(now, m.Max)
		if freeAt.IsZero() {
			continue
		}
		if !over || freeAt.After(worst.FreeAt) {
			worst, over = Refusal{Meter: m, Used: used, FreeAt: freeAt}, true
		}
	}
	return worst, over
}

// Admit counts one request against the request limits.
func (b *Budget) Admit(now time.Time) {
	for _, m := range b.Meters {
		if m.Kind == Requests {
			m.Counter.Add(now, 1)
		}
	}
}

// Record counts an answer's tokens and cost (micro-dollars).
func (b *Budget) Record(now time.Time, tokens, cost int64) {
	for _, m := range b.Meters {
		switch m.Kind {
		case Tokens:
			m.Counter.Add(now, tokens)
		case Spend:
			m.Counter.Add(now, cost)
		}
	}
}

// Counts reports whether any limit counts tokens or spend: only then is an
// answer's usage worth recording.
func (b *Budget) Counts() bool {
	for _, m := range b.Meters {
		if m.Kind != Requests {
			return true
		}
	}
	return false
}

// Status is one limit as status reports it.
type Status struct {
	// Label names the limit: "tokens per 5h".
	Label string `json:"label"`
	Kind  Kind   `json:"kind"`
	// Limit and Used are tokens, requests, or US dollars for spend.
	Limit  float64 `json:"limit"`
	Used   float64 `json:"used"`
	Window string  `json:"window"`
	Ratio  float64 `json:"used_ratio"`
	// Text says it in words: "1,200 tokens of 2,000,000 tokens per 5h".
	Text string `json:"text"`
	// FreesUpAt is when the limit admits again while it is reached, else
	// when the oldest unit counted leaves the window; absent when the
	// window is empty.
	FreesUpAt string `json:"frees_up_at,omitempty"`
	FreesUpIn string `json:"frees_up_in,omitempty"`
	// Reached is set while the limit refuses requests.
	Reached bool `json:"reached,omitempty"`
}

// Statuses reports every limit as of now.
func (b *Budget) Statuses(now time.Time) []Status {
	out := make([]Status, 0, len(b.Meters))
	for _, m := range b.Meters {
		used, freeAt := m.Counter.Check(now, m.Max)
		reached := !freeAt.IsZero()
		if !reached && used > 0 {
			_, freeAt = m.Counter.Check(now, used)
		}
		unit := 1.0
		if m.Kind == Spend {
			unit = 1e6
		}
		s := Status{Label: m.Label(), Kind: m.Kind, Limit: float64(m.Max) / unit, Used: float64(used) / unit,
			Window: FormatWindow(m.Window), Ratio: float64(used) / float64(m.Max), Reached: reached,
			Text: m.Amount(used) + " of " + m.Limit.String()}
		if !freeAt.IsZero() {
			s.FreesUpAt = freeAt.UTC().Format(time.RFC3339)
			s.FreesUpIn = FormatWait(now, freeAt)
		}
		out = append(out, s)
	}
	return out
}
