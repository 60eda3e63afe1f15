package failover

import (
	"errors"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/capacity"
)

// metrics are registered in Caddy's own registry (ctx.GetMetricsRegistry),
// so they appear at the admin endpoint's /metrics with no extra setup. They
// are created once and registered into each config's registry, the way
// reverse_proxy does it.
var metrics struct {
	once          sync.Once
	attempts      *prometheus.CounterVec
	failovers     *prometheus.CounterVec
	firstEvent    *prometheus.HistogramVec
	firstContent  *prometheus.HistogramVec
	tokens        *prometheus.CounterVec
	stateExporter *breakerCollector
	utilization   *utilizationCollector
	limits        *limitCollector
}

const metricsNamespace, metricsSubsystem = "caddy", "llm"

func initMetrics() {
	metrics.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "attempts_total",
		Help: "Attempts sent to a provider, by outcome (success or the failure class) and client (empty without client keys).",
	}, []string{"provider", "outcome", "client"})
	metrics.failovers = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "failovers_total",
		Help: "Requests that left a provider for the next one, by the provider left and the class of its failure.",
	}, []string{"provider", "class"})
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
	metrics.firstEvent = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "time_to_first_event_seconds",
		Help: "Time from response headers to the first SSE event of a stream.", Buckets: buckets,
	}, []string{"provider"})
	metrics.firstContent = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "time_to_first_content_seconds",
		Help: "Time from response headers to the first content event of a stream.", Buckets: buckets,
	}, []string{"provider"})
	metrics.tokens = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: metricsNamespace, Subsystem: metricsSubsystem, Name: "tokens_total",
		Help: "Tokens reported by providers' usage, by provider, model (as sent upstream) and kind (input, output, cache_read, cache_creation) and client (empty without client keys).",
	}, []string{"provider", "model", "kind", "client"})
	metrics.utilization = newUtilizationCollector()
	metrics.limits = &limitCollector{desc: prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "limit_used_ratio"),
		"How full a limit's rolling window is (1: reached), by client (empty for the handler's own limits) and limit (kind per window, as configured).",
		[]string{"client", "limit"}, nil)}
	metrics.stateExporter = &breakerCollector{
		state: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "breaker_state"),
			"Breaker state per provider: 0 closed, 1 half-open, 2 open.", []string{"provider"}, nil),
		cooldown: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "cooldown_seconds_left"),
			"Seconds until a cooling provider admits a request again; 0 when closed.", []string{"provider"}, nil),
		scope: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "scope_cooldown_seconds_left"),
			"Seconds until a provider admits requests for a model family again, per cooling family scope.", []string{"provider", "scope"}, nil),
	}
}

func registerMetrics(reg *prometheus.Registry) error {
	metrics.once.Do(initMetrics)
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metrics.attempts, metrics.failovers, metrics.firstEvent,
		metrics.firstContent, metrics.tokens, metrics.stateExporter, metrics.utilization, metrics.limits} {
		if err := reg.Register(c); err != nil {
			var already prometheus.AlreadyRegisteredError
			if !errors.As(err, &already) {
				return err
			}
		}
	}
	return nil
}

// breakerCollector reports breaker state at scrape time, from the live
// providers, so a gauge never goes stale.
type breakerCollector struct {
	state, cooldown, scope *prometheus.Desc
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.cooldown
	ch <- c.scope
}

func (c *breakerCollector) Collect(ch chan<- prometheus.Metric) {
	now := timeNow()
	for _, p := range liveProviders() {
		s := p.state.breakers.shared().Snapshot(now)
		var state, left float64
		switch s.State {
		case breaker.HalfOpen:
			state = 1
		case breaker.Open:
			state = 2
			left = s.Until.Sub(now).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, state, p.Name)
		ch <- prometheus.MustNewConstMetric(c.cooldown, prometheus.GaugeValue, left, p.Name)
		p.state.breakers.eachFamily(func(f string, b *providerBreaker) {
			if fs := b.Snapshot(now); fs.State == breaker.Open && now.Before(fs.Until) {
				ch <- prometheus.MustNewConstMetric(c.scope, prometheus.GaugeValue, fs.Until.Sub(now).Seconds(), p.Name, f)
			}
		})
	}
}

func observeTiming(provider string, g *gate) {
	if g.sawEvent {
		metrics.firstEvent.WithLabelValues(provider).Observe(g.firstEvent.Seconds())
	}
	if g.sawContent {
		metrics.firstContent.WithLabelValues(provider).Observe(g.firstContent.Seconds())
	}
}

