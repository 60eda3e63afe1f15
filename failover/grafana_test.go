package failover

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// Every caddy_llm_ metric the Grafana board queries is one the plugin
// registers (a histogram's _bucket, _sum and _count series included), and
// the board queries each of them.
func TestGrafanaBoardQueriesRealMetrics(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "examples", "grafana", "caddy-llm-failover.json"))
	if err != nil {
		t.Fatal(err)
	}
	var board struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(raw, &board); err != nil {
		t.Fatalf("the board is not JSON: %v", err)
	}

	reg := prometheus.NewRegistry()
	if err := registerMetrics(reg); err != nil {
		t.Fatal(err)
	}
	registered := map[string]bool{}
	descs := make(chan *prometheus.Desc, 64)
	for _, c := range []prometheus.Collector{metrics.attempts, metrics.failovers, metrics.firstEvent,
		metrics.firstContent, metrics.tokens, metrics.stateExporter, metrics.utilization, metrics.limits} {
		c.Describe(descs)
	}
	close(descs)
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			registered[m[1]] = true
		}
	}

	queried := map[string]bool{}
	name := regexp.MustCompile(`caddy_llm_[a-z_]+`)
	for _, p := range board.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, target := range p.Targets {
			for _, m := range name.FindAllString(target.Expr, -1) {
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && registered[b] {
						base = b
					}
				}
				if !registered[base] {
					t.Errorf("panel %q queries %s, which the plugin does not export", p.Title, m)
				}
				queried[base] = true
			}
		}
	}
	for m := range registered {
		if !queried[m] && m != "caddy_llm_time_to_first_event_seconds" {
			t.Errorf("the board shows nothing of %s", m)
		}
	}
}
