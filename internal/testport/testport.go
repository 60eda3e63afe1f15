// Package testport hands tests loopback ports that are free to bind.
//
// A port taken from the kernel with 127.0.0.1:0 and closed again lies in
// the ephemeral range, where the kernel can give it to another process's
// outgoing connection or :0 listener before the test binds it (test
// packages run in parallel). Ports below that range are never handed out
// by the kernel, so a random one there that is free now stays free unless
// another test picks the same one.
package testport

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// fallbackLow and fallbackHigh bound the ports used when the ephemeral
// range cannot be read or leaves too little room below it.
const (
	fallbackLow  = 20000
	fallbackHigh = 32000
)

var (
	mu     sync.Mutex
	handed = map[int]bool{}
)

// Free returns a loopback port that nothing listens on and that this
// process has not handed out before.
func Free(tb testing.TB) int {
	tb.Helper()
	low, high := portRange()
	mu.Lock()
	defer mu.Unlock()
	for range 1000 {
		port := low + rand.IntN(high-low)
		if handed[port] {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		handed[port] = true
		return port
	}
	tb.Fatalf("no free loopback port in %d-%d", low, high)
	return 0
}

// portRange is the span of ports below the kernel's ephemeral range.
func portRange() (low, high int) {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return fallbackLow, fallbackHigh
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return fallbackLow, fallbackHigh
	}
	ephemeralLow, err := strconv.Atoi(f[0])
	if err != nil || ephemeralLow-fallbackLow < 1000 {
		return fallbackLow, fallbackHigh
	}
	return fallbackLow, ephemeralLow
}
