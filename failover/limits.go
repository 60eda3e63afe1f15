package failover

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// Limits on tokens, requests and spend (internal/budget holds the pure
// part): per client, or for all of a handler's traffic together. They are
// checked before any provider is asked; an answer's usage is counted once
// it is known, so a request admitted under a limit may end over it.

// Limit is at most Amount of Kind over any rolling Window.
type Limit struct {
	// Kind is what is counted: `tokens` (input, output and cache tokens,
	// as the provider reported them), `requests` (model calls admitted) or
	// `spend` (tokens at the serving provider's prices).
	Kind string `json:"kind"`

	// Amount is the most tokens or requests (a whole number), or US
	// dollars for spend, the window may hold.
	Amount float64 `json:"amount"`

	// Window is how far back the limit looks, from 1m to 31d. It rolls:
	// what was counted leaves it one sixtieth of the window at a time, so
	// no boundary ever lets twice the amount through.
	Window caddy.Duration `json:"window"`
}

// Price is what a provider charges for the models a glob matches, in US
// dollars per million tokens. A provider without prices (a subscription)
// costs nothing.
type Price struct {
	// Model is a glob (`*` matches any run) of the model sent to the
	// provider; a provider's first matching price applies.
	Model string `json:"model"`
	// Input and Output are the prices of input and output tokens.
	Input  float64 `json:"input"`
	Output float64 `json:"output"`
	// CacheRead is the price of cache read tokens. Default: 0.1 × Input.
	CacheRead *float64 `json:"cache_read,omitempty"`
	// CacheWrite is the price of cache creation tokens. Default: 1.25 ×
	// Input.
	CacheWrite *float64 `json:"cache_write,omitempty"`
}

// toBudget converts the limit, checking it.
func (l Limit) toBudget() (budget.Limit, error) {
	b := budget.Limit{Kind: budget.Kind(l.Kind), Window: time.Duration(l.Window)}
	switch b.Kind {
	case budget.Spend:
		b.Max = int64(math.Round(l.Amount * 1e6))
	case budget.Tokens, budget.Requests:
		if l.Amount != math.Trunc(l.Amount) {
			return b, fmt.Errorf("limit %s: %v is not a whole number", l.Kind, l.Amount)
		}
		b.Max = int64(l.Amount)
	}
	if math.IsNaN(l.Amount) || l.Amount > 1<<53 {
		b.Max = 0
	}
	return b, b.Validate()
}

// toBudget converts the price, checking it.
func (p Price) toBudget() (budget.Price, error) {
	b := budget.Price{Model: p.Model, Input: p.Input, Output: p.Output, CacheRead: p.Input * 0.1, CacheWrite: p.Input * 1.25}
	if p.CacheRead != nil {
		b.CacheRead = *p.CacheRead
	}
	if p.CacheWrite != nil {
		b.CacheWrite = *p.CacheWrite
	}
	return b, b.Validate()
}

// priceFrom is the config form of a parsed price line.
func priceFrom(b budget.Price) Price {
	return Price{Model: b.Model, Input: b.Input, Output: b.Output, CacheRead: &b.CacheRead, CacheWrite: &b.CacheWrite}
}

// limitFrom is the config form of a parsed limit line.
func limitFrom(b budget.Limit) Limit {
	l := Limit{Kind: string(b.Kind), Amount: float64(b.Max), Window: caddy.Duration(b.Window)}
	if b.Kind == budget.Spend {
		l.Amount = float64(b.Max) / 1e6
	}
	return l
}

// limitCounter is a counter in limitCounters, kept across reloads.
type limitCounter struct{ *budget.Counter }

// Destruct implements caddy.Destructor.
func (limitCounter) Destruct() error { return nil }

// limitCounters keeps the limits' counts across config reloads, keyed by
// scope, kind and window: a changed amount keeps its count, a changed
// window starts afresh.
var limitCounters = caddy.NewUsagePool()

// handlerScope names the handler's own limits among the counters: one per
// set of providers, as breakers are shared.
func (h *Handler) handlerScope() string { return "handler:" + h.shareKey() }

