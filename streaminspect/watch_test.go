package streaminspect

import (
	"strings"
	"testing"
)

func TestWatcher(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		stream   string
		terminal bool
		failed   bool
		errInfo  ErrorInfo
		usage    Usage
		events   int
	}{
		{
			name: "anthropic complete", stream: anthropicStream, terminal: true, events: 8,
			usage: Usage{InputTokens: 25, OutputTokens: 15, CacheReadTokens: 100, CacheCreationTokens: 10},
		},
		{
			name: "anthropic cut off", stream: anthropicStream[:strings.Index(anthropicStream, "event: message_stop")], events: 7,
			usage: Usage{InputTokens: 25, OutputTokens: 15, CacheReadTokens: 100, CacheCreationTokens: 10},
		},
		{
			name:   "anthropic error mid-stream",
			stream: sse("message_start", aMessageStart, "content_block_start", aBlockStart, "content_block_delta", aDelta, "error", aOverloaded, "error", `{"type":"error","error":{"type":"api_error","message":"later"}}`),
			failed: true, errInfo: ErrorInfo{"overloaded_error", "Overloaded"}, events: 5,
			usage: Usage{InputTokens: 25, OutputTokens: 1},
		},
		{
			name: "openai complete", stream: openAIStream, terminal: true, events: 5,
			usage: Usage{InputTokens: 12, OutputTokens: 34, CacheReadTokens: 5},
		},
		{
			name: "openai error", stream: sse("", oRole, "", oContent, "", oError2), events: 3,
			failed: true, errInfo: ErrorInfo{"server_error", "The server had an error"},
		},
		{
			name: "untyped anthropic", stream: sse("", aMessageStart, "", aDelta, "", `{"type":"message_delta","usage":{"output_tokens":3}}`, "", aMessageStop), events: 4,
			terminal: true, usage: Usage{InputTokens: 25, OutputTokens: 3},
		},
		{
			name:   "content that looks like errors and usage",
			stream: sse("", `{"choices":[{"delta":{"content":"{\"error\":{\"type\":\"x\"},\"usage\":{\"prompt_tokens\":9}, \"type\":\"message_stop\" [DONE]"}}],"usage":null}`),
			events: 1,
		},
		{
			name:   "content ending in quoted keywords",
			stream: sse("", `{"choices":[{"delta":{"content":"say \"error"}}],"x":"\"usage","usage":null}`),
			events: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.stream)
			for _, size := range []int{len(in) + 1, 1, 3, 50} {
				var w Watcher
				for i := 0; i < len(in); i += size {
					w.Feed(in[i:min(i+size, len(in))])
				}
				info, failed := w.Failed()
				if w.Terminal() != tt.terminal || failed != tt.failed || info != tt.errInfo || w.Usage() != tt.usage || w.events != tt.events || w.p.Err() != nil {
					t.Fatalf("chunk %d: terminal %v failed %v %+v usage %+v events %d err %v", size, w.Terminal(), failed, info, w.Usage(), w.events, w.p.Err())
				}
			}
		})
	}
}

func TestWatcherReset(t *testing.T) {
	t.Parallel()
	w := &Watcher{MaxLine: 4096}
	if w.Feed([]byte(openAIStream)); !w.Terminal() {
		t.Fatal("the stream did not end")
	}
	w.Reset()
	if _, f := w.Failed(); w.Terminal() || f || w.Usage() != (Usage{}) || w.events != 0 || w.MaxLine != 4096 {
		t.Fatal("Reset kept state")
	}
}

// An event with a line over MaxLine is skipped; the Watcher still sees the
// events after it, whatever the chunking.
func TestWatcherSkipsLongLines(t *testing.T) {
	t.Parallel()
	long := "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"" +
		strings.Repeat("x", 3000) + "\"}}\n\n"
	in := long + "event: ping\ndata: " + strings.Repeat("y", 600) + "\n" + "data: " + strings.Repeat("z", 600) + "\n\n" + anthropicStream
	for _, size := range []int{1, 7, 64, 200, len(in)} {
		w := &Watcher{MaxLine: 1024}
		for i := 0; i < len(in); i += size {
			w.Feed([]byte(in[i:min(i+size, len(in))]))
		}
		if !w.Terminal() || w.p.Err() != nil || w.p.Skipped() != 2 || w.Usage() == (Usage{}) {
			t.Fatalf("chunk %d: terminal %v err %v skipped %d usage %+v", size, w.Terminal(), w.p.Err(), w.p.Skipped(), w.Usage())
		}
	}
}

func TestWatcherNoAllocs(t *testing.T) {
	for _, s := range []string{anthropicStream, openAIStream} {
		in := []byte(s)
		var w Watcher
		w.Feed(in)
		if a := testing.AllocsPerRun(100, func() {
			w.Reset()
			for i := 0; i < len(in); i += 100 {
				w.Feed(in[i:min(i+100, len(in))])
			}
		}); a != 0 {
			t.Errorf("%v allocations per stream", a)
		}
	}
}

func TestMarkers(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		`{"usage":null}`:                  false,
		`{"usage" : null, "x":1}`:         false,
		`{"usage":{"prompt_tokens":1}}`:   true,
		`{"a":"usage","usage":null}`:      false,
		`{"usage":null,"b":{"usage":{}}}`: true, // a candidate; the walker decides
		`{"usage"`:                        false,
		`{}`:                              false,
		`{"usage":`:                       false,
		`{"usage":1`:                      true,
	} {
		if _, got, _ := markers([]byte(in)); got != want {
			t.Errorf("markers(%s) usage = %v", in, got)
		}
	}
}

func TestMarkersWords(t *testing.T) {
	t.Parallel()
	for in, want := range map[string][3]bool{
		`{"error":{}}`:                          {true, false, false},
		`{"error" :"x"}`:                        {true, false, false},
		`{"error":null}`:                        {false, false, false},
		`{"type":"error"}`:                      {true, false, false},
		`{"type" : "message_stop"}`:             {false, false, true},
		`{"type":"message"}`:                    {false, false, false},
		`{"c":"no \"errors\" here: message_"}`:  {false, false, false},
		`{"c":"\"error\": {}"}`:                 {false, false, false},
		`{"c":"x \"error": 1}`:                  {true, false, false}, // malformed: a candidate, the walker decides
		`{"usage":{"prompt_tokens":1},"e":"x"}`: {false, true, false},
		`:`:                                     {false, false, false},
		`"type":`:                               {false, false, false},
	} {
		e, u, a := markers([]byte(in))
		if [3]bool{e, u, a} != want {
			t.Errorf("markers(%s) = %v %v %v, want %v", in, e, u, a, want)
		}
	}
}

// Progress counts events but pings: a stream that only pings makes none.
func TestWatcherProgressIgnoresPings(t *testing.T) {
	t.Parallel()
	var w Watcher
	w.Feed([]byte("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3}}}\n\n"))
	if w.Progress() != 1 {
		t.Fatalf("progress %d after message_start", w.Progress())
	}
	for range 5 {
		w.Feed([]byte("event: ping\ndata: {\"type\": \"ping\"}\n\n"))
	}
	if w.Progress() != 1 {
		t.Fatalf("progress %d after pings, want still 1", w.Progress())
	}
	w.Feed([]byte("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi\"}}\n\n"))
	if w.Progress() != 2 {
		t.Fatalf("progress %d after a delta", w.Progress())
	}
	w.Reset()
	if w.Progress() != 0 {
		t.Fatal("Reset kept progress")
	}
}
