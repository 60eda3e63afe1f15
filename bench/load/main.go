// Command load is the benchmark's load generator.
//
// It runs closed-loop load (-c workers, each sending its next request when
// the last one finished) against one or more targets, interleaved in
// rounds (a, b, a, b, ...) so that drift on the machine hits every target
// equally, and prints per-target latency percentiles and requests/s:
//
//	load -scenario small -c 8 -d 3s -rounds 5 -target a=http://127.0.0.1:19001/v1/messages -target b=http://127.0.0.1:19002/v1/messages
//
// With -stream the body asks for a stream and each request records time to
// first byte (response headers), time to first content event
// (content_block_start or the first content_block_delta) and time to last
// byte. With -open-streams N it instead opens N streams at once against a
// single target, holds them, and reports the resident memory of -pid idle
// and with the streams open.
//
// Subcommands:
//
//	load table results.jsonl   prints the markdown tables of a run's results
//	load body SIZE [stream]    prints a generated request body
//	load wait ADDR...          waits until each address accepts connections
//	load fetch URL FILE        saves a URL's body (a pprof profile) to FILE
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// config is one invocation's settings.
type config struct {
	scenario    string
	kind        string
	targets     []target
	concurrency int
	duration    time.Duration
	requests    int
	rounds      int
	warmup      int
	bodySize    int
	stream      bool
	headers     http.Header
	timeout     time.Duration
	jsonOut     bool
	out         string

	openStreams int
	pid         int
	hold        time.Duration
	admin       string
}

type target struct {
	name, url string
	expect    int // expected status; 0 = any 2xx
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "table" {
		if err := printTable(os.Args[2:], os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "load table:", err)
			os.Exit(1)
		}
		return
	}
	if len(os.Args) > 2 && os.Args[1] == "wait" {
		// load wait ADDR...: wait (up to 30s) until each address accepts connections
		for _, addr := range os.Args[2:] {
			if err := waitListening(addr, 30*time.Second); err != nil {
				fatalf("%v", err)
			}
		}
		return
	}
	if len(os.Args) > 3 && os.Args[1] == "fetch" {
		// load fetch URL FILE: save a URL's body (a pprof profile) to FILE
		if err := fetch(os.Args[2], os.Args[3]); err != nil {
			fatalf("%v", err)
		}
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "body" {
		// load body SIZE [stream]: print a generated body, for inspection
		n, _ := strconv.Atoi(os.Args[2])
		_, _ = os.Stdout.Write(makeBody(n, len(os.Args) > 3 && os.Args[3] == "stream"))
		return
	}

	var cfg config
	var targets, expects, headers multiFlag
	flag.StringVar(&cfg.scenario, "scenario", "", "scenario name, for the output")
	flag.StringVar(&cfg.kind, "kind", "compare", "how `load table` presents the result: compare (b vs a), failover, cooled")
	flag.Var(&targets, "target", "NAME=URL to load (repeatable; targets are interleaved round by round)")
	flag.Var(&expects, "expect", "NAME=STATUS: the status a target is expected to answer (default any 2xx)")
	flag.Var(&headers, "header", "'Name: value' to send (repeatable)")
	flag.IntVar(&cfg.concurrency, "c", 1, "concurrent workers (connections) per target")
	flag.DurationVar(&cfg.duration, "d", 3*time.Second, "how long each target is loaded per round (when -n is 0)")
	flag.IntVar(&cfg.requests, "n", 0, "requests per target per round (0: use -d)")
	flag.IntVar(&cfg.rounds, "rounds", 1, "rounds; each round loads every target once, in order")
	flag.IntVar(&cfg.warmup, "warmup", -1, "requests per target before the first round, not recorded (default 4*c, at least 20)")
	flag.IntVar(&cfg.bodySize, "body-size", 0, "request body size in bytes (0: a minimal ~120-byte request)")
	flag.BoolVar(&cfg.stream, "stream", false, `ask for a stream ("stream":true) and measure TTFB, first content and last byte`)
	flag.DurationVar(&cfg.timeout, "timeout", 60*time.Second, "per-request timeout")
	flag.BoolVar(&cfg.jsonOut, "json", false, "print the result as one JSON line instead of a table")
	flag.StringVar(&cfg.out, "out", "", "also append the JSON result line to this file")
	flag.IntVar(&cfg.openStreams, "open-streams", 0, "memory mode: open this many streams at once against the (single) target")
	flag.IntVar(&cfg.pid, "pid", 0, "the Caddy process: its CPU time per request is recorded (/proc/PID/task/*/schedstat); in memory mode its VmRSS is read")
	flag.DurationVar(&cfg.hold, "hold", 3*time.Second, "memory mode: how long the streams stay open once all are flowing")
	flag.StringVar(&cfg.admin, "admin", "", "memory mode: Caddy admin address (host:port) to read the goroutine count from /debug/pprof/goroutine")
	flag.Parse()

	exp := map[string]int{}
	for _, e := range expects {
		k, v, _ := strings.Cut(e, "=")
		n, err := strconv.Atoi(v)
		if err != nil {
			fatalf("-expect %q: %v", e, err)
		}
		exp[k] = n
	}
	for i, t := range targets {
		name, u, ok := strings.Cut(t, "=")
		if !ok || strings.Contains(name, "/") {
			name, u = fmt.Sprintf("t%d", i), t
		}
		cfg.targets = append(cfg.targets, target{name: name, url: u, expect: exp[name]})
	}
	if len(cfg.targets) == 0 {
		fatalf("no -target given")
	}
	cfg.headers = http.Header{"Content-Type": {"application/json"}, "Anthropic-Version": {"2023-06-01"}, "X-Api-Key": {"sk-ant-bench-not-a-key"}}
	for _, h := range headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			fatalf("-header %q: want 'Name: value'", h)
		}
		cfg.headers.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	if cfg.concurrency < 1 {
		cfg.concurrency = 1
	}
	if cfg.warmup < 0 {
		cfg.warmup = max(20, 4*cfg.concurrency)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var res any
	if cfg.openStreams > 0 {
		res = runOpenStreams(ctx, &cfg)
	} else {
		res = runLoad(ctx, &cfg)
	}
	line, _ := json.Marshal(res)
	if cfg.out != "" {
		f, err := os.OpenFile(cfg.out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			fatalf("%v", err)
		}
		_, _ = f.Write(append(line, '\n'))
		_ = f.Close()
	}
	if cfg.jsonOut {
		fmt.Println(string(line))
	} else {
		printSummary(os.Stdout, res)
	}
}

