package budget

import (
	"fmt"
	"math"
	"strconv"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/glob"
)

// Price is what one provider charges for the models a glob matches, in US
// dollars per million tokens, which is also micro-dollars per token.
type Price struct {
	Model      string  `json:"model"`
	Input      float64 `json:"input"`
	Output     float64 `json:"output"`
	CacheRead  float64 `json:"cache_read,omitempty"`
	CacheWrite float64 `json:"cache_write,omitempty"`
}

// Usage is the tokens of one answer, as the provider reported them.
type Usage struct {
	Input, Output, CacheRead, CacheWrite int64
}

// Total is every kind of token together: what a tokens limit counts.
func (t Usage) Total() int64 {
	return nonNegative(t.Input) + nonNegative(t.Output) + nonNegative(t.CacheRead) + nonNegative(t.CacheWrite)
}

func nonNegative(n int64) int64 { return max(n, 0) }

// Bounds of a price: no model costs more than this per million tokens.
const maxPrice = 1e6

// ParsePrice reads the arguments of a price line:
//
//	MODEL_GLOB input X output Y [cache_read Z] [cache_write W]
//
// A price left out of cache_read or cache_write is taken from input the
// way Anthropic prices caching: reads at 0.1×, writes at 1.25×.
func ParsePrice(args []string) (Price, error) {
	const syntax = "price MODEL_GLOB input X output Y [cache_read Z] [cache_write W]"
	if len(args) < 5 || len(args)%2 == 0 {
		return Price{}, fmt.Errorf("price: want %s (dollars per million tokens)", syntax)
	}
	p := Price{Model: args[0], CacheRead: -1, CacheWrite: -1}
	if p.Model == "" {
		return Price{}, fmt.Errorf("price: the model glob is empty; want %s", syntax)
	}
	seen := map[string]bool{}
	for i := 1; i < len(args); i += 2 {
		name, val := args[i], args[i+1]
		var dst *float64
		switch name {
		case "input":
			dst = &p.Input
		case "output":
			dst = &p.Output
		case "cache_read":
			dst = &p.CacheRead
		case "cache_write":
			dst = &p.CacheWrite
		default:
			return Price{}, fmt.Errorf("price %s: unknown field %q; want %s", p.Model, name, syntax)
		}
		if seen[name] {
			return Price{}, fmt.Errorf("price %s: %s is given twice", p.Model, name)
		}
		seen[name] = true
		v, err := strconv.ParseFloat(val, 64)
		if err != nil || math.IsNaN(v) || v < 0 || v > maxPrice {
			return Price{}, fmt.Errorf("price %s: %s %q is not a price; write dollars per million tokens, such as 3 or 0.30", p.Model, name, val)
		}
		*dst = v
	}
	if !seen["input"] || !seen["output"] {
		return Price{}, fmt.Errorf("price %s: input and output are required; want %s", p.Model, syntax)
	}
	p.fillCache()
	return p, nil
}

// fillCache sets the cache prices left out (negative) from input.
func (p *Price) fillCache() {
	if p.CacheRead < 0 {
		p.CacheRead = p.Input * 0.1
	}
	if p.CacheWrite < 0 {
		p.CacheWrite = p.Input * 1.25
	}
}

// Validate checks a price given in JSON.
func (p Price) Validate() error {
	if p.Model == "" {
		return fmt.Errorf("price: the model glob is empty")
	}
	for _, v := range []float64{p.Input, p.Output, p.CacheRead, p.CacheWrite} {
		if math.IsNaN(v) || v < 0 || v > maxPrice {
			return fmt.Errorf("price %s: prices are dollars per million tokens, from 0 to %g", p.Model, float64(maxPrice))
		}
	}
	return nil
}

// Prices are one provider's prices, in order: the first matching glob wins.
type Prices []Price

// Cost is what t cost at the first price whose glob matches model, in
// micro-dollars; 0 when none matches (a subscription costs nothing).
func (ps Prices) Cost(model string, t Usage) int64 {
	for _, p := range ps {
		if glob.Match(p.Model, model) {
			c := float64(nonNegative(t.Input))*p.Input + float64(nonNegative(t.Output))*p.Output +
				float64(nonNegative(t.CacheRead))*p.CacheRead + float64(nonNegative(t.CacheWrite))*p.CacheWrite
			if c >= math.MaxInt64/2 {
				return math.MaxInt64 / 2
			}
			return int64(math.Round(c))
		}
	}
	return 0
}

// Dollars formats micro-dollars as dollars: "$20", "$0.42", "$1,234.50".
func Dollars(micro int64) string {
	return "$" + formatDollars(float64(micro)/1e6)
}
