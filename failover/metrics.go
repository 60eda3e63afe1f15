package failover

import (
	"errors"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
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
	metrics.stateExporter = &breakerCollector{
		state: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "breaker_state"),
			"Breaker state per provider: 0 closed, 1 half-open, 2 open.", []string{"provider"}, nil),
		cooldown: prometheus.NewDesc(prometheus.BuildFQName(metricsNamespace, metricsSubsystem, "cooldown_seconds_left"),
			"Seconds until a cooling provider admits a request again; 0 when closed.", []string{"provider"}, nil),
	}
}

func registerMetrics(reg *prometheus.Registry) error {
	metrics.once.Do(initMetrics)
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{metrics.attempts, metrics.failovers, metrics.firstEvent,
		metrics.firstContent, metrics.tokens, metrics.stateExporter, metrics.utilization} {
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
	state, cooldown *prometheus.Desc
}

func (c *breakerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.state
	ch <- c.cooldown
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
