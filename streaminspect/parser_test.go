package streaminspect

import (
	"bytes"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// rec is a copy of an Event that outlives the callback.
type rec struct {
	Type  string
	Data  string
	ID    string
	Retry int
}

func (r rec) String() string {
	return fmt.Sprintf("{%q %q id=%q retry=%d}", r.Type, r.Data, r.ID, r.Retry)
}

// feedChunks feeds chunks to a fresh parser with the given limit.
func feedChunks(limit int, chunks ...[]byte) ([]rec, error) {
	p := Parser{MaxLine: limit}
	var out []rec
	fn := func(ev *Event) bool {
		out = append(out, rec{ev.Type, string(ev.Data), ev.ID, ev.Retry})
		return true
	}
	for _, c := range chunks {
		c = reusedChunk(c)
		if n := p.Feed(c, fn); n != len(c) {
			panic(fmt.Sprintf("Feed consumed %d of %d bytes without being stopped", n, len(c)))
		}
		clobber(c)
	}
	return out, p.Err()
}

// reusedChunk and clobber play a caller that reads into one buffer and
// reuses it once Feed returned (reverse_proxy does): nothing of a chunk
// may be read after its Feed.
func reusedChunk(c []byte) []byte { return append([]byte(nil), c...) }

func clobber(c []byte) {
	for i := range c {
		c[i] = '#'
	}
}

// feedStopping feeds s whole but stops after every event, re-feeding the
// unconsumed rest, to check the early-stop contract.
func feedStopping(limit int, s []byte) ([]rec, error) {
	p := Parser{MaxLine: limit}
	var out []rec
	maxIter := len(s) + 1 // each round consumes at least one byte
	for guard := 0; ; guard++ {
		if guard > maxIter {
			panic("feedStopping does not progress")
		}
		got := 0
		n := p.Feed(s, func(ev *Event) bool {
			out = append(out, rec{ev.Type, string(ev.Data), ev.ID, ev.Retry})
			got++
			return false
		})
		if got > 1 {
			panic("callback called after returning false")
		}
		if n < 0 || n > len(s) {
			panic(fmt.Sprintf("Feed returned %d for %d bytes", n, len(s)))
		}
		if got == 0 && n != len(s) {
			panic("Feed stopped without a reason")
		}
		s = s[n:]
		if len(s) == 0 {
			return out, p.Err()
		}
	}
}

func singleBytes(s []byte) [][]byte {
	out := make([][]byte, len(s))
	for i := range s {
		out[i] = s[i : i+1]
	}
	return out
}

// refParse is a deliberately naive reference implementation of the spec
// working on the whole stream at once, to check Parser against.
func refParse(s []byte, limit int) ([]rec, error) {
	if limit <= 0 {
		limit = DefaultMaxLine
	}
	s = bytes.TrimPrefix(s, []byte("\xEF\xBB\xBF"))
	var (
		out     []rec
		data    []string
		evType  string
		lastID  string
		retry   = -1
		hasData bool
	)
	for {
		i := bytes.IndexAny(s, "\r\n")
		if i < 0 {
			if len(s) > limit {
				return out, ErrLineTooLong
			}
			return out, nil // an unterminated event is dropped
		}
		line := string(s[:i])
		if s[i] == '\r' && i+1 < len(s) && s[i+1] == '\n' {
			s = s[i+2:]
		} else {
			s = s[i+1:]
		}
		if len(line) > limit {
			return out, ErrLineTooLong
		}
		switch {
		case line == "":
			if hasData {
				out = append(out, rec{evType, strings.Join(data, "\n"), lastID, retry})
			}
			data, hasData, evType, retry = nil, false, "", -1
			continue
		case line[0] == ':':
			continue
		}
		name, value, found := strings.Cut(line, ":")
		if found {
			value = strings.TrimPrefix(value, " ")
		}
		switch name {
		case "data":
			data = append(data, value)
			hasData = true
			if len(strings.Join(data, "\n")) > limit {
				return out, ErrEventTooLarge
			}
		case "event":
			evType = value
		case "id":
			if !strings.Contains(value, "\x00") {
				lastID = value
			}
		case "retry":
			if value != "" && strings.Trim(value, "0123456789") == "" {
				n, err := strconv.Atoi(value)
				if err != nil {
					n = math.MaxInt // out of range: saturate
				}
				retry = n
			}
		}
	}
}

func TestParserRules(t *testing.T) {
	t.Parallel()
	ev := func(typ, data string) rec { return rec{typ, data, "", -1} }
	tests := []struct {
		name  string
		in    string
		limit int
		want  []rec
		err   error
	}{
		{name: "simple", in: "data: hello\n\n", want: []rec{ev("", "hello")}},
		{name: "event type", in: "event: foo\ndata: bar\n\n", want: []rec{ev("foo", "bar")}},
		{name: "last event field wins", in: "event: a\nevent: b\ndata: x\n\n", want: []rec{ev("b", "x")}},
		{name: "empty event type", in: "event: \ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "data lines joined", in: "data: a\ndata: b\ndata: c\n\n", want: []rec{ev("", "a\nb\nc")}},
		{name: "CRLF", in: "event: e\r\ndata: a\r\ndata: b\r\n\r\n", want: []rec{ev("e", "a\nb")}},
		{name: "lone CR", in: "event: e\rdata: a\rdata: b\r\r", want: []rec{ev("e", "a\nb")}},
		{name: "mixed endings", in: "data: a\r\ndata: b\rdata: c\n\r\n", want: []rec{ev("", "a\nb\nc")}},
		{name: "CR CR is two lines", in: "data: a\r\rdata: b\n\n", want: []rec{ev("", "a"), ev("", "b")}},
		{name: "LF CR is two lines", in: "data: a\n\rdata: b\n\n", want: []rec{ev("", "a"), ev("", "b")}},
		{name: "BOM skipped", in: "\xEF\xBB\xBFdata: x\n\n", want: []rec{ev("", "x")}},
		{name: "BOM only at start", in: "data: x\n\n\xEF\xBB\xBFdata: y\n\n", want: []rec{ev("", "x")}},
		{name: "second BOM is not skipped", in: "\xEF\xBB\xBF\xEF\xBB\xBFdata: x\n\n"},
		{name: "partial BOM is data", in: "\xEF\xBBdata: x\n\n"},
		{name: "partial BOM in value", in: "data: \xEF\xBB\n\n", want: []rec{ev("", "\xEF\xBB")}},
		{name: "comment", in: ": keep-alive\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "bare colon comment", in: ":\n\ndata: x\n:\n\n", want: []rec{ev("", "x")}},
		{name: "comment only", in: ": a\n\n: b\n\n"},
		{name: "field without colon", in: "data\n\n", want: []rec{ev("", "")}},
		{name: "event without colon", in: "event: x\nevent\ndata: y\n\n", want: []rec{ev("", "y")}},
		{name: "no space after colon", in: "data:x\n\n", want: []rec{ev("", "x")}},
		{name: "only one space stripped", in: "data:  x\n\n", want: []rec{ev("", " x")}},
		{name: "tab not stripped", in: "data:\tx\n\n", want: []rec{ev("", "\tx")}},
		{name: "colon in value", in: "data: a: b\n\n", want: []rec{ev("", "a: b")}},
		{name: "empty data line dispatches", in: "data:\n\n", want: []rec{ev("", "")}},
		{name: "two empty data lines", in: "data:\ndata:\n\n", want: []rec{ev("", "\n")}},
		{name: "trailing empty data line", in: "data: a\ndata:\n\n", want: []rec{ev("", "a\n")}},
		{name: "no data: nothing dispatched, type reset", in: "event: foo\n\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "several blank lines", in: "\n\n\ndata: x\n\n\n\n", want: []rec{ev("", "x")}},
		{name: "unknown field ignored", in: "foo: bar\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "field names are case sensitive", in: "Data: x\nEVENT: y\n\n"},
		{name: "leading space makes another field", in: " data: x\n\n"},
		{name: "unterminated event dropped", in: "data: x\n"},
		{name: "unterminated line dropped", in: "data: x"},
		{name: "NUL and invalid UTF-8 pass through", in: "data: a\x00\xff\xfe\n\n", want: []rec{ev("", "a\x00\xff\xfe")}},
		{name: "id persists", in: "id: 1\ndata: x\n\ndata: y\n\n", want: []rec{{"", "x", "1", -1}, {"", "y", "1", -1}}},
		{name: "id set without data persists", in: "id: 7\n\ndata: x\n\n", want: []rec{{"", "x", "7", -1}}},
		{name: "empty id resets", in: "id: 1\ndata: x\n\nid\ndata: y\n\n", want: []rec{{"", "x", "1", -1}, {"", "y", "", -1}}},
		{name: "id with NUL ignored", in: "id: 1\nid: a\x00b\ndata: x\n\n", want: []rec{{"", "x", "1", -1}}},
		{name: "retry", in: "retry: 1500\ndata: x\n\ndata: y\n\n", want: []rec{{"", "x", "", 1500}, ev("", "y")}},
		{name: "retry not digits", in: "retry: 15a\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "retry negative", in: "retry: -1\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "retry empty", in: "retry:\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "retry space", in: "retry: 1 \ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "retry reset by blank line", in: "retry: 5\n\ndata: x\n\n", want: []rec{ev("", "x")}},
		{name: "line at limit", in: "data: 0123456789\n\n", limit: 16, want: []rec{ev("", "0123456789")}},
		{name: "line over limit", in: "data: a\n\ndata: 0123456789a\n\ndata: b\n\n", limit: 16, want: []rec{ev("", "a")}, err: ErrLineTooLong},
		{name: "unterminated line over limit", in: "data: a\n\ndata: 0123456789a", limit: 16, want: []rec{ev("", "a")}, err: ErrLineTooLong},
		{name: "comment over limit", in: ": 0123456789abcdef\n", limit: 16, err: ErrLineTooLong},
		{name: "event at limit", in: "data: 0123456\ndata: 01234567\n\n", limit: 16, want: []rec{ev("", "0123456\n01234567")}},
		{name: "event over limit", in: "data: 01234567\ndata: 01234567\n\n", limit: 16, err: ErrEventTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			check := func(how string, got []rec, err error) {
				t.Helper()
				if len(got) == 0 {
					got = nil
				}
				if !reflect.DeepEqual(got, tt.want) || err != tt.err {
					t.Errorf("%s: got %v, %v; want %v, %v", how, got, err, tt.want, tt.err)
				}
			}
			got, err := feedChunks(tt.limit, in)
			check("whole", got, err)
			got, err = feedChunks(tt.limit, singleBytes(in)...)
			check("single bytes", got, err)
			got, err = refParse(in, tt.limit)
			check("reference", got, err)
		})
	}
}

// Realistic streams used by several tests.
var (
	anthropicStream = "event: message_start\n" +
		`data: {"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}` + "\n\n" +
		"event: ping\n" +
		`data: {"type": "ping"}` + "\n\n" +
		"event: content_block_start\n" +
		`data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}` + "\n\n" +
		"event: content_block_delta\n" +
		`data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"! \"error\" \u00e9\n"}}` + "\n\n" +
		"event: content_block_stop\n" +
		`data: {"type":"content_block_stop","index":0}` + "\n\n" +
		"event: message_delta\n" +
		`data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":15}}` + "\n\n" +
		"event: message_stop\n" +
		`data: {"type":"message_stop"}` + "\n\n"

	openAIStream = `data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hi \"usage\": {} error"},"logprobs":null,"finish_reason":null}],"usage":null}` + "\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}` + "\n\n" +
		`data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":5}}}` + "\n\n" +
		"data: [DONE]\n\n"
)

var splitStreams = []string{
	anthropicStream,
	openAIStream,
	strings.ReplaceAll(anthropicStream, "\n", "\r\n"),
	strings.ReplaceAll(openAIStream, "\n", "\r"),
	"\xEF\xBB\xBFid: 1\r\nretry: 20\rdata: a\r\n: c\n\ndata\r\rdata:  b\nevent: e\n\n",
	"\xEF\xBBdata: x\n\n\xEF\xBB\xBFdata: y\n\n",
	"data: 0123456789abcdef0123456789\r\n\r\ndata: x\n\n",
}

// TestParserSplitInvariance feeds streams split at every byte boundary,
// at every pair of boundaries for short ones, and byte by byte, with the
// default and with a small limit, and expects the result of the whole feed.
func TestParserSplitInvariance(t *testing.T) {
	t.Parallel()
	for si, s := range splitStreams {
		in := []byte(s)
		for _, limit := range []int{0, 24} {
			want, wantErr := refParse(in, limit)
			check := func(how string, got []rec, err error) {
				t.Helper()
				if !reflect.DeepEqual(got, want) || err != wantErr {
					t.Fatalf("stream %d limit %d %s:\ngot  %v %v\nwant %v %v", si, limit, how, got, err, want, wantErr)
				}
			}
			got, err := feedChunks(limit, in)
			check("whole", got, err)
			got, err = feedChunks(limit, singleBytes(in)...)
			check("single bytes", got, err)
			got, err = feedStopping(limit, in)
			check("stopping", got, err)
			for i := 0; i <= len(in); i++ {
				got, err = feedChunks(limit, in[:i], in[i:])
				check(fmt.Sprintf("split %d", i), got, err)
				if len(in) <= 120 {
					for j := i; j <= len(in); j++ {
						got, err = feedChunks(limit, in[:i], in[i:j], in[j:])
						check(fmt.Sprintf("split %d,%d", i, j), got, err)
					}
				}
			}
		}
	}
}

func TestParserStopAndResume(t *testing.T) {
	t.Parallel()
	in := []byte("data: a\r\n\r\ndata: b\r\rdata: c\n\n")
	var p Parser
	var got []string
	n := p.Feed(in, func(ev *Event) bool { got = append(got, string(ev.Data)); return false })
	if want := len("data: a\r\n\r\n"); n != want {
		t.Fatalf("first stop at %d, want %d", n, want)
	}
	// Stopping right after a CR must still swallow a following LF later.
	n2 := p.Feed(in[n:], func(ev *Event) bool { got = append(got, string(ev.Data)); return false })
	if want := len("data: b\r\r"); n2 != want {
		t.Fatalf("second stop at %d, want %d", n2, want)
	}
	p.Feed(in[n+n2:], func(ev *Event) bool { got = append(got, string(ev.Data)); return true })
	if !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Fatalf("got %q", got)
	}
}

func TestParserCRAcrossChunks(t *testing.T) {
	t.Parallel()
	var p Parser
	var got []string
	fn := func(ev *Event) bool { got = append(got, string(ev.Data)); return true }
	p.Feed([]byte("data: a\r"), fn)
	p.Feed([]byte("\r"), fn) // the event is dispatched at the CR, without waiting
	if len(got) != 1 {
		t.Fatalf("event not dispatched at CR: %q", got)
	}
	p.Feed(nil, fn)                 // an empty chunk must not lose the pending CR
	p.Feed([]byte("\ndata: b"), fn) // this LF belongs to the CR before it
	p.Feed([]byte("\n\n"), fn)
	if !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("got %q", got)
	}
}

func TestParserStateAccessorsAndReset(t *testing.T) {
	t.Parallel()
	p := Parser{MaxLine: 100}
	if p.Retry() != -1 || p.LastEventID() != "" {
		t.Fatal("zero parser has state")
	}
	p.Feed([]byte("retry: 3000\nid: 42\n\n"), nil)
	if p.Retry() != 3000 || p.LastEventID() != "42" {
		t.Fatalf("retry %d id %q", p.Retry(), p.LastEventID())
	}
	p.Feed([]byte("retry: 99999999999999999999999\n"), nil)
	if p.Retry() <= 0 {
		t.Fatalf("huge retry not saturated: %d", p.Retry())
	}
	p.Feed([]byte(strings.Repeat("x", 200)), nil)
	if p.Err() != ErrLineTooLong {
		t.Fatalf("err %v", p.Err())
	}
	if n := p.Feed([]byte("data: x\n\n"), func(*Event) bool { t.Fatal("event after error"); return true }); n != 9 {
		t.Fatalf("Feed after error consumed %d", n)
	}
	p.Reset()
	if p.Err() != nil || p.Retry() != -1 || p.LastEventID() != "" || p.MaxLine != 100 {
		t.Fatal("Reset kept state")
	}
	// A partial BOM and a partial line are forgotten too.
	p.Feed([]byte("\xEF\xBB"), nil)
	p.Reset()
	got, _ := collectFrom(&p, "\xEF\xBB\xBFdata: y\n\n")
	if !reflect.DeepEqual(got, []string{"y"}) {
		t.Fatalf("after Reset: %q", got)
	}
}

func collectFrom(p *Parser, s string) ([]string, error) {
	var got []string
	p.Feed([]byte(s), func(ev *Event) bool { got = append(got, string(ev.Data)); return true })
	return got, p.Err()
}

// TestParserNoAllocs checks the steady state of a typical stream: reused
// buffers, interned event types.
func TestParserNoAllocs(t *testing.T) {
	in := []byte(anthropicStream)
	var p Parser
	n := 0
	fn := func(ev *Event) bool { n += len(ev.Data); return true }
	p.Feed(in, fn) // warm up the buffers
	allocs := testing.AllocsPerRun(100, func() {
		p.Reset()
		for i := 0; i < len(in); i += 37 {
			p.Feed(in[i:min(i+37, len(in))], fn)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per stream", allocs)
	}
}

func FuzzParser(f *testing.F) {
	for _, s := range splitStreams {
		f.Add([]byte(s), uint16(7), uint16(60))
	}
	f.Add([]byte("data: a\r"), uint16(8), uint16(8))
	f.Add([]byte("\xEF"), uint16(0), uint16(1))
	f.Add([]byte("event:\xEF\xBB\xBF\ndata\rid:\x00\nretry:007\n\n"), uint16(3), uint16(4))
	f.Fuzz(func(t *testing.T, in []byte, cut1, cut2 uint16) {
		i := int(cut1) % (len(in) + 1)
		j := i + int(cut2)%(len(in)-i+1)
		for _, limit := range []int{0, 16} {
			want, wantErr := refParse(in, limit)
			check := func(how string, got []rec, err error) {
				t.Helper()
				if !reflect.DeepEqual(got, want) || err != wantErr {
					t.Fatalf("limit %d %s:\ngot  %v %v\nwant %v %v", limit, how, got, err, want, wantErr)
				}
			}
			got, err := feedChunks(limit, in)
			check("whole", got, err)
			got, err = feedChunks(limit, in[:i], in[i:j], in[j:])
			check(fmt.Sprintf("split %d,%d", i, j), got, err)
			got, err = feedChunks(limit, singleBytes(in)...)
			check("single bytes", got, err)
			got, err = feedStopping(limit, in)
			check("stopping", got, err)
		}
		// SkipLong: the events do not depend on how the input is cut, and
		// when nothing is over the limit they are the reference's.
		skip := func(chunks ...[]byte) []rec {
			p := Parser{MaxLine: 16, SkipLong: true}
			var out []rec
			for _, c := range chunks {
				c = reusedChunk(c)
				p.Feed(c, func(ev *Event) bool {
					out = append(out, rec{ev.Type, string(ev.Data), ev.ID, ev.Retry})
					return true
				})
				clobber(c)
			}
			if p.Err() != nil {
				t.Fatalf("SkipLong parser stopped: %v", p.Err())
			}
			return out
		}
		whole := skip(in)
		if got := skip(in[:i], in[i:j], in[j:]); !reflect.DeepEqual(got, whole) {
			t.Fatalf("SkipLong split %d,%d:\ngot  %v\nwant %v", i, j, got, whole)
		}
		if got := skip(singleBytes(in)...); !reflect.DeepEqual(got, whole) {
			t.Fatalf("SkipLong single bytes:\ngot  %v\nwant %v", got, whole)
		}
		if want, err := refParse(in, 16); err == nil && !reflect.DeepEqual(whole, want) {
			t.Fatalf("SkipLong within the limit:\ngot  %v\nwant %v", whole, want)
		}
	})
}
