package failover

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"
)

// writeAnthropicError answers in Anthropic's error format, which every
// Messages-API client (Claude Code, the SDKs) understands and retries on
// 429/503 with Retry-After.
func writeAnthropicError(w http.ResponseWriter, status int, errType, message string) {
	body, _ := json.Marshal(struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}{Type: "error", Error: struct {
		Type    string `json:"type"`
		Message string `json:"message"`
	}{errType, message}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Del("Content-Encoding")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// skipped is a provider that did not admit a request.
type skipped struct {
	name    string
	class   Class
	retryAt time.Time
}

// writeAllCooling answers a request no provider admits, without touching
// an upstream: 429 when every provider cools for rate_limit or quota, 503
// otherwise, with Retry-After until the soonest one admits again.
func writeAllCooling(w http.ResponseWriter, skips []skipped, now time.Time) {
	status, errType := http.StatusTooManyRequests, "rate_limit_error"
	var soonest time.Time
	parts := make([]string, 0, len(skips))
	for _, s := range skips {
		if s.class != ClassRateLimit && s.class != ClassQuota {
			status, errType = http.StatusServiceUnavailable, "overloaded_error"
		}
		if soonest.IsZero() || s.retryAt.Before(soonest) {
			soonest = s.retryAt
		}
		class := string(s.class)
		if class == "" {
			class = "probe in flight"
		}
		parts = append(parts, fmt.Sprintf("%s: %s, %s left", s.name, class, humanLeft(now, s.retryAt)))
	}
	if len(skips) == 0 {
		status, errType = http.StatusServiceUnavailable, "overloaded_error"
		soonest = now.Add(time.Second)
	}
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(now, soonest)))
	writeAnthropicError(w, status, errType,
		"llm_failover: no provider can take this request now ("+strings.Join(parts, "; ")+")")
}

// retryAfterSeconds is a Retry-After value in whole seconds, at least 1.
func retryAfterSeconds(now, at time.Time) int {
	secs := math.Ceil(at.Sub(now).Seconds())
	if secs < 1 {
		return 1
	}
	return int(secs)
}

// humanLeft says how long until t in words ("4 minutes", "1 hour").
func humanLeft(now, t time.Time) string {
	if !t.After(now) {
		return "no time"
	}
	return strings.TrimSpace(humanize.RelTime(now, t, "", ""))
}