// newBudget sets up the counters of a scope's limits; nil without limits.
func newBudget(name, scope string, limits []Limit) (*budget.Budget, []string, error) {
	if len(limits) == 0 {
		return nil, nil, nil
	}
	b := &budget.Budget{Name: name}
	keys := make([]string, 0, len(limits))
	for _, l := range limits {
		bl, err := l.toBudget()
		if err != nil {
			return nil, keys, fmt.Errorf("%s: %v", name, err)
		}
		key := scope + ":" + string(bl.Kind) + ":" + strconv.FormatInt(int64(bl.Window/time.Second), 10)
		v, _, err := limitCounters.LoadOrNew(key, func() (caddy.Destructor, error) {
			return limitCounter{budget.NewCounter(key, bl.Window)}, nil
		})
		if err != nil {
			return nil, keys, err
		}
		keys = append(keys, key)
		b.Meters = append(b.Meters, budget.Meter{Limit: bl, Counter: v.(limitCounter).Counter})
	}
	return b, keys, nil
}

// provisionLimits sets up the prices of the providers and the limits of
// the handler and its clients. Runs after provisionClients.
func (h *Handler) provisionLimits() error {
	for _, p := range h.Providers {
		p.prices = p.prices[:0]
		for _, pr := range p.Prices {
			b, err := pr.toBudget()
			if err != nil {
				return fmt.Errorf("provider %s: %v; write price MODEL_GLOB input X output Y (dollars per million tokens)", p.Name, err)
			}
			p.prices = append(p.prices, b)
		}
	}
	var err error
	var keys []string
	if h.budget, keys, err = newBudget("all clients", h.handlerScope(), h.Limits); err != nil {
		h.limitKeys = append(h.limitKeys, keys...)
		return err
	}
	h.limitKeys = append(h.limitKeys, keys...)
	for _, c := range h.Clients {
		if c.budget, keys, err = newBudget(c.Name, "client:"+c.Name, c.Limits); err != nil {
			h.limitKeys = append(h.limitKeys, keys...)
			return err
		}
		h.limitKeys = append(h.limitKeys, keys...)
	}
	return nil
}

// cleanupLimits releases the handler's counters.
func (h *Handler) cleanupLimits() {
	for _, k := range h.limitKeys {
		_, _ = limitCounters.Delete(k)
	}
	h.limitKeys = nil
}

// limitedCounters are every counter of the handler's limits.
func (h *Handler) limitedCounters() []*budget.Counter {
	var out []*budget.Counter
	for _, b := range h.budgets() {
		for _, m := range b.Meters {
			out = append(out, m.Counter)
		}
	}
	return out
}

// budgets are the handler's budgets: its own, then its clients'.
func (h *Handler) budgets() []*budget.Budget {
	var out []*budget.Budget
	if h.budget != nil {
		out = append(out, h.budget)
	}
	for _, c := range h.Clients {
		if c.budget != nil {
			out = append(out, c.budget)
		}
	}
	return out
}

// admitLimits checks the handler's and the client's limits before any
// provider is asked, and counts the request when it is admitted. Over a
// limit it answers 429 itself and returns false. A client without limits
// on a handler without limits costs nothing here.
func (h *Handler) admitLimits(w http.ResponseWriter, r *http.Request, c *Client) bool {
	var cb *budget.Budget
	if c != nil {
		cb = c.budget
	}
	if h.budget == nil && cb == nil {
		return true
	}
	if kindOfPath(r.URL.Path) != kindModel {
		return true
	}
	now := timeNow()
	if h.Share != nil && h.Share.FailClosed && h.limitSync != nil && !h.limitSync.Healthy() {
		w.Header().Set("Retry-After", strconv.Itoa(max(int(h.limitSync.Interval.Seconds()), 1)))
		writeAnthropicError(w, http.StatusServiceUnavailable, "overloaded_error",
			"llm_failover: limits cannot be checked while the shared counter store (redis) is unreachable (share fail_closed)")
		return false
	}
	for _, b := range [2]*budget.Budget{h.budget, cb} {
		if b == nil {
			continue
		}
		if ref, over := b.Check(now); over {
			h.refuseOverLimit(w, b, ref, c, now)
			return false
		}
	}
	if h.budget != nil {
		h.budget.Admit(now)
	}
	if cb != nil {
		cb.Admit(now)
	}
	return true
}

