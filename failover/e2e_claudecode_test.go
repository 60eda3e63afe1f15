package failover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// Claude Code's behaviour toward a gateway, as measured with Claude Code
// 2.1.197: before each conversation a HEAD / without credentials, then
// POST /v1/messages?beta=true with its session id in
// X-Claude-Code-Session-Id; it obeys x-should-retry, and ends a stream 300 s
// after its last event other than ping, then sends the request again.

// With policy spread, Claude Code's conversations are spread: its HEAD /
// before each one moves neither the rotation nor anything else placement
// uses, so each new conversation goes to the next provider.
func TestSpreadSpreadsClaudeCodeConversations(t *testing.T) {
	a := newUpstream(t, "ccs_a", replyMessage("from a"))
	b := newUpstream(t, "ccs_b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock(), "\t\tpolicy spread\n"))
	counts := map[string]int{}
	for i := range 6 {
		headRoot(t, p.URL)
		counts[answeredBy(t, p, fmt.Sprintf("session-%d", i))]++
	}
	if counts["ccs_a"] != 3 || counts["ccs_b"] != 3 {
		t.Fatalf("6 conversations, each after a HEAD /: %v, want 3 on each provider", counts)
	}
}

// countingTransport counts the requests a client sends.
type countingTransport struct{ n atomic.Int32 }

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return http.DefaultTransport.RoundTrip(r)
}

// Every refusal the proxy writes itself where a retry cannot help says
// x-should-retry: false, so a client stops at once: a wrong or missing
// client key, a body over request_buffer. The official SDK, allowed two
// retries, sends one request.
func TestOwnRefusalsSayShouldNotRetry(t *testing.T) {
	a := newUpstream(t, "ccr_a", replyMessage("from a"))
	b := newUpstream(t, "ccr_b", replyMessage("from b"))
	site, _ := clientKeySite(t, a, b, "\t\trequest_buffer 1KiB\n")
	p := startProxy(t, site)

	for _, tc := range []struct {
		name   string
		header []string
		body   string
		status int
	}{
		{"no key", nil, simpleRequest, 401},
		{"wrong key", []string{"x-api-key", "not-a-client-key"}, simpleRequest, 401},
		{"body too large", []string{"x-api-key", "alice-secret-key-1"}, `{"model":"m","pad":"` + strings.Repeat("x", 4096) + `"}`, 413},
	} {
		res := post(t, p.URL+"/v1/messages", tc.body, tc.header...)
		readAll(t, res)
		if res.StatusCode != tc.status || res.Header.Get("X-Should-Retry") != "false" {
			t.Errorf("%s: %d with x-should-retry %q, want %d with false", tc.name, res.StatusCode, res.Header.Get("X-Should-Retry"), tc.status)
		}
	}

	counter := new(countingTransport)
	client := anthropic.NewClient(option.WithBaseURL(p.URL), option.WithAPIKey("not-a-client-key"),
		option.WithMaxRetries(2), option.WithHTTPClient(&http.Client{Transport: counter}))
	_, err := client.Messages.New(context.Background(), userMessage("hi"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 401 {
		t.Fatalf("SDK: %v, want a 401", err)
	}
	if n := counter.n.Load(); n != 1 {
		t.Fatalf("the SDK sent %d requests for a wrong key, want 1 (no retries)", n)
	}
}

// A provider whose stream goes quiet but for pings is ended by the proxy
// before a client gives up on it (Claude Code: 300 s after the last other
// event), with an error event, and cooled: the client's retry goes to the
// healthy provider. Scaled down: idle_timeout 1s against a client that
// would wait 5 s.
func TestPingOnlyStreamEndsBeforeTheClientGivesUp(t *testing.T) {
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	pinging := newUpstream(t, "ccp_ping", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		evs := streamEvents("m", "first words")
		writeStream(w, evs[:4]) // message_start, ping, content_block_start, one delta: committed
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				if _, err := io.WriteString(w, sseEvent("ping", map[string]any{"type": "ping"})); err != nil {
					return
				}
				w.(http.Flusher).Flush()
			case <-r.Context().Done():
				return
			case <-stop:
				return
			}
		}
	})
	healthy := newUpstream(t, "ccp_ok", replyEvents(streamEvents("m", "from the healthy one")))
	p := startProxy(t, failoverSite(pinging.providerBlock(), healthy.providerBlock(),
		"\t\tstream {\n\t\t\tidle_timeout 1s\n\t\t}\n"))

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // the client's own patience
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, p.URL+"/v1/messages", strings.NewReader(simpleRequest))
	req.Header.Set("Content-Type", "application/json")
	res, err := freshConnClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("the client gave up first (after %v): %v", time.Since(start), err)
	}
	if !strings.Contains(string(body), "first words") || !strings.Contains(string(body), "event: error") ||
		!strings.Contains(string(body), "overloaded_error") {
		t.Fatalf("stream:\n%s", body)
	}
	if s := snapshot(t, "ccp_ping"); s.LastClass != "overloaded" {
		t.Fatalf("the pinging provider: %+v, want cooled as overloaded", s)
	}
	// the client's retry
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from the healthy one") {
		t.Fatalf("retry answered by: %s", got)
	}
}

