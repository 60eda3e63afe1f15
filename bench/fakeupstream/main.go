// Command fakeupstream is a fake Anthropic Messages API for load tests: it
// answers POST /v1/messages (any path, in fact) with a JSON message or, when
// the request body says "stream":true, an SSE stream in Anthropic's wire
// format; or with a scripted error such as 429 + Retry-After.
//
// One process can serve several behaviours at once:
//
//   - per listener: -listen '127.0.0.1:9101' -listen '127.0.0.1:9102;status=429,retry-after=60'
//   - per request, by a path prefix: /_fake/status=529/v1/messages (the prefix
//     is what an llm_failover provider's base path carries:
//     upstream http://127.0.0.1:9101/_fake/status=529)
//   - per request, by a header: X-Fake-Opts: events=600,event-delay=1s
//
// Later ones win: flags < listener < path prefix < header. Option keys are
// the flag names: latency, size, events, event-delay, status, retry-after,
// error-type, stream (force true/false).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// opts is one response behaviour.
type opts struct {
	latency    time.Duration // time to response headers
	size       int           // approximate JSON response size
	events     int           // content_block_delta events in a stream
	eventDelay time.Duration // between consecutive stream events
	status     int           // 0 or 200: success; else an error response
	retryAfter string        // Retry-After of an error response
	errorType  string        // error.type of an error response
	stream     int8          // 0 from the body, 1 force stream, -1 force JSON
}

type listenFlags []string

func (l *listenFlags) String() string     { return strings.Join(*l, " ") }
func (l *listenFlags) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var base opts
	var listens listenFlags
	flag.Var(&listens, "listen", "address to serve, optionally with options: 'ADDR' or 'ADDR;status=429,retry-after=60' (repeatable; default 127.0.0.1:9100)")
	flag.DurationVar(&base.latency, "latency", 0, "time to response headers")
	flag.IntVar(&base.size, "size", 600, "approximate size of a JSON message response, in bytes")
	flag.IntVar(&base.events, "events", 50, "content_block_delta events in a streamed response (plus 6 framing events)")
	flag.DurationVar(&base.eventDelay, "event-delay", time.Millisecond, "delay between consecutive SSE events")
	flag.IntVar(&base.status, "status", 200, "response status; >= 400 answers an Anthropic error")
	flag.StringVar(&base.retryAfter, "retry-after", "", "Retry-After header of an error response (seconds)")
	flag.StringVar(&base.errorType, "error-type", "", "error.type of an error response (default from the status)")
	flag.Parse()
	if len(listens) == 0 {
		listens = listenFlags{"127.0.0.1:9100"}
	}

	var servers []*http.Server
	for _, l := range listens {
		addr, spec, _ := strings.Cut(l, ";")
		o := base
		if spec != "" {
			if err := o.apply(spec); err != nil {
				log.Fatalf("fakeupstream: -listen %q: %v", l, err)
			}
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatalf("fakeupstream: %v", err)
		}
		srv := &http.Server{
			Handler:           &handler{base: o},
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          log.New(io.Discard, "", 0),
		}
		servers = append(servers, srv)
		go func() {
			if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
				log.Fatalf("fakeupstream: %v", err)
			}
		}()
		fmt.Fprintf(os.Stderr, "fakeupstream: serving %s %s\n", ln.Addr(), o)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	for _, s := range servers {
		_ = s.Close()
	}
}

func (o opts) String() string {
	if o.status >= 400 {
		return fmt.Sprintf("(status %d, retry-after %q, latency %s)", o.status, o.retryAfter, o.latency)
	}
	return fmt.Sprintf("(latency %s, json %d B, stream %d events every %s)", o.latency, o.size, o.events, o.eventDelay)
}

// apply parses "key=value,key=value" over o.
func (o *opts) apply(spec string) error {
	for kv := range strings.SplitSeq(spec, ",") {
		kv = strings.TrimSpace(kv)
		if kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return fmt.Errorf("option %q: want key=value", kv)
		}
		var err error
		switch k {
		case "latency":
			o.latency, err = time.ParseDuration(v)
		case "size":
			o.size, err = strconv.Atoi(v)
		case "events":
			o.events, err = strconv.Atoi(v)
		case "event-delay":
			o.eventDelay, err = time.ParseDuration(v)
		case "status":
			o.status, err = strconv.Atoi(v)
		case "retry-after":
			o.retryAfter = v
		case "error-type":
			o.errorType = v
		case "stream":
			var b bool
			b, err = strconv.ParseBool(v)
			o.stream = -1
			if b {
				o.stream = 1
			}
		default:
			return fmt.Errorf("unknown option %q", k)
		}
		if err != nil {
			return fmt.Errorf("option %q: %v", kv, err)
		}
	}
	return nil
}

type handler struct {
	base opts
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	o := h.base
	if rest, ok := strings.CutPrefix(r.URL.Path, "/_fake/"); ok {
		spec, _, _ := strings.Cut(rest, "/")
		if err := o.apply(spec); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}
	if spec := r.Header.Get("X-Fake-Opts"); spec != "" {
		if err := o.apply(spec); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
	}

	// read the whole request, as a real API does before answering
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	_, err := buf.ReadFrom(r.Body)
	body := buf.Bytes()
	stream := o.stream == 1 || (o.stream == 0 && isStream(body))
	model := modelOf(body)
	if buf.Cap() <= 1<<22 {
		defer bufPool.Put(buf)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}

	if d := o.latency - time.Since(start); d > 0 {
		time.Sleep(d)
	}
	hdr := w.Header()
	hdr.Set("Request-Id", "req_fake")
	if o.status >= 400 {
		writeError(w, o)
		return
	}
	if stream {
		writeStream(w, r, o, model)
		return
	}
	hdr.Set("Content-Type", "application/json")
	msg := jsonMessage(model, o.size)
	hdr.Set("Content-Length", strconv.Itoa(len(msg)))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(msg)
}