// refuseOverLimit answers a request over a limit: 429 rate_limit_error
// naming the limit, with Retry-After until enough of the window frees up
// (x-should-retry false past a minute: the client should tell its user
// rather than wait).
func (h *Handler) refuseOverLimit(w http.ResponseWriter, b *budget.Budget, ref budget.Refusal, c *Client, now time.Time) {
	msg := ref.Message(b.Name, now)
	if ce := h.logger.Check(zap.InfoLevel, "request over a limit"); ce != nil {
		ce.Write(zap.String("client", c.label()), zap.String("limit", msg))
	}
	setRetryHeaders(w.Header(), now, ref.FreeAt)
	writeAnthropicError(w, http.StatusTooManyRequests, "rate_limit_error", "llm_failover: "+msg)
}

// countSpend counts an answer's usage against the limits and its cost
// toward the provider's and the client's spend.
func (h *Handler) countSpend(p *Provider, model string, c *Client, u streaminspect.Usage) {
	bu := budget.Usage{Input: u.InputTokens, Output: u.OutputTokens, CacheRead: u.CacheReadTokens, CacheWrite: u.CacheCreationTokens}
	var cost int64
	if len(p.prices) > 0 {
		cost = budget.Prices(p.prices).Cost(model, bu)
		if cost > 0 {
			p.state.spend.Add(cost)
			if c != nil {
				c.usage.spend.Add(cost)
			}
		}
	}
	var cb *budget.Budget
	if c != nil {
		cb = c.budget
	}
	if h.budget == nil && cb == nil {
		return
	}
	now, tokens := timeNow(), bu.Total()
	if h.budget != nil {
		h.budget.Record(now, tokens, cost)
	}
	if cb != nil {
		cb.Record(now, tokens, cost)
	}
}

// dollars turns micro-dollars into dollars for status.
func dollars(micro int64) float64 { return float64(micro) / 1e6 }

// shareLimits makes the limits' counts the fleet's when the handler shares
// over Redis: a syncer sends this instance's counts and reads the fleet's
// every read_interval, never on the request path. With storage sharing
// counts stay per instance.
func (h *Handler) shareLimits(ctx context.Context) error {
	if h.Share == nil || h.Share.Redis == "" || len(h.budgets()) == 0 {
		return nil
	}
	store, err := share.NewRedisCounters(h.shareCfg)
	if err != nil {
		return err
	}
	prefix := h.Share.Prefix
	if prefix == "" {
		prefix = share.DefaultRedisPrefix
	}
	interval := time.Duration(h.Share.ReadInterval)
	if interval <= 0 {
		interval = share.DefaultInterval
	}
	timeout := time.Duration(h.Share.Timeout)
	if timeout <= 0 {
		timeout = share.DefaultRedisTimeout
	}
	logger := h.logger.Named("limits")
	failClosed := h.Share.FailClosed
	h.limitSync = &budget.Syncer{
		Store:    store,
		Prefix:   prefix + ":limit:",
		Interval: interval,
		Timeout:  timeout,
		Now:      timeNow,
		Counters: h.limitedCounters,
		Down: func(err error) {
			if failClosed {
				logger.Error("redis is unreachable: requests under limits are refused until it answers (fail_closed)", zap.Error(err))
				return
			}
			logger.Warn("redis is unreachable: limits are counted on this instance alone until it answers", zap.Error(err))
		},
		Up: func() { logger.Info("redis reachable again: limits are the fleet's again") },
	}
	// the first read, so a restarted instance knows the fleet's counts
	h.limitSync.Round(ctx)
	go func() {
		defer store.Close()
		h.limitSync.Run(ctx)
	}()
	return nil
}

// liveHandlerBudgets are the handler-level budgets of the running config,
// one per scope; the newest config's wins.
func liveHandlerBudgets() []*budget.Budget {
	type scoped struct {
		scope string
		b     *budget.Budget
	}
	var out []*budget.Budget
	for _, s := range liveByName(func(h *Handler) []scoped {
		if h.budget == nil {
			return nil
		}
		return []scoped{{h.handlerScope(), h.budget}}
	}, func(s scoped) string { return s.scope }) {
		out = append(out, s.b)
	}
	return out
}
