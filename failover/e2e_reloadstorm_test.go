package failover

import (
	"fmt"
	"runtime"
	"testing"
	"time"
)

// Many reloads in a row leave no goroutine or subscription behind.
func TestStartCheckReloadStorm(t *testing.T) {
	t.Setenv("LLMF_START_KEY", "sk-start")
	up := newUpstream(t, "storm", replyMessage("fine"))
	p := startProxy(t, failoverSite(up.providerBlock("credential env LLMF_START_KEY")))
	body := func(i int) string {
		return failoverSite(up.providerBlock("credential env LLMF_START_KEY"), fmt.Sprintf("\t\trequest_log %d\n", 100+i))
	}
	settle := func() int {
		var n int
		for range 50 {
			runtime.GC()
			n = runtime.NumGoroutine()
			time.Sleep(20 * time.Millisecond)
			if runtime.NumGoroutine() == n {
				break
			}
		}
		return n
	}
	p.reload(body(0))
	before := settle()
	const reloads = 40
	for i := range reloads {
		p.reload(body(i + 1))
	}
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("after %d reloads: %d", reloads, res.StatusCode)
	}
	var after int
	deadline := time.Now().Add(10 * time.Second)
	for {
		after = settle()
		if after <= before+3 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	startChecks.mu.Lock()
	subscribed := len(startChecks.byApp)
	startChecks.mu.Unlock()
	t.Logf("goroutines: %d before %d reloads, %d after; %d configs subscribed", before, reloads, after, subscribed)
	if after > before+3 {
		t.Errorf("goroutines: %d before %d reloads, %d after", before, reloads, after)
	}
	if subscribed != 1 {
		t.Errorf("%d configs subscribed to start-up checks; want 1, the running one", subscribed)
	}
}
