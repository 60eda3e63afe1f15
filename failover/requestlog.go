package failover

import (
	"cmp"
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// The request log keeps the last requests in memory, for GET
// /llm/requests and the dashboard. It holds what happened to a request,
// never what it said: no prompt, no credential, no client key.
//
// A request is written into one of several shards, picked by its sequence
// number, each behind its own lock, so concurrent requests rarely meet on
// one lock. The shards together keep at least the newest n requests; a
// read merges them, newest first, and cuts to n.

// Bounds of the request log.
const (
	defaultRequestLog = 1000
	maxRequestLog     = 100_000
	maxLoggedAttempts = 16  // attempts kept per logged request; more are counted, not listed
	maxLoggedString   = 128 // bytes of a model or path kept
	defaultLogLimit   = 100 // entries GET /llm/requests returns without ?limit
)

// RequestLogEntry is one request in GET /llm/requests.
type RequestLogEntry struct {
	Time     time.Time `json:"time"`
	Client   string    `json:"client,omitempty"`
	Model    string    `json:"model"`
	Path     string    `json:"path"`
	Streamed bool      `json:"streamed"`
	// Attempts are the tries sent upstream (and a provider passed over
	// for a missing credential), in order; at most 16 are listed.
	Attempts []LoggedAttempt `json:"attempts"`
	// MoreAttempts counts attempts beyond those listed.
	MoreAttempts int `json:"more_attempts,omitempty"`
	// Provider answered the request; empty when none did.
	Provider    string      `json:"provider"`
	Status      int         `json:"status"`
	TotalMs     float64     `json:"total_ms"`
	FirstByteMs float64     `json:"first_byte_ms"`
	Tokens      LoggedUsage `json:"tokens"`
	// Refused says why the proxy answered the request itself before
	// trying any provider: `limit` (a limit of the handler or the
	// client), `path` (a . or .. segment) or `body` (too large, too slow,
	// or no room in request_buffer_total). Requests refused before the
	// client is known (no or a wrong client key, a remote client, another
	// web page) are not logged: anyone can send those, and they would
	// push the log's real entries out. Caddy's request metrics count them.
	Refused string `json:"refused,omitempty"`
}

// Why a logged request was refused (RequestLogEntry.Refused).
const (
	refusedByLimit = "limit"
	refusedPath    = "path"
	refusedBody    = "body"
)

// LoggedAttempt is one attempt of a logged request.
type LoggedAttempt struct {
	Provider string `json:"provider"`
	// Class is `success`, `passed_through`, `client_gone` or the failure
	// class of the attempt.
	Class  string  `json:"class"`
	Status int     `json:"status"`
	Ms     float64 `json:"ms"`
}

// LoggedUsage is the token usage the answer reported.
type LoggedUsage struct {
	Input         int64 `json:"input"`
	Output        int64 `json:"output"`
	CacheRead     int64 `json:"cache_read"`
	CacheCreation int64 `json:"cache_creation"`
}

// RequestLogResponse is what GET /llm/requests returns, newest first.
type RequestLogResponse struct {
	Requests []RequestLogEntry `json:"requests"`
}

// requestLog is the ring of recent requests of one handler.
type requestLog struct {
	seq    atomic.Uint64
	size   int
	shards []logShard
}

// logShard is one lock's part of the ring; padded so two shards' locks do
// not share a cache line.
type logShard struct {
	mu    sync.Mutex
	slots []logSlot
	_     [40]byte
}

type logSlot struct {
	seq   uint64 // 0: empty
	entry RequestLogEntry
}

// newRequestLog makes a ring that keeps the newest size requests.
func newRequestLog(size int) *requestLog {
	n := min(2*runtime.GOMAXPROCS(0), size)
	per := (size + n - 1) / n
	l := &requestLog{size: size, shards: make([]logShard, n)}
	for i := range l.shards {
		l.shards[i].slots = make([]logSlot, per)
	}
	return l
}

// loggedRequest is what a request notes for the log as it goes, kept on
// the request itself so noting allocates nothing.
type loggedRequest struct {
	start     time.Time // monotonic, for durations
	wall      time.Time // the handler's clock, for the entry's time
	firstByte time.Duration
	status    int
	streamed  bool
	attempts  [4]LoggedAttempt
	n         int
	extra     []LoggedAttempt // beyond the first four, up to maxLoggedAttempts
	more      int
	outcome   string // what the attempt under way was counted as
	refused   string // why the proxy refused the request itself, if it did
}

// noteAttempt notes an attempt at provider with its class, status and
// duration.
func (lr *loggedRequest) noteAttempt(provider, class string, status int, d time.Duration) {
	at := LoggedAttempt{Provider: provider, Class: class, Status: status, Ms: ms(d)}
	switch {
	case lr.n < len(lr.attempts):
		lr.attempts[lr.n] = at
	case lr.n < maxLoggedAttempts:
		lr.extra = append(lr.extra, at)
	default:
		lr.more++
		return
	}
	lr.n++
}

func apiError(status int, err error) error { return caddy.APIError{HTTPStatus: status, Err: err} }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// record writes the finished request into its shard's next slot, reusing
// the slot's attempt list.
func (l *requestLog) record(req *llmRequest) {
	lr := &req.logged
	seq := l.seq.Add(1)
	s := &l.shards[seq%uint64(len(l.shards))]
	total := time.Since(lr.start)
	s.mu.Lock()
	slot := &s.slots[(seq/uint64(len(l.shards)))%uint64(len(s.slots))]
	slot.seq = seq
	e := &slot.entry
	at := e.Attempts[:0]
	at = append(at, lr.attempts[:min(lr.n, len(lr.attempts))]...)
	at = append(at, lr.extra...)
	*e = RequestLogEntry{
		Time: lr.wall, Client: req.client.label(), Model: boundedString(req.model), Path: boundedString(req.r.URL.Path),
		Streamed: lr.streamed, Attempts: at, MoreAttempts: lr.more, Provider: req.answeredBy, Status: lr.status,
		TotalMs: ms(total), FirstByteMs: ms(lr.firstByte),
		Tokens: LoggedUsage{Input: req.usage.InputTokens, Output: req.usage.OutputTokens,
			CacheRead: req.usage.CacheReadTokens, CacheCreation: req.usage.CacheCreationTokens},
		Refused: lr.refused,
	}
	s.mu.Unlock()
}

// boundedString keeps at most maxLoggedString bytes of s (whole runes),
// valid UTF-8 (U+FFFD for each invalid byte), as a copy, so a long model
// name in a body is not kept whole. Cut before it is made valid, so the
// work is bounded too, and again after: each invalid byte grows to three.
func boundedString(s string) string {
	if len(s) <= maxLoggedString && utf8.ValidString(s) {
		return s
	}
	v := strings.ToValidUTF8(cutAtRune(s, maxLoggedString), "\uFFFD")
	cut := len(s) > maxLoggedString
	if len(v) > maxLoggedString {
		v, cut = cutAtRune(v, maxLoggedString), true
	}
	if cut {
		return v + "…"
	}
	return strings.Clone(v)
}

// appendEntries appends copies of the logged requests, with their
// sequence numbers, to out.
func (l *requestLog) appendEntries(out []seqEntry) []seqEntry {
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		for j := range s.slots {
			if slot := &s.slots[j]; slot.seq != 0 {
				e := slot.entry
				e.Attempts = slices.Clone(e.Attempts)
				if e.Attempts == nil {
					e.Attempts = []LoggedAttempt{}
				}
				out = append(out, seqEntry{seq: slot.seq, entry: e})
			}
		}
		s.mu.Unlock()
	}
	return out
}