// isStream reports whether the body asks for a stream. "stream" comes last
// in the bodies Claude Code sends, so only the tail is looked at.
func isStream(body []byte) bool {
	tail := body[max(0, len(body)-64):]
	i := bytes.LastIndex(tail, []byte(`"stream"`))
	if i < 0 {
		// not in the tail: look at the whole body
		i = bytes.LastIndex(body, []byte(`"stream"`))
		if i < 0 {
			return false
		}
		tail = body[i:]
	} else {
		tail = tail[i:]
	}
	tail = bytes.TrimLeft(tail[len(`"stream"`):], " \t\r\n:")
	return bytes.HasPrefix(tail, []byte("true"))
}

// modelOf returns the model the request names (a cheap look, for echoing).
func modelOf(body []byte) string {
	i := bytes.Index(body, []byte(`"model"`))
	if i < 0 || i > 256 {
		return "claude-sonnet-4-5-20250929"
	}
	rest := bytes.TrimLeft(body[i+len(`"model"`):], " \t\r\n:")
	if len(rest) == 0 || rest[0] != '"' {
		return "claude-sonnet-4-5-20250929"
	}
	end := bytes.IndexByte(rest[1:], '"')
	if end < 0 || end > 128 {
		return "claude-sonnet-4-5-20250929"
	}
	return string(rest[1 : 1+end])
}

var (
	msgCacheMu sync.Mutex
	msgCache   = map[string][]byte{}
)

// jsonMessage returns a non-streamed Messages response of about size bytes.
func jsonMessage(model string, size int) []byte {
	key := model + "\x00" + strconv.Itoa(size)
	msgCacheMu.Lock()
	defer msgCacheMu.Unlock()
	if m, ok := msgCache[key]; ok {
		return m
	}
	const head = `{"id":"msg_01FakeUpstreamBenchmark0001","type":"message","role":"assistant","model":%q,"content":[{"type":"text","text":"%s"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":%d}}`
	empty := fmt.Sprintf(head, model, "", 0)
	n := max(0, size-len(empty)-4)
	text := filler(n)
	m := []byte(fmt.Sprintf(head, model, text, max(1, n/4)))
	if len(msgCache) < 64 {
		msgCache[key] = m
	}
	return m
}

// filler is n bytes of plain words (no characters JSON would escape).
func filler(n int) string {
	const words = "Sure. Here is the change you asked for, with the tests updated to match the new behaviour of the handler. "
	var b strings.Builder
	for b.Len() < n {
		b.WriteString(words[:min(len(words), n-b.Len())])
	}
	return b.String()
}

func writeError(w http.ResponseWriter, o opts) {
	typ := o.errorType
	if typ == "" {
		switch o.status {
		case 429:
			typ = "rate_limit_error"
		case 529, 503:
			typ = "overloaded_error"
		case 401:
			typ = "authentication_error"
		case 403:
			typ = "permission_error"
		case 400:
			typ = "invalid_request_error"
		case 404:
			typ = "not_found_error"
		default:
			typ = "api_error"
		}
	}
	hdr := w.Header()
	hdr.Set("Content-Type", "application/json")
	if o.retryAfter != "" {
		hdr.Set("Retry-After", o.retryAfter)
	}
	if o.status == 429 {
		hdr.Set("Anthropic-Ratelimit-Requests-Remaining", "0")
	}
	hdr.Set("X-Should-Retry", "true")
	w.WriteHeader(o.status)
	_, _ = fmt.Fprintf(w, `{"type":"error","error":{"type":%q,"message":"fakeupstream: scripted %d"},"request_id":"req_fake"}`, typ, o.status)
}

// writeStream sends an Anthropic stream: message_start, content_block_start,
// ping, o.events text deltas, content_block_stop, message_delta,
// message_stop. message_start goes out with the headers; every later event
// follows the one before by o.eventDelay, each flushed on its own.
func writeStream(w http.ResponseWriter, r *http.Request, o opts, model string) {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	ctx := r.Context()

	var timer *time.Timer
	if o.eventDelay > 0 {
		timer = time.NewTimer(o.eventDelay)
		defer timer.Stop()
	}
	first := true
	send := func(event, data string) bool {
		if !first && timer != nil {
			timer.Reset(o.eventDelay)
			select {
			case <-ctx.Done():
				return false
			case <-timer.C:
			}
		}
		if first && timer != nil {
			timer.Stop()
		}
		first = false
		if _, err := io.WriteString(w, "event: "+event+"\ndata: "+data+"\n\n"); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("message_start", `{"type":"message_start","message":{"id":"msg_01FakeUpstreamBenchmark0001","type":"message","role":"assistant","model":"`+model+`","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":2095,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`) {
		return
	}
	if !send("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`) {
		return
	}
	if !send("ping", `{"type": "ping"}`) {
		return
	}
	words := strings.Fields("Sure. Here is the change you asked for, with the tests updated to match the new behaviour of the handler.")
	for i := range o.events {
		if !send("content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" `+words[i%len(words)]+`"}}`) {
			return
		}
	}
	if !send("content_block_stop", `{"type":"content_block_stop","index":0}`) {
		return
	}
	if !send("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":`+strconv.Itoa(o.events)+`}}`) {
		return
	}
	send("message_stop", `{"type":"message_stop"}`)
}
