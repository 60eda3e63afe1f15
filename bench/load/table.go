package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
	"strings"
)

// The performance budget: llm_failover (b) against a plain reverse_proxy
// (a) in the same run.
const (
	budgetP50Ratio        = 1.05
	budgetP99Ratio        = 1.20
	budgetRPSRatio        = 0.95
	budgetCPURatio        = 1.05  // Caddy's CPU time per request
	budgetFirstContent    = 1.0   // ms later than plain reverse_proxy
	budgetFailoverAdded   = 1.0   // ms
	budgetCooled          = 0.2   // ms
	budgetStreamsMB       = 100.0 // MB for 1000 open streams
	budgetPluginStreamKiB = 2.0   // the plugin's own live heap per open stream
)

// printTable reads the JSON lines of a run and prints its markdown tables.
func printTable(files []string, w io.Writer) error {
	var compares, failovers, cooleds []*Result
	var mems []*MemResult
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return err
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if len(strings.TrimSpace(string(line))) == 0 {
				continue
			}
			var probe struct{ Kind string }
			if err := json.Unmarshal(line, &probe); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			if probe.Kind == "memory" {
				var m MemResult
				if err := json.Unmarshal(line, &m); err != nil {
					return err
				}
				mems = append(mems, &m)
				continue
			}
			var r Result
			if err := json.Unmarshal(line, &r); err != nil {
				return err
			}
			switch r.Kind {
			case "failover":
				failovers = append(failovers, &r)
			case "cooled":
				cooleds = append(cooleds, &r)
			default:
				compares = append(compares, &r)
			}
		}
		_ = f.Close()
		if err := sc.Err(); err != nil {
			return err
		}
	}

	if len(compares) > 0 {
		fmt.Fprintln(w, "Side by side, one Caddy: (a) plain `reverse_proxy`, (b) `llm_failover` with one provider; same fake upstream. Latency in ms.")
		fmt.Fprintln(w, "Ratio cells: all samples pooled · median of the per-round ratios (the budget is checked on the latter).")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| scenario | c | metric | a p50 | b p50 | b/a p50 | a p99 | b p99 | b/a p99 | a req/s | b req/s | b/a req/s | Δp50 b−a | Caddy CPU µs/req a → b | budget |")
		fmt.Fprintln(w, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		type row struct {
			metric   string
			da, db   Dist
			p50, p99 func(RoundSum) float64 // per-round values; nil: none
			rps      bool
		}
		for _, r := range compares {
			a, b := find(r, "a"), find(r, "b")
			if a == nil || b == nil {
				continue
			}
			rows := []row{{"latency", a.Latency, b.Latency, func(x RoundSum) float64 { return x.P50 }, func(x RoundSum) float64 { return x.P99 }, true}}
			if r.Stream {
				rows = []row{
					{"TTFB", a.TTFB, b.TTFB, func(x RoundSum) float64 { return x.TTFBP50 }, nil, false},
					{"first content", deref(a.TTFC), deref(b.TTFC), func(x RoundSum) float64 { return x.TTFCP50 }, nil, false},
					rows[0],
				}
				rows[2].metric = "last byte"
			}
			for _, row := range rows {
				p50r, p99r := ratio(row.db.P50, row.da.P50), ratio(row.db.P99, row.da.P99)
				m50, m99 := medianRatio(a.Rounds, b.Rounds, row.p50), medianRatio(a.Rounds, b.Rounds, row.p99)
				delta := row.db.P50 - row.da.P50
				mdelta := medianDelta(a.Rounds, b.Rounds, row.p50)
				rpsA, rpsB, rpsR, budget, cpu := "", "", "", "", ""
				switch {
				case row.rps:
					rr := ratio(b.RPS, a.RPS)
					mr := medianRatio(a.Rounds, b.Rounds, func(x RoundSum) float64 { return x.RPS })
					rpsA, rpsB, rpsR = fmt.Sprintf("%.0f", a.RPS), fmt.Sprintf("%.0f", b.RPS), pair(rr, mr)
					budgets := []string{
						check(or(m50, p50r) <= budgetP50Ratio, "p50"), check(or(m99, p99r) <= budgetP99Ratio, "p99"), check(or(mr, rr) >= budgetRPSRatio, "req/s"),
					}
					if a.CPUPerReqUS > 0 {
						cr := ratio(b.CPUPerReqUS, a.CPUPerReqUS)
						cpu = fmt.Sprintf("%.0f → %.0f (×%.2f)", a.CPUPerReqUS, b.CPUPerReqUS, cr)
						budgets = append(budgets, check(cr <= budgetCPURatio, "cpu"))
					}
					budget = strings.Join(budgets, " ")
				case row.metric == "first content":
					budget = check(or(mdelta, delta) <= budgetFirstContent, "≤1ms later")
				case row.metric == "TTFB":
					budget = "held by design"
				}
				errs := ""
				if row.rps && (a.Errors > 0 || b.Errors > 0) {
					errs = fmt.Sprintf(" (errors a=%d b=%d)", a.Errors, b.Errors)
				}
				p99a, p99b, p99cell := fmt.Sprintf("%.3f", row.da.P99), fmt.Sprintf("%.3f", row.db.P99), pair(p99r, m99)
				fmt.Fprintf(w, "| %s | %d | %s | %.3f | %.3f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%s |\n",
					r.Scenario, r.Concurrency, row.metric, row.da.P50, row.db.P50, pair(p50r, m50), p99a, p99b, p99cell,
					rpsA, rpsB, rpsR, dpair(delta, mdelta), cpu, budget, errs)
			}
		}
		fmt.Fprintln(w)
	}

	if len(failovers) > 0 {
		fmt.Fprintln(w, "Failover: (c) `llm_failover` with provider 1 answering 429 on every request (cooldown 0, so it is tried each time) and provider 2 healthy. Added = c − (429 upstream direct + healthy upstream direct); vs b = c − (429 direct + b). ms; p50 cells: pooled · median of per-round values (budget on the latter).")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| scenario | c | c p50 | c p99 | 429 direct p50 | healthy direct p50 | b p50 | added p50 | added mean | added vs b p50 | added vs b mean | Caddy CPU µs/req b → c | budget |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range failovers {
			c, e429, h, b := find(r, "c"), find(r, "429"), find(r, "healthy"), find(r, "b")
			if c == nil || e429 == nil || h == nil || b == nil {
				continue
			}
			added := c.Latency.P50 - e429.Latency.P50 - h.Latency.P50
			addedMed := medianAdded(c.Rounds, e429.Rounds, h.Rounds)
			addedMean := c.Latency.Mean - e429.Latency.Mean - h.Latency.Mean
			vsB := c.Latency.P50 - e429.Latency.P50 - b.Latency.P50
			vsBMed := medianAdded(c.Rounds, e429.Rounds, b.Rounds)
			vsBMean := c.Latency.Mean - e429.Latency.Mean - b.Latency.Mean
			errs := ""
			if c.Errors > 0 {
				errs = fmt.Sprintf(" (c errors=%d %v)", c.Errors, c.ErrorEx)
			}
			cpu := ""
			if b.CPUPerReqUS > 0 {
				cpu = fmt.Sprintf("%.0f → %.0f", b.CPUPerReqUS, c.CPUPerReqUS)
			}
			fmt.Fprintf(w, "| %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %+.3f | %s | %+.3f | %s | %s%s |\n",
				r.Scenario, r.Concurrency, c.Latency.P50, c.Latency.P99, e429.Latency.P50, h.Latency.P50, b.Latency.P50,
				dpair(added, addedMed), addedMean, dpair(vsB, vsBMed), vsBMean, cpu, check(or(addedMed, added) < budgetFailoverAdded, "<1ms"), errs)
		}
		fmt.Fprintln(w)
	}

	if len(cooleds) > 0 {
		fmt.Fprintln(w, "Cooled path: (d) provider 1 cooling (a 429 with Retry-After: 3600 sent first), provider 2 healthy, vs (e) only provider 2. ms; Δp50: pooled · median of per-round differences (budget on the latter).")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| scenario | c | d p50 | e p50 | Δp50 | d p99 | e p99 | Δp99 | Δmean | d req/s | e req/s | Caddy CPU µs/req e → d | budget |")
		fmt.Fprintln(w, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
		for _, r := range cooleds {
			d, e := find(r, "d"), find(r, "e")
			if d == nil || e == nil {
				continue
			}
			dp50 := d.Latency.P50 - e.Latency.P50
			mp50 := medianDelta(e.Rounds, d.Rounds, func(x RoundSum) float64 { return x.P50 })
			cpu := ""
			if e.CPUPerReqUS > 0 {
				cpu = fmt.Sprintf("%.0f → %.0f", e.CPUPerReqUS, d.CPUPerReqUS)
			}
			fmt.Fprintf(w, "| %s | %d | %.3f | %.3f | %s | %.3f | %.3f | %+.3f | %+.3f | %.0f | %.0f | %s | %s |\n",
				r.Scenario, r.Concurrency, d.Latency.P50, e.Latency.P50, dpair(dp50, mp50), d.Latency.P99, e.Latency.P99,
				d.Latency.P99-e.Latency.P99, d.Latency.Mean-e.Latency.Mean, d.RPS, e.RPS, cpu, check(or(mp50, dp50) < budgetCooled, "<0.2ms"))
		}
		fmt.Fprintln(w)
	}

	if len(mems) > 0 {
		fmt.Fprintln(w, "Open streams: resident memory (VmRSS) of a freshly started Caddy, idle and with the streams open (each past its first content event).")
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| scenario | target | streams open | RSS idle MiB | RSS open MiB | open − idle MiB | per stream KiB | live heap per stream KiB | goroutines idle → open | budget |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---:|---|---|")
		heapPer := map[string]float64{}
		for _, m := range mems {
			growth := float64(m.RSSOpenKB-m.RSSIdleKB) / 1024
			heapPer[m.Target] = m.HeapPerStreamB
			fmt.Fprintf(w, "| %s | %s | %d/%d | %.1f | %.1f | %.1f | %.1f | %.2f | %d → %d | %s |\n",
				m.Scenario, m.Target, m.Ready, m.Streams, float64(m.RSSIdleKB)/1024, float64(m.RSSOpenKB)/1024,
				growth, m.PerStreamKB, m.HeapPerStreamB/1024, m.GoroutinesIdle, m.GoroutinesOpen,
				check(float64(m.RSSOpenKB)/1024 < budgetStreamsMB && m.Ready == m.Streams, "total<100MB")+" "+
					check(growth < budgetStreamsMB && m.Ready == m.Streams, "growth<100MB"))
		}
		fmt.Fprintln(w)
		if b, okB := heapPer["b"]; okB {
			if a, okA := heapPer["a"]; okA && a > 0 && b > 0 {
				// the plugin's own share: what one open stream keeps alive
				// through llm_failover beyond what reverse_proxy keeps
				fmt.Fprintf(w, "The plugin's own memory per open stream (live heap per stream, b − a): %.2f KiB %s\n\n",
					(b-a)/1024, check((b-a)/1024 <= budgetPluginStreamKiB, "≤2KiB"))
			}
		}
	}
	var loads []string
	for _, group := range [][]*Result{compares, failovers, cooleds} {
		for _, r := range group {
			if r.LoadAvg != "" {
				loads = append(loads, fmt.Sprintf("%s (c=%d) %s", r.Scenario, r.Concurrency, r.LoadAvg))
			}
		}
	}
	for _, m := range mems {
		if m.LoadAvg != "" {
			loads = append(loads, fmt.Sprintf("%s %s %s", m.Scenario, m.Target, m.LoadAvg))
		}
	}
	if len(loads) > 0 {
		fmt.Fprintf(w, "Machine load average (1 min) at the end of each scenario: %s.\n", strings.Join(loads, "; "))
	}
	return nil
}

func find(r *Result, name string) *TargetSum {
	for i := range r.Targets {
		if r.Targets[i].Name == name {
			return &r.Targets[i]
		}
	}
	return nil
}

func deref(d *Dist) Dist {
	if d == nil {
		return Dist{}
	}
	return *d
}

func ratio(x, y float64) float64 {
	if y == 0 {
		return 0
	}
	return x / y
}

func check(ok bool, what string) string {
	if ok {
		return "✅" + what
	}
	return "❌" + what
}

// medianRatio is the median over rounds of b's value over a's; NaN when
// there are no rounds to pair.
func medianRatio(a, b []RoundSum, f func(RoundSum) float64) float64 {
	return medianOver(a, b, f, func(x, y float64) float64 { return ratio(y, x) })
}

// medianDelta is the median over rounds of b's value minus a's.
func medianDelta(a, b []RoundSum, f func(RoundSum) float64) float64 {
	return medianOver(a, b, f, func(x, y float64) float64 { return y - x })
}

func medianOver(a, b []RoundSum, f func(RoundSum) float64, op func(x, y float64) float64) float64 {
	if f == nil || len(a) == 0 || len(a) != len(b) {
		return math.NaN()
	}
	vs := make([]float64, len(a))
	for i := range a {
		vs[i] = op(f(a[i]), f(b[i]))
	}
	return median(vs)
}

func median(vs []float64) float64 {
	if len(vs) == 0 {
		return math.NaN()
	}
	sort.Float64s(vs)
	n := len(vs)
	if n%2 == 1 {
		return vs[n/2]
	}
	return (vs[n/2-1] + vs[n/2]) / 2
}

// medianAdded is the median over rounds of c − x − y (p50s).
func medianAdded(c, x, y []RoundSum) float64 {
	if len(c) == 0 || len(c) != len(x) || len(c) != len(y) {
		return math.NaN()
	}
	vs := make([]float64, len(c))
	for i := range c {
		vs[i] = c[i].P50 - x[i].P50 - y[i].P50
	}
	return median(vs)
}

func dpair(pooled, median float64) string {
	if math.IsNaN(median) {
		return fmt.Sprintf("%+.3f", pooled)
	}
	return fmt.Sprintf("%+.3f · %+.3f", pooled, median)
}

// pair formats a pooled ratio and the median of per-round ratios.
func pair(pooled, median float64) string {
	if math.IsNaN(median) {
		return fmt.Sprintf("%.2f", pooled)
	}
	return fmt.Sprintf("%.2f · %.2f", pooled, median)
}

// or is v, or fallback when v is NaN.
func or(v, fallback float64) float64 {
	if math.IsNaN(v) {
		return fallback
	}
	return v
}
