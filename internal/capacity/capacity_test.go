package capacity

import (
	"bufio"
	"fmt"
	"math"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

var capNow = time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)

func capHeader(kv ...string) http.Header {
	h := make(http.Header)
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

func epoch(d time.Duration) string { return strconv.FormatInt(capNow.Add(d).Unix(), 10) }

// mustParseCapacity reads h at capNow, and fails t unless it finds a
// capacity.
func mustParseCapacity(t *testing.T, h http.Header) Report {
	t.Helper()
	c, ok := Parse(h, capNow, classify.DefaultMaxReset)
	if !ok {
		t.Fatalf("no capacity read from %v", h)
	}
	return c
}

func windowNamed(c Report, name string) (Window, bool) {
	for _, w := range c.Windows {
		if w.Name == name {
			return w, true
		}
	}
	return Window{}, false
}

func TestParseCapacitySubscription(t *testing.T) {
	t.Parallel()
	h := capHeader(
		"anthropic-ratelimit-unified-status", "allowed_warning",
		"anthropic-ratelimit-unified-reset", epoch(72*time.Minute),
		"anthropic-ratelimit-unified-5h-utilization", "0.87",
		"anthropic-ratelimit-unified-5h-reset", epoch(72*time.Minute),
		"anthropic-ratelimit-unified-5h-status", "allowed_warning",
		"anthropic-ratelimit-unified-7d-utilization", "0.41",
		"anthropic-ratelimit-unified-7d-reset", epoch(50*time.Hour),
		"anthropic-ratelimit-unified-7d-status", "allowed",
		"anthropic-ratelimit-unified-7d_opus-utilization", "0.2",
		"anthropic-ratelimit-unified-representative-claim", "five_hour",
		"anthropic-ratelimit-unified-overage-status", "rejected",
		"anthropic-ratelimit-unified-overage-disabled-reason", "org_level_disabled",
		"anthropic-ratelimit-unified-fallback-percentage", "0.5",
		"anthropic-ratelimit-unified-fallback", "Available",
		"Content-Type", "application/json",
	)
	c := mustParseCapacity(t, h)
	if c.Status != "allowed_warning" || !c.Reset.Equal(capNow.Add(72*time.Minute)) ||
		c.RepresentativeClaim != "five_hour" || c.OverageStatus != "rejected" || !c.FallbackAvailable || !c.Learned.Equal(capNow) {
		t.Fatalf("overall: %+v", c)
	}
	var names []string
	for _, w := range c.Windows {
		names = append(names, w.Name)
	}
	if strings.Join(names, ",") != "5h,7d,7d_opus" {
		t.Fatalf("windows %v (overage and fallback are not windows)", names)
	}
	w5, _ := windowNamed(c, "5h")
	if !w5.HasUtilization || w5.Utilization != 0.87 || w5.Status != "allowed_warning" || !w5.Reset.Equal(capNow.Add(72*time.Minute)) {
		t.Fatalf("5h: %+v", w5)
	}
	if b, ok := c.Binding(capNow); !ok || b.Name != "5h" {
		t.Fatalf("binding %+v", b)
	}
	// past the 5h reset its utilization says nothing: 7d binds
	if b, _ := c.Binding(capNow.Add(2 * time.Hour)); b.Name != "7d" {
		t.Fatalf("binding after 5h reset: %+v", b)
	}
}

func TestParseCapacityAPIKey(t *testing.T) {
	t.Parallel()
	reset := capNow.Add(40 * time.Second).Format(time.RFC3339)
	h := capHeader(
		"anthropic-ratelimit-requests-limit", "50",
		"anthropic-ratelimit-requests-remaining", "45",
		"anthropic-ratelimit-requests-reset", reset,
		"anthropic-ratelimit-tokens-limit", "100000",
		"anthropic-ratelimit-tokens-remaining", "10000",
		"anthropic-ratelimit-input-tokens-limit", "80000",
		"anthropic-ratelimit-input-tokens-remaining", "90000", // more left than the limit: clamped
		"anthropic-ratelimit-output-tokens-limit", "0",
		"anthropic-ratelimit-output-tokens-remaining", "0",
		"anthropic-ratelimit-bogus-limit", "7",
	)
	c := mustParseCapacity(t, h)
	var got []string
	for _, w := range c.Windows {
		got = append(got, fmt.Sprintf("%s=%.2f/%v", w.Name, w.Utilization, w.HasUtilization))
	}
	if strings.Join(got, " ") != "requests=0.10/true tokens=0.90/true input_tokens=0.00/true output_tokens=0.00/false" {
		t.Fatalf("windows %v", got)
	}
	r, _ := windowNamed(c, "requests")
	if r.Limit != 50 || r.Remaining != 45 || !r.Reset.Equal(capNow.Add(40*time.Second)) {
		t.Fatalf("requests %+v", r)
	}
	if b, _ := c.Binding(capNow); b.Name != "tokens" {
		t.Fatalf("binding %+v", b)
	}
}

func TestParseCapacityNothing(t *testing.T) {
	t.Parallel()
	for _, h := range []http.Header{
		nil,
		capHeader("Content-Type", "application/json", "Retry-After", "30"),
		capHeader("anthropic-ratelimit-unified-5h-utilization", "lots", "anthropic-ratelimit-unified-status", "maybe"),
		capHeader("anthropic-ratelimit-unified-5h-utilization", "NaN"),
		capHeader("anthropic-ratelimit-unified-7d-reset", "-5", "anthropic-ratelimit-unified-reset", "0"),
		capHeader("anthropic-ratelimit-unified-a%b-utilization", "0.5"),
		capHeader("anthropic-ratelimit-unified-"+strings.Repeat("x", 40)+"-utilization", "0.5"),
	} {
		if c, ok := Parse(h, capNow, classify.DefaultMaxReset); ok {
			t.Errorf("%v: read %+v", h, c)
		}
	}
}

// A hostile upstream: utilization outside 0..1, resets years away, a flood
// of window names.
func TestParseCapacityClampsHostileValues(t *testing.T) {
	t.Parallel()
	h := capHeader(
		"anthropic-ratelimit-unified-5h-utilization", "87",
		"anthropic-ratelimit-unified-7d-utilization", "-3",
		"anthropic-ratelimit-unified-5h-reset", "99999999999",
		"anthropic-ratelimit-unified-reset", "1e300",
		"anthropic-ratelimit-unified-7d-utilization-extra", "1",
		"anthropic-ratelimit-requests-reset", "2999-01-01T00:00:00Z",
		"anthropic-ratelimit-requests-limit", "-1",
	)
	for i := range 50 {
		h.Set(fmt.Sprintf("anthropic-ratelimit-unified-w%02d-utilization", i), "0.5")
	}
	c := mustParseCapacity(t, h)
	w5, _ := windowNamed(c, "5h")
	w7, _ := windowNamed(c, "7d")
	if w5.Utilization != 1 || w7.Utilization != 0 {
		t.Fatalf("utilization not clamped: 5h %v 7d %v", w5.Utilization, w7.Utilization)
	}
	if !w5.Reset.Equal(capNow.Add(classify.DefaultMaxReset)) {
		t.Fatalf("5h reset not capped: %v", w5.Reset)
	}
	if !c.Reset.Equal(capNow.Add(classify.DefaultMaxReset)) {
		t.Fatalf("an absurd unified reset not capped: %v", c.Reset)
	}
	req, _ := windowNamed(c, "requests")
	if !req.Reset.Equal(capNow.Add(classify.DefaultMaxReset)) || req.HasLimit {
		t.Fatalf("requests: %+v", req)
	}
	var extras []string
	for _, w := range c.Windows {
		if isExtraWindow(w.Name) {
			extras = append(extras, w.Name)
		}
	}
	// the alphabetically first ones, whatever order the map is read in
	if strings.Join(extras, ",") != "w00,w01,w02,w03" {
		t.Fatalf("extra windows %v, want the first %d by name", extras, maxExtraWindows)
	}
	if len(c.Windows) > 2+maxExtraWindows+4 {
		t.Fatalf("%d windows kept", len(c.Windows))
	}
}

func TestCapacitySaturated(t *testing.T) {
	t.Parallel()
	c, _ := Parse(capHeader(
		"anthropic-ratelimit-unified-5h-utilization", "0.92",
		"anthropic-ratelimit-unified-5h-reset", epoch(time.Hour),
		"anthropic-ratelimit-unified-7d-utilization", "0.5",
		"anthropic-ratelimit-unified-7d-reset", epoch(48*time.Hour),
	), capNow, classify.DefaultMaxReset)
	if s, ok := c.Saturated(capNow, 0.9); !ok || s.Window != "5h" || !s.Until.Equal(capNow.Add(time.Hour)) {
		t.Fatalf("at 0.92 with max 0.9: %+v %v", s, ok)
	}
	if _, ok := c.Saturated(capNow, 0.95); ok {
		t.Fatal("saturated below its max")
	}
	if _, ok := c.Saturated(capNow, 0); ok {
		t.Fatal("saturated without a max")
	}
	if _, ok := c.Saturated(capNow.Add(time.Hour), 0.9); ok {
		t.Fatal("still saturated once the window reset")
	}
	// both windows full: until the later reset
	c.Windows[1].Utilization = 0.95
	if s, _ := c.Saturated(capNow, 0.9); s.Window != "7d" || !s.Until.Equal(capNow.Add(48*time.Hour)) {
		t.Fatalf("two windows: %+v", s)
	}

	// only a status: allowed_warning saturates until the unified reset
	w, _ := Parse(capHeader("anthropic-ratelimit-unified-status", "allowed_warning",
		"anthropic-ratelimit-unified-reset", epoch(30*time.Minute)), capNow, classify.DefaultMaxReset)
	if s, ok := w.Saturated(capNow, 0.9); !ok || !s.Until.Equal(capNow.Add(30*time.Minute)) {
		t.Fatalf("allowed_warning: %+v %v", s, ok)
	}
	// without a reset: until a recheck
	w, _ = Parse(capHeader("anthropic-ratelimit-unified-status", "allowed_warning"), capNow, classify.DefaultMaxReset)
	if s, ok := w.Saturated(capNow, 0.9); !ok || !s.Until.Equal(capNow.Add(saturationRecheck)) {
		t.Fatalf("allowed_warning without reset: %+v %v", s, ok)
	}
	// utilization figures win over the status
	u, _ := Parse(capHeader("anthropic-ratelimit-unified-status", "allowed_warning",
		"anthropic-ratelimit-unified-5h-utilization", "0.3"), capNow, classify.DefaultMaxReset)
	if _, ok := u.Saturated(capNow, 0.9); ok {
		t.Fatal("allowed_warning with low utilization saturated")
	}
	var nilCap *Report
	if _, ok := nilCap.Saturated(capNow, 0.9); ok || !nilCap.ExhaustedUntil(capNow).IsZero() {
		t.Fatal("nil capacity")
	}
}

func TestCapacityExhaustedUntil(t *testing.T) {
	t.Parallel()
	c, _ := Parse(capHeader(
		"anthropic-ratelimit-unified-5h-utilization", "1",
		"anthropic-ratelimit-unified-5h-reset", epoch(2*time.Hour),
		"anthropic-ratelimit-unified-7d-status", "rejected",
		"anthropic-ratelimit-unified-7d-reset", epoch(3*time.Hour),
		"anthropic-ratelimit-unified-7d_opus-utilization", "0.99",
		"anthropic-ratelimit-unified-7d_opus-reset", epoch(9*time.Hour),
	), capNow, classify.DefaultMaxReset)
	if got := c.ExhaustedUntil(capNow); !got.Equal(capNow.Add(3 * time.Hour)) {
		t.Fatalf("exhausted until %v", got)
	}
	if got := c.ExhaustedUntil(capNow.Add(4 * time.Hour)); !got.IsZero() {
		t.Fatalf("after the resets: %v", got)
	}
}

// Parse never panics, keeps what it returns inside its bounds,
// and reads the same capacity whatever the header order.
func FuzzParseCapacity(f *testing.F) {
	for _, lines := range [][]string{ // a seed's header lines
		{"anthropic-ratelimit-unified-status: allowed", "anthropic-ratelimit-unified-5h-utilization: 0.87", "anthropic-ratelimit-unified-5h-reset: 1795000000"},
		{"anthropic-ratelimit-unified-7d-status: rejected", "anthropic-ratelimit-unified-7d-reset: 1795000000", "anthropic-ratelimit-unified-representative-claim: seven_day"},
		{"anthropic-ratelimit-unified-overage-status: allowed_warning", "anthropic-ratelimit-unified-7d_opus-utilization: 1e9"},
		{"anthropic-ratelimit-requests-limit: 50", "anthropic-ratelimit-requests-remaining: 0", "anthropic-ratelimit-requests-reset: 2026-11-28T12:01:00Z"},
		{"anthropic-ratelimit-input-tokens-limit: 9", "anthropic-ratelimit-output-tokens-remaining: -1", "anthropic-ratelimit-tokens-reset: bad"},
		{"anthropic-ratelimit-unified-a-utilization: 0.1", "anthropic-ratelimit-unified-b-utilization: 0.2", "anthropic-ratelimit-unified-c-utilization: 0.3",
			"anthropic-ratelimit-unified-d-utilization: 0.4", "anthropic-ratelimit-unified-e-utilization: 0.5", "anthropic-ratelimit-unified-f-reset: 1"},
		{"anthropic-ratelimit-unified--utilization: 0.5", "anthropic-ratelimit-unified-x-: 1", "anthropic-ratelimit-: 3"},
		{"anthropic-ratelimit-unified-fallback: available", "anthropic-ratelimit-unified-fallback: no", "anthropic-ratelimit-unified-fallback-percentage: 0.5"},
	} {
		f.Add(strings.Join(lines, "\n"))
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := fzHeader(s)
		c, ok := Parse(h, capNow, classify.DefaultMaxReset)
		if !ok {
			if len(c.Windows) != 0 || c.Status != "" {
				t.Fatalf("not ok but read %+v", c)
			}
			return
		}
		extras := 0
		for _, w := range c.Windows {
			if w.HasUtilization && !(w.Utilization >= 0 && w.Utilization <= 1) {
				t.Fatalf("utilization %v of %s", w.Utilization, w.Name)
			}
			if w.Reset.After(capNow.Add(classify.DefaultMaxReset)) {
				t.Fatalf("reset %v past the cap", w.Reset)
			}
			if !validWindowName(w.Name) {
				t.Fatalf("window name %q", w.Name)
			}
			if isExtraWindow(w.Name) {
				extras++
			}
		}
		// what an answer of the proxy may repeat: a known status, a
		// bounded word
		for _, st := range []string{c.Status, c.OverageStatus} {
			if _, known := capacityStatus(st); st != "" && !known {
				t.Fatalf("status %q", st)
			}
		}
		if c.RepresentativeClaim != "" && !validWindowName(c.RepresentativeClaim) {
			t.Fatalf("claim %q", c.RepresentativeClaim)
		}
		if extras > maxExtraWindows || c.Reset.After(capNow.Add(classify.DefaultMaxReset)) {
			t.Fatalf("bounds: %d extras, reset %v", extras, c.Reset)
		}
		if b, ok := c.Binding(capNow); ok && math.IsNaN(b.Utilization) {
			t.Fatal("NaN binding")
		}
		_, _ = c.Saturated(capNow, 0.9)
		_ = c.ExhaustedUntil(capNow)
		// the same headers in another map order read the same
		again, _ := Parse(h.Clone(), capNow, classify.DefaultMaxReset)
		if fmt.Sprint(again) != fmt.Sprint(c) {
			t.Fatalf("order-dependent:\n%+v\n%+v", c, again)
		}
	})
}

