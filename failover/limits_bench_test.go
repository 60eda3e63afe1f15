package failover

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// BenchmarkLimits measures what limits add to a request: the check before
// any provider is asked and the count after the answer, for a client
// without limits and for clients with three limits each (a token, a
// request and a spend limit), from parallel goroutines, each on its own
// client, so a lock shared across clients would show.
//
//	go test -run '^$' -bench BenchmarkLimits -benchtime 200000x ./failover/
func BenchmarkLimits(b *testing.B) {
	const clients = 64
	p := &Provider{Name: "bench", state: new(providerState),
		prices: []budget.Price{{Model: "claude-*", Input: 3, Output: 15, CacheRead: 0.3, CacheWrite: 3.75}}}
	usage := streaminspect.Usage{InputTokens: 12, OutputTokens: 10}
	mk := func(limited bool) []*Client {
		out := make([]*Client, clients)
		for i := range out {
			c := &Client{Name: "c" + strconv.Itoa(i), usage: new(clientUsage)}
			if limited {
				var ms []budget.Meter
				for _, line := range [][]string{{"tokens", "1000000000000000", "per", "5h"}, {"requests", "1000000000000000", "per", "1h"}, {"spend", "1000000000", "per", "1d"}} {
					l, err := budget.ParseLimit(line)
					if err != nil {
						b.Fatal(err)
					}
					ms = append(ms, budget.Meter{Limit: l, Counter: budget.NewCounter(c.Name+line[0], l.Window)})
				}
				c.budget = &budget.Budget{Name: c.Name, Meters: ms}
			}
			out[i] = c
		}
		return out
	}
	for _, limited := range []bool{false, true} {
		name := "no_limits"
		if limited {
			name = "three_limits"
		}
		b.Run(name, func(b *testing.B) {
			h := &Handler{logger: zap.NewNop()}
			cs := mk(limited)
			r := httptest.NewRequest(http.MethodPost, "/v1/messages", nil)
			var next atomic.Int64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				c := cs[next.Add(1)%clients]
				w := httptest.NewRecorder()
				for pb.Next() {
					if !h.admitLimits(w, r, c) {
						b.Fatal("refused")
					}
					h.countSpend(p, "claude-sonnet-4-5", c, usage)
				}
			})
		})
	}
}