type seqEntry struct {
	seq   uint64
	entry RequestLogEntry
}

// recentRequests returns the live handlers' logged requests, newest first,
// at most limit.
func recentRequests(limit int) []RequestLogEntry {
	liveHandlers.Lock()
	logs := make([]*requestLog, 0, len(liveHandlers.list))
	for _, h := range liveHandlers.list {
		if h.requestLog != nil {
			logs = append(logs, h.requestLog)
		}
	}
	liveHandlers.Unlock()
	var all []seqEntry
	for _, l := range logs {
		// each log keeps its newest l.size; sequence numbers order only
		// within one log, so logs are merged by time
		mine := l.appendEntries(nil)
		slices.SortFunc(mine, func(a, b seqEntry) int { return cmp.Compare(b.seq, a.seq) })
		all = append(all, mine[:min(len(mine), l.size)]...)
	}
	slices.SortStableFunc(all, func(a, b seqEntry) int { return b.entry.Time.Compare(a.entry.Time) })
	out := make([]RequestLogEntry, 0, min(len(all), limit))
	for _, se := range all[:min(len(all), limit)] {
		out = append(out, se.entry)
	}
	return out
}

// serveRequestLog serves GET /llm/requests?limit=N.
func serveRequestLog(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return apiError(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed; use GET", r.Method))
	}
	limit := defaultLogLimit
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return apiError(http.StatusBadRequest, fmt.Errorf("limit: %q is not a positive number of requests", v))
		}
		limit = min(n, maxRequestLog)
	}
	return writeJSON(w, http.StatusOK, RequestLogResponse{Requests: recentRequests(limit)})
}