// The cost of reading capacity from every response: a subscription's
// typical headers, and a response that carries none.
func BenchmarkParseCapacity(b *testing.B) {
	sub := capHeader(
		"Content-Type", "application/json", "Request-Id", "req_01", "Date", "Sat, 28 Nov 2026 12:00:00 GMT",
		"anthropic-ratelimit-unified-status", "allowed",
		"anthropic-ratelimit-unified-reset", epoch(time.Hour),
		"anthropic-ratelimit-unified-5h-utilization", "0.87",
		"anthropic-ratelimit-unified-5h-reset", epoch(time.Hour),
		"anthropic-ratelimit-unified-5h-status", "allowed",
		"anthropic-ratelimit-unified-7d-utilization", "0.41",
		"anthropic-ratelimit-unified-7d-reset", epoch(50*time.Hour),
		"anthropic-ratelimit-unified-7d-status", "allowed",
		"anthropic-ratelimit-unified-representative-claim", "five_hour",
	)
	plain := capHeader("Content-Type", "application/json", "Request-Id", "req_01", "Date", "Sat, 28 Nov 2026 12:00:00 GMT",
		"Cache-Control", "no-cache", "Via", "1.1 Caddy")
	b.Run("subscription", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Parse(sub, capNow, classify.DefaultMaxReset)
		}
	})
	b.Run("no_headers", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = Parse(plain, capNow, classify.DefaultMaxReset)
		}
	})
}

// fzHeader reads "Name: value" lines as a response's header arrives (names
// canonicalized); reading stops at the first malformed line.
func fzHeader(lines string) http.Header {
	h, _ := textproto.NewReader(bufio.NewReader(strings.NewReader(lines + "\r\n\r\n"))).ReadMIMEHeader()
	return http.Header(h)
}