func waitListening(addr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s is not listening after %s: %v", addr, limit, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "load: "+format+"\n", args...)
	os.Exit(2)
}

// newClient is one target's HTTP client: keep-alive connections, one per
// worker, no compression.
func newClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        conns + 16,
			MaxIdleConnsPerHost: conns + 16,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
			ForceAttemptHTTP2:   false,
			WriteBufferSize:     64 << 10,
			ReadBufferSize:      64 << 10,
		},
	}
}

// sample is one request's measurements.
type sample struct {
	ok         bool
	status     int
	ttfb, ttfc time.Duration // first response byte; first content event (streams)
	total      time.Duration // last byte
	err        string
}

// doRequest sends one request and reads the whole response.
func doRequest(ctx context.Context, client *http.Client, t target, body []byte, hdr http.Header, stream bool, rd *bufio.Reader) sample {
	var s sample
	start := time.Now()
	trace := &httptrace.ClientTrace{GotFirstResponseByte: func() { s.ttfb = time.Since(start) }}
	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		s.err = err.Error()
		return s
	}
	req.Header = hdr.Clone()
	resp, err := client.Do(req)
	if err != nil {
		s.err = err.Error()
		return s
	}
	defer resp.Body.Close()
	s.status = resp.StatusCode
	isSSE := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if stream && isSSE {
		rd.Reset(resp.Body)
		sawStop := false
		for {
			line, err := rd.ReadSlice('\n')
			if len(line) > 0 && bytes.HasPrefix(line, []byte("event: ")) {
				ev := bytes.TrimSpace(line[len("event: "):])
				if s.ttfc == 0 && (bytes.Equal(ev, []byte("content_block_start")) || bytes.Equal(ev, []byte("content_block_delta"))) {
					s.ttfc = time.Since(start)
				}
				if bytes.Equal(ev, []byte("message_stop")) {
					sawStop = true
				}
				if bytes.Equal(ev, []byte("error")) {
					s.err = "error event"
				}
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil {
				if err != io.EOF {
					s.err = err.Error()
				}
				break
			}
		}
		if !sawStop && s.err == "" {
			s.err = "stream ended without message_stop"
		}
	} else {
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			s.err = err.Error()
		}
		if stream && s.status == http.StatusOK && s.err == "" {
			s.err = "expected an event stream, got " + resp.Header.Get("Content-Type")
		}
	}
	s.total = time.Since(start)
	want := t.expect
	s.ok = s.err == "" && ((want == 0 && s.status >= 200 && s.status < 300) || s.status == want)
	if !s.ok && s.err == "" {
		s.err = "status " + strconv.Itoa(s.status)
	}
	return s
}

