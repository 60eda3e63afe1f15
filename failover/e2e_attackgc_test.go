package failover

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func forcedGCs() uint32 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.NumForcedGC
}

// A crowd of clients trickling bodies into a full request_buffer_total:
// bodies wait for room while others grow (dropping what they outgrow).
// The proxy's forced collections stay few, whatever the crowd does.
func TestBodyBudgetCrowdForcesFewCollections(t *testing.T) {
	up := newUpstream(t, "gc_up", replyMessage("fine"))
	p := startProxy(t, failoverSite(up.providerBlock(), "\t\trequest_buffer 1MiB\n\t\trequest_buffer_total 2MiB\n"))
	addr := strings.TrimPrefix(p.URL, "http://")
	const size = 200 << 10
	body := `{"model":"m","max_tokens":8,"messages":[{"role":"user","content":"` + strings.Repeat("z", size) + `"}]}`
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				conn, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				_, _ = fmt.Fprintf(conn, "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", len(body))
				for off := 0; off < len(body); off += 20 << 10 {
					if _, err := io.WriteString(conn, body[off:min(off+20<<10, len(body))]); err != nil {
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
				_ = conn.SetReadDeadline(time.Now().Add(2 * time.Second))
				_, _ = io.Copy(io.Discard, conn)
				conn.Close()
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // the crowd fills the budget
	gc0, cpu0, t0 := forcedGCs(), cpuTime(), time.Now()
	time.Sleep(3 * time.Second)
	gcs, cpu, took := forcedGCs()-gc0, cpuTime()-cpu0, time.Since(t0)
	close(stop)
	wg.Wait()
	perSecond := float64(gcs) / took.Seconds()
	t.Logf("%d forced collections in %v (%.0f/s), process CPU %v", gcs, took.Round(time.Millisecond), perSecond, cpu.Round(time.Millisecond))
	if perSecond > 1/minCollectGap.Seconds()+2 {
		t.Errorf("%.0f forced collections a second; want at most %.0f", perSecond, 1/minCollectGap.Seconds())
	}
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if readAll(t, res); res.StatusCode != http.StatusOK {
		t.Fatalf("after the crowd: %d", res.StatusCode)
	}
}