// The default idle timeout fires well before Claude Code's own 300 s.
func TestDefaultIdleTimeoutBeforeClaudeCode(t *testing.T) {
	var c StreamConfig
	c.applyDefaults()
	if d := time.Duration(c.IdleTimeout); d <= 0 || d > 2*time.Minute {
		t.Fatalf("default idle_timeout %v: want well under Claude Code's 300 s", d)
	}
}

// When every provider is out of quota for hours, the first request's
// answer is already the proxy's own: 429 with every provider's reason,
// Retry-After until the soonest reset and x-should-retry: false. Before,
// the last provider's own 429 went through, and an SDK obeying its
// Retry-After slept for hours before the user heard why.
func TestAllOutLongAnswersAtOnce(t *testing.T) {
	reset := time.Now().Add(3 * time.Hour)
	quota := replyError(429, "rate_limit_error", "usage limit reached",
		"anthropic-ratelimit-unified-status", "rejected",
		"anthropic-ratelimit-unified-reset", epochSeconds(reset),
		"Retry-After", "10800")
	a := newUpstream(t, "cco_a", quota)
	b := newUpstream(t, "cco_b", quota)
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock()))

	counter := new(countingTransport)
	client := anthropic.NewClient(option.WithBaseURL(p.URL), option.WithAPIKey("dummy"),
		option.WithMaxRetries(2), option.WithHTTPClient(&http.Client{Transport: counter}))
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second) // an SDK obeying Retry-After would sleep for hours
	defer cancel()
	var raw *http.Response
	_, err := client.Messages.New(ctx, userMessage("hi"), option.WithResponseInto(&raw))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != 429 {
		t.Fatalf("SDK: %v, want a 429", err)
	}
	if n := counter.n.Load(); n != 1 || time.Since(start) > 10*time.Second {
		t.Fatalf("the SDK sent %d requests in %v, want 1 at once", n, time.Since(start))
	}
	if raw.Header.Get("X-Should-Retry") != "false" {
		t.Fatalf("x-should-retry %q, want false", raw.Header.Get("X-Should-Retry"))
	}
	if ra, _ := strconv.Atoi(raw.Header.Get("Retry-After")); ra < 3*3600-60 {
		t.Fatalf("Retry-After %q, want until the reset about 3h away", raw.Header.Get("Retry-After"))
	}
	for _, want := range []string{"cco_a: quota", "cco_b: quota"} {
		if !strings.Contains(apiErr.Error(), want) {
			t.Errorf("the answer does not say %q: %s", want, apiErr.Error())
		}
	}
}

// A window reset learned from usage headers stops counting once a newer
// answer of the provider says otherwise, and the answer's Retry-After and
// its X-LLM-Providers always agree: a provider that reported a spent 5h
// window, then answered without usage headers, then met a 429 with
// Retry-After: 60 is out for a minute, not until the old reset.
func TestStaleUsageDoesNotStretchRetryAfter(t *testing.T) {
	reset := time.Now().Add(3 * time.Hour)
	var step atomic.Int32
	a := newUpstream(t, "ccu_a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch step.Add(1) {
		case 1: // a served request that says the 5h window is used up
			setUnified(w.Header(), 1, reset)
			replyMessage("spent")(w, r, body)
		case 2: // served again, without usage headers
			replyMessage("served")(w, r, body)
		default:
			replyError(429, "rate_limit_error", "slow down", "Retry-After", "60")(w, r, body)
		}
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	for range 3 {
		readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	}
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	readAll(t, res)
	ra, _ := strconv.Atoi(res.Header.Get("Retry-After"))
	if res.StatusCode != 429 || ra < 50 || ra > 61 || res.Header.Get("X-Should-Retry") != "true" {
		t.Fatalf("%d, Retry-After %q, x-should-retry %q: want about 60 s and a retry", res.StatusCode,
			res.Header.Get("Retry-After"), res.Header.Get("X-Should-Retry"))
	}
	if providers := res.Header.Get("X-LLM-Providers"); !strings.Contains(providers, "retry-after="+strconv.Itoa(ra)) {
		t.Fatalf("X-LLM-Providers %q does not agree with Retry-After %d", providers, ra)
	}
}