// targetRun accumulates one target's samples over all rounds.
type targetRun struct {
	t       target
	client  *http.Client
	samples []sample
	active  time.Duration // time spent loading this target
	errs    map[string]int
	rounds  []RoundSum
	cpu     time.Duration // CPU time of -pid while this target was loaded
}

// RoundSum is one target's result in one round: the table's "median of
// per-round ratios" pairs each round of b with the same round of a, so a
// burst of other work on the machine spoils one pair, not the whole result.
type RoundSum struct {
	P50     float64 `json:"p50"`
	P99     float64 `json:"p99"`
	RPS     float64 `json:"rps"`
	TTFBP50 float64 `json:"ttfb_p50"`
	TTFCP50 float64 `json:"ttfc_p50,omitempty"`
	// CPUPerReqUS is the CPU time -pid (Caddy) spent per request, in µs.
	CPUPerReqUS float64 `json:"cpu_per_req_us,omitempty"`
}

func roundSum(samples []sample, elapsed time.Duration) RoundSum {
	var lat, ttfb, ttfc []time.Duration
	for _, s := range samples {
		if s.ok {
			lat = append(lat, s.total)
			ttfb = append(ttfb, s.ttfb)
			if s.ttfc > 0 {
				ttfc = append(ttfc, s.ttfc)
			}
		}
	}
	d := dist(lat)
	rs := RoundSum{P50: d.P50, P99: d.P99, TTFBP50: dist(ttfb).P50, TTFCP50: dist(ttfc).P50}
	if elapsed > 0 {
		rs.RPS = float64(len(lat)) / elapsed.Seconds()
	}
	return rs
}

// runLoad loads every target round by round and summarizes.
func runLoad(ctx context.Context, cfg *config) *Result {
	body := makeBody(cfg.bodySize, cfg.stream)
	runs := make([]*targetRun, len(cfg.targets))
	for i, t := range cfg.targets {
		runs[i] = &targetRun{t: t, client: newClient(cfg.concurrency, cfg.timeout), errs: map[string]int{}}
	}
	// warm up: connections, pools, the breaker state a scenario relies on
	for _, r := range runs {
		phase(ctx, cfg, r, body, cfg.warmup, 0, false)
	}
	for round := 0; round < cfg.rounds && ctx.Err() == nil; round++ {
		for _, r := range runs {
			phase(ctx, cfg, r, body, cfg.requests, cfg.duration, true)
		}
	}
	res := &Result{
		Scenario: cfg.scenario, Kind: cfg.kind, Concurrency: cfg.concurrency, Rounds: cfg.rounds,
		BodyBytes: len(body), Stream: cfg.stream,
	}
	for _, r := range runs {
		res.Targets = append(res.Targets, summarize(r, cfg.stream))
		r.client.CloseIdleConnections()
	}
	res.LoadAvg = loadAvg()
	return res
}