// utilizationCollector reports providers' utilization at scrape time, so
// a window that is no longer reported disappears. One series per provider
// and window: 5h, 7d, an API key's limits, and the alphabetically first
// capacity.MaxExtraWindows other names among all its breakers (each
// client of a passthrough provider may report names of its own; the
// per-client detail is in status).
type utilizationCollector struct{ desc *prometheus.Desc }

func newUtilizationCollector() *utilizationCollector {
	return &utilizationCollector{desc: prometheus.NewDesc(
		prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "utilization_ratio"),
		"Utilization of a provider's usage window (0-1) as the provider last reported it; for a passthrough provider, the highest among its clients. Windows: 5h, 7d, API-key limits and at most 4 others per provider.",
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
					keepExtraWindows(byWindow)
				}
			}
		})
		for w, util := range byWindow {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, util, p.Name, w)
		}
	}
}

// keepExtraWindows drops from byWindow the extra windows past the
// alphabetically first capacity.MaxExtraWindows.
func keepExtraWindows(byWindow map[string]float64) {
	extras, last := 0, ""
	for name := range byWindow {
		if capacity.IsExtraWindow(name) {
			extras++
			if name > last {
				last = name
			}
		}
	}
	if extras > capacity.MaxExtraWindows {
		delete(byWindow, last)
	}
}

// limitCollector reports how full each configured limit is at scrape
// time; its labels come from the configuration only.
type limitCollector struct{ desc *prometheus.Desc }

func (c *limitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *limitCollector) Collect(ch chan<- prometheus.Metric) {
	now := timeNow()
	// one series per client and label: two limits of one kind and window,
	// or two handlers' own limits, report the first
	seen := make(map[[2]string]bool)
	emit := func(client string, b *budget.Budget) {
		for _, st := range b.Statuses(now) {
			if k := [2]string{client, st.Label}; !seen[k] {
				seen[k] = true
				ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, st.Ratio, client, st.Label)
			}
		}
	}
	for _, b := range liveHandlerBudgets() {
		emit("", b)
	}
	for _, cl := range liveClients() {
		if cl.budget != nil {
			emit(cl.Name, cl.budget)
		}
	}
}

// Bounds of the model label of caddy_llm_tokens_total: the model is
// whatever the client sent, so without a bound every new name would be a
// new series for as long as the process runs.
const (
	// maxModelLabels is how many distinct model names a provider gets as
	// labels beyond the models its mappings send.
	maxModelLabels = 32
	// maxModelLabelLen cuts a longer model name (at a UTF-8 boundary).
	maxModelLabelLen = 64
	// otherModelLabel stands for every model past the first
	// maxModelLabels.
	otherModelLabel = "other"
)

// modelLabelSet is the set of model labels one provider has used.
type modelLabelSet struct {
	mu     sync.RWMutex
	mapped map[string]bool // models the provider's mappings send: always labels
	seen   map[string]bool // the first maxModelLabels others
}

// modelLabelSets holds a set per provider name. Like the metrics, it
// outlives a config reload; provider names come from the configuration.
var modelLabelSets sync.Map // provider name -> *modelLabelSet

func modelLabelsFor(provider string) *modelLabelSet {
	if s, ok := modelLabelSets.Load(provider); ok {
		return s.(*modelLabelSet)
	}
	s, _ := modelLabelSets.LoadOrStore(provider, &modelLabelSet{mapped: map[string]bool{}, seen: map[string]bool{}})
	return s.(*modelLabelSet)
}

// allowMappedModels makes the models a provider's mappings send labels of
// their own, however many other names clients send.
func allowMappedModels(provider string, rules []ModelRule) {
	if len(rules) == 0 {
		return
	}
	s := modelLabelsFor(provider)
	s.mu.Lock()
	for _, r := range rules {
		s.mapped[cutModelLabel(strings.ToValidUTF8(r.Model, "\uFFFD"))] = true
	}
	s.mu.Unlock()
}

// modelLabel is the label a model gets for a provider. A label must be
// valid UTF-8 (the registry panics otherwise) and the model is whatever
// the client sent: invalid bytes become U+FFFD.
func modelLabel(provider, model string) string {
	model = cutModelLabel(strings.ToValidUTF8(model, "\uFFFD"))
	s := modelLabelsFor(provider)
	s.mu.RLock()
	known := s.mapped[model] || s.seen[model]
	s.mu.RUnlock()
	if known {
		return model
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[model] {
		return model
	}
	if len(s.seen) >= maxModelLabels {
		return otherModelLabel
	}
	s.seen[model] = true
	return model
}

// cutModelLabel cuts a model name to maxModelLabelLen bytes without
// splitting a UTF-8 sequence.
func cutModelLabel(model string) string { return cutAtRune(model, maxModelLabelLen) }

// cutAtRune cuts s to at most n bytes without splitting a UTF-8 sequence.
func cutAtRune(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
