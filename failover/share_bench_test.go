package failover

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testredis"
)

// Run with: go test -run '^$' -bench BenchmarkShare -benchtime 20x ./failover/

// loadTB loads a Caddyfile into this process's Caddy for a benchmark.
func loadTB(tb testing.TB, caddyfileText string) {
	tb.Helper()
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfileText), nil)
	if err != nil {
		tb.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		tb.Fatal(err)
	}
	stopAtCleanup(tb)
}

// stateOn reads a provider's state from an instance's admin API.
func stateOn(tb testing.TB, adminAddr, provider string) string {
	res, err := http.Get("http://" + adminAddr + "/llm/providers")
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Body.Close()
	var out struct {
		Providers []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"providers"`
	}
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		tb.Fatal(err)
	}
	for _, p := range out.Providers {
		if p.Name == provider {
			return p.State
		}
	}
	return ""
}

func adminPostTB(tb testing.TB, adminAddr, path, body string) {
	res, err := http.Post("http://"+adminAddr+path, "application/json", strings.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	if res.StatusCode != 200 {
		tb.Fatalf("POST %s: %d", path, res.StatusCode)
	}
}

func waitStateOn(tb testing.TB, adminAddr, provider, state string) {
	for deadline := time.Now().Add(10 * time.Second); stateOn(tb, adminAddr, provider) != state; {
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not become %s on %s", provider, state, adminAddr)
		}
		time.Sleep(200 * time.Microsecond)
	}
}

// BenchmarkSharePropagation measures how long a decision takes to reach
// another instance: from the answer of instance A's admin API (a drain,
// this process) until instance B (a child process) reports the provider
// cooling, polled through B's admin API every 0.2ms. Defaults apply
// (read_interval 2s); each decision comes at a random moment of B's poll.
func BenchmarkSharePropagation(b *testing.B) {
	for _, backend := range []string{"redis", "storage"} {
		b.Run(backend, func(b *testing.B) {
			share, global := "\t\tshare\n", "\tstorage file_system "+b.TempDir()+"\n"
			if backend == "redis" {
				r := testredis.Start(b)
				share, global = "\t\tshare {\n\t\t\tredis "+r.URL+"\n\t\t}\n", ""
			}
			block := "\t\tprovider bp_sub {\n\t\t\tupstream http://127.0.0.1:9\n\t\t}\n"
			childURL := fmt.Sprintf("http://127.0.0.1:%d", freePort(b))
			childAdmin := fmt.Sprintf("127.0.0.1:%d", freePort(b))
			startChild(b, fleetCaddyfile(childAdmin, childURL, share, global, block), childURL)
			admin := fmt.Sprintf("127.0.0.1:%d", freePort(b))
			loadTB(b, fleetCaddyfile(admin, fmt.Sprintf("http://127.0.0.1:%d", freePort(b)), share, global, block))

			var delays []time.Duration
			b.ResetTimer()
			for range b.N {
				// at a random moment of the storage poll, not right after one
				b.StopTimer()
				time.Sleep(rand.N(2 * time.Second))
				b.StartTimer()
				adminPostTB(b, admin, "/llm/providers/bp_sub/cooldown", `{"duration":"1h"}`)
				start := time.Now()
				waitStateOn(b, childAdmin, "bp_sub", "open")
				delays = append(delays, time.Since(start))
				b.StopTimer()
				adminPostTB(b, admin, "/llm/providers/bp_sub/reset", "")
				waitStateOn(b, childAdmin, "bp_sub", "closed")
				b.StartTimer()
			}
			slices.Sort(delays)
			b.ReportMetric(float64(delays[len(delays)/2])/1e6, "p50-ms")
			b.ReportMetric(float64(delays[len(delays)-1])/1e6, "max-ms")
		})
	}
}

// BenchmarkShareRedisOutage measures what sharing through Redis costs a
// request: three sites in one Caddy, each with its own provider that
// answers at once: one without sharing, one sharing through a running
// Redis, one through a Redis stopped after the site connected (an outage).
// Requests alternate between the sites, so the machine's load is the same
// for the three; each request is timed.
func BenchmarkShareRedisOutage(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		replyMessage("ok")(w, r, nil)
	}))
	b.Cleanup(up.Close)
	running, stopped := testredis.Start(b), testredis.Start(b)
	modes := []string{"no_share", "redis_up", "redis_down"}
	shares := []string{"", "\t\tshare {\n\t\t\tredis " + running.URL + "\n\t\t}\n",
		"\t\tshare {\n\t\t\tredis " + stopped.URL + "\n\t\t}\n"}
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "{\n\tadmin 127.0.0.1:%d\n\tauto_https off\n\tpersist_config off\n}\n", freePort(b))
	sites := make([]string, len(modes))
	for i, mode := range modes {
		sites[i] = fmt.Sprintf("http://127.0.0.1:%d", freePort(b))
		fmt.Fprintf(&cfg, "%s {\n%s\n}\n", sites[i], failoverSite(
			"\t\tprovider bo_"+mode+" {\n\t\t\tupstream "+up.URL+"\n\t\t}\n", shares[i]))
	}
	loadTB(b, cfg.String())
	stopped.Stop() // after the site connected, as in an outage
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	send := func(site string) time.Duration {
		start := time.Now()
		res, err := client.Post(site+"/v1/messages", "application/json", strings.NewReader(simpleRequest))
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			b.Fatalf("status %d", res.StatusCode)
		}
		return time.Since(start)
	}
	for _, site := range sites {
		send(site) // connections and pools warm
	}
	took := make([][]time.Duration, len(modes))
	b.ResetTimer()
	for i := range b.N {
		m := i % len(modes)
		took[m] = append(took[m], send(sites[m]))
	}
	b.StopTimer()
	for m, mode := range modes {
		slices.Sort(took[m])
		if n := len(took[m]); n > 0 {
			b.ReportMetric(float64(took[m][n/2])/1e3, mode+"-p50-us")
			b.ReportMetric(float64(took[m][n*99/100])/1e3, mode+"-p99-us")
		}
	}
}