// phase runs cfg.concurrency workers against one target for n requests
// (n > 0) or for d.
func phase(ctx context.Context, cfg *config, r *targetRun, body []byte, n int, d time.Duration, record bool) {
	if n <= 0 && d <= 0 {
		return
	}
	pctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var deadline time.Time
	if n <= 0 {
		deadline = time.Now().Add(d)
	}
	var issued atomic.Int64
	first := len(r.samples)
	var cpu0 time.Duration
	if record && cfg.pid > 0 {
		cpu0 = procCPU(cfg.pid)
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < cfg.concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rd := bufio.NewReaderSize(nil, 32<<10)
			local := make([]sample, 0, 1024)
			for pctx.Err() == nil {
				if n > 0 {
					if issued.Add(1) > int64(n) {
						break
					}
				} else if !time.Now().Before(deadline) {
					break
				}
				s := doRequest(pctx, r.client, r.t, body, cfg.headers, cfg.stream, rd)
				if record {
					local = append(local, s)
				}
			}
			if record {
				mu.Lock()
				r.samples = append(r.samples, local...)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if record {
		elapsed := time.Since(start)
		r.active += elapsed
		rs := roundSum(r.samples[first:], elapsed)
		if cfg.pid > 0 {
			cpu := procCPU(cfg.pid) - cpu0
			r.cpu += cpu
			if n := len(r.samples) - first; n > 0 {
				rs.CPUPerReqUS = float64(cpu.Microseconds()) / float64(n)
			}
		}
		r.rounds = append(r.rounds, rs)
	}
}

// Result is one invocation's output (one JSON line).
type Result struct {
	Scenario    string      `json:"scenario"`
	Kind        string      `json:"kind"`
	Concurrency int         `json:"concurrency"`
	Rounds      int         `json:"rounds"`
	BodyBytes   int         `json:"body_bytes"`
	Stream      bool        `json:"stream"`
	Targets     []TargetSum `json:"targets"`
	// LoadAvg is the machine's 1-minute load average when the scenario
	// ended: other work on the machine shows up in the numbers.
	LoadAvg string `json:"loadavg,omitempty"`
}

// TargetSum summarizes one target.
type TargetSum struct {
	Name     string         `json:"name"`
	URL      string         `json:"url"`
	Requests int            `json:"requests"`
	Errors   int            `json:"errors"`
	ErrorEx  map[string]int `json:"error_examples,omitempty"`
	Status   map[string]int `json:"status"`
	Seconds  float64        `json:"seconds"`
	RPS      float64        `json:"rps"`
	Latency  Dist           `json:"latency_ms"`        // to the last byte
	TTFB     Dist           `json:"ttfb_ms"`           // to the first response byte
	TTFC     *Dist          `json:"ttfc_ms,omitempty"` // to the first content event (streams)
	Rounds   []RoundSum     `json:"rounds,omitempty"`
	// CPUPerReqUS is the CPU time the -pid process (Caddy) used per
	// request while this target was loaded, in µs: unlike latency it
	// hardly moves when other work shares the machine.
	CPUPerReqUS float64 `json:"cpu_per_req_us,omitempty"`
}

// Dist is a latency distribution in milliseconds.
type Dist struct {
	N    int     `json:"n"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Mean float64 `json:"mean"`
	Min  float64 `json:"min"`
	Max  float64 `json:"max"`
}

func dist(ds []time.Duration) Dist {
	if len(ds) == 0 {
		return Dist{}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
	q := func(p float64) float64 {
		// nearest rank
		i := int(p*float64(len(ds))+0.999999) - 1
		return ms(ds[max(0, min(len(ds)-1, i))])
	}
	return Dist{N: len(ds), P50: q(0.50), P90: q(0.90), P99: q(0.99), Mean: ms(sum / time.Duration(len(ds))), Min: ms(ds[0]), Max: ms(ds[len(ds)-1])}
}

func summarize(r *targetRun, stream bool) TargetSum {
	ts := TargetSum{Name: r.t.name, URL: r.t.url, Requests: len(r.samples), Status: map[string]int{}, Seconds: r.active.Seconds(), Rounds: r.rounds}
	var lat, ttfb, ttfc []time.Duration
	for _, s := range r.samples {
		if s.status != 0 {
			ts.Status[strconv.Itoa(s.status)]++
		}
		if !s.ok {
			ts.Errors++
			if ts.ErrorEx == nil {
				ts.ErrorEx = map[string]int{}
			}
			if len(ts.ErrorEx) < 5 || ts.ErrorEx[s.err] > 0 {
				ts.ErrorEx[s.err]++
			}
			continue
		}
		lat = append(lat, s.total)
		ttfb = append(ttfb, s.ttfb)
		if stream {
			ttfc = append(ttfc, s.ttfc)
		}
	}
	if ts.Seconds > 0 {
		ts.RPS = float64(len(lat)) / ts.Seconds
	}
	if r.cpu > 0 && len(r.samples) > 0 {
		ts.CPUPerReqUS = float64(r.cpu.Microseconds()) / float64(len(r.samples))
	}
	ts.Latency, ts.TTFB = dist(lat), dist(ttfb)
	if stream {
		d := dist(ttfc)
		ts.TTFC = &d
	}
	return ts
}

func printSummary(w io.Writer, res any) {
	switch r := res.(type) {
	case *Result:
		for _, t := range r.Targets {
			fmt.Fprintf(w, "%-12s %-6s n=%-6d err=%-4d rps=%8.1f  lat p50=%7.3fms p99=%7.3fms mean=%7.3fms  ttfb p50=%7.3fms",
				r.Scenario, t.Name, t.Requests, t.Errors, t.RPS, t.Latency.P50, t.Latency.P99, t.Latency.Mean, t.TTFB.P50)
			if t.TTFC != nil {
				fmt.Fprintf(w, "  ttfc p50=%7.3fms p99=%7.3fms", t.TTFC.P50, t.TTFC.P99)
			}
			if t.Errors > 0 {
				fmt.Fprintf(w, "  errors=%v", t.ErrorEx)
			}
			fmt.Fprintln(w)
		}
	case *MemResult:
		fmt.Fprintf(w, "%-12s %-6s streams=%d/%d rss idle=%.1fMiB open=%.1fMiB per-stream=%.1fKiB goroutines %d -> %d\n",
			r.Scenario, r.Target, r.Ready, r.Streams, float64(r.RSSIdleKB)/1024, float64(r.RSSOpenKB)/1024, r.PerStreamKB, r.GoroutinesIdle, r.GoroutinesOpen)
	}
}

// MemResult is the output of memory mode.
type MemResult struct {
	Scenario       string  `json:"scenario"`
	Kind           string  `json:"kind"`
	Target         string  `json:"target"`
	URL            string  `json:"url"`
	Streams        int     `json:"streams"`
	Ready          int     `json:"ready"`
	Failed         int     `json:"failed"`
	RSSIdleKB      int64   `json:"rss_idle_kb"`
	RSSOpenKB      int64   `json:"rss_open_kb"`
	RSSAfterKB     int64   `json:"rss_after_kb"`
	PerStreamKB    float64 `json:"per_stream_kb"`
	HeapIdleKB     int64   `json:"heap_idle_kb,omitempty"` // live heap after a GC, idle
	HeapOpenKB     int64   `json:"heap_open_kb,omitempty"` // live heap after a GC, streams open
	HeapPerStreamB float64 `json:"heap_per_stream_b,omitempty"`
	GoroutinesIdle int     `json:"goroutines_idle,omitempty"`
	GoroutinesOpen int     `json:"goroutines_open,omitempty"`
	OpenSeconds    float64 `json:"open_seconds"`
	LoadAvg        string  `json:"loadavg,omitempty"`
}

// procCPU is the CPU time pid has used so far: the sum of its threads'
// schedstat run times (ns), or utime+stime from /proc/PID/stat (ticks).
func procCPU(pid int) time.Duration {
	tasks, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	var total time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, t.Name()))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) == 0 {
			continue
		}
		ns, _ := strconv.ParseInt(f[0], 10, 64)
		total += time.Duration(ns)
	}
	if total > 0 {
		return total
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond // USER_HZ is 100 on Linux
}

// loadAvg is the 1-minute load average from /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return ""
	}
	return f[0]
}

// vmRSS reads VmRSS of pid in KiB.
func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return 0
}

// adminPage fetches a page of Caddy's admin endpoint and hands its body
// to read; nothing happens when admin is unset or the fetch fails.
func adminPage(admin, path string, read func(io.Reader)) {
	if admin == "" {
		return
	}
	resp, err := http.Get("http://" + admin + path)
	if err != nil {
		return
	}
	defer resp.Body.Close()
	read(resp.Body)
}

// goroutines reads the goroutine count from Caddy's admin pprof endpoint.
func goroutines(admin string) (n int) {
	adminPage(admin, "/debug/pprof/goroutine?debug=1", func(r io.Reader) {
		line, _ := bufio.NewReader(r).ReadString('\n')
		// "goroutine profile: total 123"
		n, _ = strconv.Atoi(strings.TrimSpace(line[strings.LastIndexByte(line, ' ')+1:]))
	})
	return n
}

// liveHeap reads the live heap of Caddy in KiB: HeapAlloc right after a
// garbage collection, from the admin pprof endpoint (gc=1 collects first).
// Unlike VmRSS it does not move with when the collector last ran, so it
// tells a few hundred bytes per stream apart.
func liveHeap(admin string) (kib int64) {
	adminPage(admin, "/debug/pprof/heap?debug=1&gc=1", func(r io.Reader) {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 16<<20)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				kib = n / 1024
				return
			}
		}
	})
	return kib
}

// runOpenStreams opens cfg.openStreams streams against the single target,
// waits until each has delivered its first content event, and reads the
// resident memory of cfg.pid idle, with the streams open, and after.
func runOpenStreams(ctx context.Context, cfg *config) *MemResult {
	t := cfg.targets[0]
	res := &MemResult{Scenario: cfg.scenario, Kind: "memory", Target: t.name, URL: t.url, Streams: cfg.openStreams}
	client := newClient(cfg.openStreams, 0)
	client.Transport.(*http.Transport).ReadBufferSize = 4 << 10
	client.Transport.(*http.Transport).WriteBufferSize = 4 << 10

	// a few short requests first, so "idle" is a server that has served
	small := makeBody(0, false)
	quick := cfg.headers.Clone()
	quick.Del("X-Fake-Opts")
	for range 20 {
		_ = doRequest(ctx, client, target{name: t.name, url: t.url}, small, quick, false, bufio.NewReader(nil))
	}
	client.CloseIdleConnections()
	time.Sleep(time.Second)
	res.HeapIdleKB = liveHeap(cfg.admin)
	res.RSSIdleKB = vmRSS(cfg.pid)
	res.GoroutinesIdle = goroutines(cfg.admin)

	body := makeBody(0, true)
	sctx, cancel := context.WithCancel(ctx)
	var ready, failed atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64) // dial at most 64 at a time
	allReady := make(chan struct{})
	var once sync.Once
	start := time.Now()
	for range cfg.openStreams {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			req, _ := http.NewRequestWithContext(sctx, http.MethodPost, t.url, bytes.NewReader(body))
			req.Header = cfg.headers.Clone()
			resp, err := client.Do(req)
			<-sem
			if err != nil {
				failed.Add(1)
				return
			}
			defer resp.Body.Close()
			rd := bufio.NewReaderSize(resp.Body, 4<<10)
			counted := false
			for {
				line, err := rd.ReadSlice('\n')
				if !counted && bytes.HasPrefix(line, []byte("event: content_block_start")) {
					counted = true
					if ready.Add(1) == int64(cfg.openStreams) {
						once.Do(func() { close(allReady) })
					}
				}
				if err != nil && err != bufio.ErrBufferFull {
					if !counted {
						failed.Add(1)
					}
					return
				}
			}
		}()
	}
	select {
	case <-allReady:
	case <-time.After(60 * time.Second):
	case <-ctx.Done():
	}
	res.OpenSeconds = time.Since(start).Seconds()
	time.Sleep(cfg.hold)
	// the highest of a few readings: RSS moves with the garbage collector
	for range 3 {
		res.RSSOpenKB = max(res.RSSOpenKB, vmRSS(cfg.pid))
		time.Sleep(300 * time.Millisecond)
	}
	res.GoroutinesOpen = goroutines(cfg.admin)
	res.HeapOpenKB = liveHeap(cfg.admin)
	res.Ready, res.Failed = int(ready.Load()), int(failed.Load())
	cancel()
	wg.Wait()
	client.CloseIdleConnections()
	time.Sleep(500 * time.Millisecond)
	res.RSSAfterKB = vmRSS(cfg.pid)
	res.LoadAvg = loadAvg()
	if res.Ready > 0 {
		res.PerStreamKB = float64(res.RSSOpenKB-res.RSSIdleKB) / float64(res.Ready)
		res.HeapPerStreamB = float64(res.HeapOpenKB-res.HeapIdleKB) * 1024 / float64(res.Ready)
	}
	return res
}
