// Package testredis starts a real redis-server on a free loopback port for
// a test, and stops it when the test ends. Tests that need one skip with a
// message where redis-server is not installed (.ci/run installs it).
package testredis

import (
	"fmt"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/testport"
)

// Server is a redis-server the test starts, stops and restarts.
type Server struct {
	t    testing.TB
	bin  string
	Port int
	dir  string
	cmd  *exec.Cmd
	// URL is redis://127.0.0.1:PORT/0.
	URL string
}

// Start starts a redis-server with no persistence for the test, or skips
// the test when none is installed.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not installed, so the Redis backend is not tested here " +
			"(Debian: apt-get install redis-server; .ci/run installs it)")
	}
	r := &Server{t: t, bin: bin, Port: testport.Free(t), dir: t.TempDir()}
	r.URL = fmt.Sprintf("redis://127.0.0.1:%d/0", r.Port)
	r.Restart()
	t.Cleanup(r.Stop)
	return r
}

// Restart starts the server again on its port (after Stop), empty.
func (r *Server) Restart() {
	r.t.Helper()
	r.cmd = exec.Command(r.bin, "--port", strconv.Itoa(r.Port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", r.dir)
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	c := r.Client()
	defer c.Close()
	for deadline := time.Now().Add(10 * time.Second); c.Ping(r.t.Context()).Err() != nil; {
		if time.Now().After(deadline) {
			r.t.Fatal("redis-server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop stops the server, as an outage would.
func (r *Server) Stop() {
	if r.cmd == nil {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = r.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = r.cmd.Process.Kill()
		<-done
	}
	r.cmd = nil
}

// Client is a client of the server; the caller closes it.
func (r *Server) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", r.Port), DisableIdentity: true})
}