// provisionRequestLog makes the handler's ring, unless it is off.
func (h *Handler) provisionRequestLog() {
	if h.RequestLog < 0 {
		return
	}
	size := h.RequestLog
	if size == 0 {
		size = defaultRequestLog
	}
	h.requestLog = newRequestLog(size)
}

// validRequestLog checks request_log's size.
func validRequestLog(n int) error {
	if n < -1 || n > maxRequestLog {
		return fmt.Errorf("request_log: %d is out of range: write a number of requests from 1 to %d, or off", n, maxRequestLog)
	}
	return nil
}

// parseRequestLog reads `request_log <n>|off`.
func parseRequestLog(d *caddyfile.Dispenser) (int, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	if v == "off" {
		return -1, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxRequestLog {
		return 0, d.Errf("request_log: %q: write a number of requests from 1 to %d, or off", v, maxRequestLog)
	}
	return n, nil
}

// startLogging notes when the request started, if requests are logged.
func (h *Handler) startLogging(req *llmRequest) {
	if h.requestLog != nil {
		req.logged.start, req.logged.wall = time.Now(), timeNow()
	}
}

// outcome is what came of an attempt that settled, as the request log and
// its span word it: what the attempt was counted as (countAttempt), or
// else its class; and the status the provider answered with (0: none).
func (a *attempt) outcome(res *gateResult, v Class) (string, int) {
	outcome := a.req.logged.outcome
	a.req.logged.outcome = ""
	if outcome == "" {
		outcome = string(v)
	}
	status := res.status
	if res.committed {
		status = a.gate.status
		if status == 0 {
			status = http.StatusOK
		}
	}
	return outcome, status
}

// logAttempt notes an attempt that settled, with its outcome.
func (h *Handler) logAttempt(a *attempt, outcome string, status int) {
	if h.requestLog == nil || a.p == nil {
		return
	}
	a.req.logged.noteAttempt(a.p.Name, outcome, status, time.Since(a.gate.started))
}

// logUnsent notes a provider passed over without a request: its
// credential is missing.
func (h *Handler) logUnsent(req *llmRequest, p *Provider, class Class) {
	if h.requestLog != nil {
		req.logged.noteAttempt(p.Name, string(class), 0, 0)
	}
}

// logRefused writes a request the proxy refused itself, with the status
// it answered, into the log.
func (h *Handler) logRefused(req *llmRequest, why string) {
	if h.requestLog != nil {
		req.logged.refused, req.logged.status = why, int(req.out.status.Load())
		h.requestLog.record(req)
	}
}

// finishLogging writes the finished request into the log.
func (h *Handler) finishLogging(req *llmRequest) {
	if h.requestLog != nil {
		h.requestLog.record(req)
	}
}
