package failover

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Many concurrent requests fail over through the real reverse_proxy path:
// a provider that cannot be dialled, one that answers 529, one that
// answers. Under -race this reports any state an attempt shares with the
// goroutines an earlier attempt left behind (net/http keeps dialling for
// a request that took another connection, with the request's variables).
// Run with -race to make it meaningful.
func TestConcurrentFailoversShareNothing(t *testing.T) {
	useFakeClock(t)
	dead := freeURL(t)
	b := newUpstream(t, "b", replyError(529, "overloaded_error", "Overloaded"))
	c := newUpstream(t, "c", replyMessage("from c"))
	// cooldown 0: every request walks the whole chain again
	p := startProxy(t, failoverSite(
		"\t\tprovider a {\n\t\t\tupstream "+dead+"\n\t\t\tcooldown unreachable 0s\n\t\t}\n",
		b.providerBlock("cooldown overloaded 0s"),
		c.providerBlock(),
	))
	const workers, perWorker = 24, 12
	var wg sync.WaitGroup
	errs := make(chan error, workers*perWorker)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// each worker its own client, so new connections are dialled
			// while others are being returned
			tr := &http.Transport{MaxIdleConnsPerHost: 2}
			defer tr.CloseIdleConnections()
			cl := &http.Client{Transport: tr}
			for range perWorker {
				res, err := cl.Post(p.URL+"/v1/messages", "application/json", strings.NewReader(simpleRequest))
				if err != nil {
					errs <- err
					return
				}
				body, _ := io.ReadAll(res.Body)
				res.Body.Close()
				if !strings.Contains(string(body), "from c") {
					errs <- fmt.Errorf("status %d: %s", res.StatusCode, body)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
