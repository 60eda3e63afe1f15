package streaminspect

import (
	"strings"
	"testing"
)

// sse builds a stream from (event, data) pairs; an empty event omits the
// event line.
func sse(pairs ...string) string {
	var b strings.Builder
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i] != "" {
			b.WriteString("event: " + pairs[i] + "\n")
		}
		b.WriteString("data: " + pairs[i+1] + "\n\n")
	}
	return b.String()
}

const (
	aMessageStart = `{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}`
	aPing         = `{"type": "ping"}`
	aBlockStart   = `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	aToolStart    = `{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{}}}`
	aDelta        = `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}`
	aBlockStop    = `{"type":"content_block_stop","index":0}`
	aMessageDelta = `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":0}}`
	aMessageStop  = `{"type":"message_stop"}`
	aOverloaded   = `{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`

	oRole     = `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"finish_reason":null}]}`
	oContent  = `{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}`
	oToolCall = `{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"f","arguments":""}}]},"finish_reason":null}]}`
	oReason   = `{"id":"c1","choices":[{"index":0,"delta":{"reasoning_content":"Let me think"}}]}`
	oFinish   = `{"id":"c1","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
	oUsage    = `{"id":"c1","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":5}}}`
	oFilter   = `{"choices":[],"prompt_filter_results":[{"prompt_index":0,"content_filter_results":{}}]}`
	oError    = `{"error":{"message":"Rate limit reached","type":null,"param":null,"code":"rate_limit_exceeded"}}`
	oError2   = `{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`
	oDone     = `[DONE]`
)

func TestKindOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		typ, data string
		want      Kind
	}{
		{"message_start", aMessageStart, KindPreamble},
		{"ping", aPing, KindPreamble},
		{"content_block_start", aBlockStart, KindContent},
		{"content_block_start", aToolStart, KindContent},
		{"content_block_delta", aDelta, KindContent},
		{"content_block_stop", aBlockStop, KindContent},
		{"message_delta", aMessageDelta, KindOther},
		{"message_stop", aMessageStop, KindTerminal},
		{"error", aOverloaded, KindError},
		{"error", "not json", KindError},
		{"something_new", `{"type":"error"}`, KindOther}, // the type decides
		// Untyped Anthropic payloads are recognized by their "type".
		{"", aOverloaded, KindError},
		{"", aDelta, KindContent},
		{"", aMessageStart, KindPreamble},
		{"", aMessageStop, KindTerminal},
		{"message", aMessageStop, KindTerminal},
		// OpenAI.
		{"", oRole, KindPreamble},
		{"", oContent, KindContent},
		{"message", oContent, KindContent},
		{"", oToolCall, KindContent},
		{"", oReason, KindContent},
		{"", `{"choices":[{"delta":{"refusal":"I can't"}}]}`, KindContent},
		{"", `{"choices":[{"delta":{"function_call":{"name":"f"}}}]}`, KindContent},
		{"", `{"choices":[{"delta":{"content":""}},{"delta":{"content":"x"}}]}`, KindContent},
		{"", `{"choices":[{"delta":{"tool_calls":[]}}]}`, KindOther},
		{"", `{"choices":[{"delta":{"content":null}}]}`, KindOther},
		{"", oFinish, KindOther},
		{"", oUsage, KindOther},
		{"", oFilter, KindOther},
		{"", oError, KindError},
		{"", oError2, KindError},
		{"", `{"error":"boom"}`, KindError},
		{"", `{"error":null,"choices":[{"delta":{"content":"x"}}]}`, KindContent},
		{"", oDone, KindTerminal},
		{"", " [DONE] ", KindTerminal},
		{"", `{"choices":[{"delta":{"content":"[DONE] \"error\":{}"}}]}`, KindContent},
		{"", "", KindOther},
		{"", "hello", KindOther},
		{"", `{"choices":[{"delta":{"content":"x"`, KindOther}, // truncated JSON
	}
	for _, tt := range tests {
		ev := &Event{Type: tt.typ, Data: []byte(tt.data), Retry: -1}
		if got := KindOf(ev); got != tt.want {
			t.Errorf("KindOf(%q, %s) = %v, want %v", tt.typ, tt.data, got, tt.want)
		}
	}
}

func TestKindOfNoAllocs(t *testing.T) {
	evs := []*Event{
		{Type: "content_block_delta", Data: []byte(aDelta)},
		{Data: []byte(oContent)},
		{Data: []byte(oRole)},
		{Data: []byte(oError)},
	}
	if a := testing.AllocsPerRun(100, func() {
		for _, ev := range evs {
			KindOf(ev)
		}
	}); a != 0 {
		t.Fatalf("KindOf allocates %v times", a)
	}
}

func TestParseError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		data string
		want ErrorInfo
		ok   bool
	}{
		{aOverloaded, ErrorInfo{"overloaded_error", "Overloaded"}, true},
		{`{"type":"error","error":{"details":null,"type":"api_error","message":"Internal server error"}}`, ErrorInfo{"api_error", "Internal server error"}, true},
		{oError, ErrorInfo{"rate_limit_exceeded", "Rate limit reached"}, true},
		{oError2, ErrorInfo{"server_error", "The server had an error"}, true},
		{`{"error":{"code":429,"message":"Resource exhausted","status":"RESOURCE_EXHAUSTED"}}`, ErrorInfo{"429", "Resource exhausted"}, true},
		{`{"error":"upstream timed out"}`, ErrorInfo{"", "upstream timed out"}, true},
		{`{"type":"error","message":"bad"}`, ErrorInfo{"", "bad"}, true},
		{`  {"error" : {"type" : "x\"y", "message" : "line\nbreak \u00e9"}}  `, ErrorInfo{`x"y`, "line\nbreak é"}, true},
		{`{"error":null}`, ErrorInfo{}, false},
		{`{"error":""}`, ErrorInfo{}, false},
		{aDelta, ErrorInfo{}, false},
		{oContent, ErrorInfo{}, false},
		{`not json`, ErrorInfo{}, false},
		{``, ErrorInfo{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseError([]byte(tt.data))
		if got != tt.want || ok != tt.ok {
			t.Errorf("ParseError(%s) = %+v, %v; want %+v, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

func TestInspector(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		policy  Policy
		stream  string
		want    State
		events  int
		errInfo ErrorInfo
	}{
		{name: "anthropic content", stream: anthropicStream, want: Content, events: 3},
		{name: "anthropic tool use", stream: sse("message_start", aMessageStart, "content_block_start", aToolStart), want: Content, events: 2},
		{name: "anthropic early error", stream: sse("error", aOverloaded), want: Failed, events: 1, errInfo: ErrorInfo{"overloaded_error", "Overloaded"}},
		{name: "anthropic error after preamble", stream: sse("message_start", aMessageStart, "ping", aPing, "error", aOverloaded, "content_block_start", aBlockStart), want: Failed, events: 3, errInfo: ErrorInfo{"overloaded_error", "Overloaded"}},
		{name: "anthropic preamble only", stream: sse("message_start", aMessageStart, "ping", aPing, "ping", aPing), want: Pending, events: 3},
		{name: "anthropic empty message", stream: sse("message_start", aMessageStart, "message_delta", aMessageDelta, "message_stop", aMessageStop), want: Ended, events: 3},
		{name: "untyped anthropic error", stream: sse("", aOverloaded), want: Failed, events: 1, errInfo: ErrorInfo{"overloaded_error", "Overloaded"}},
		{name: "non-JSON error", stream: sse("error", "upstream connect error"), want: Failed, events: 1, errInfo: ErrorInfo{"", "upstream connect error"}},
		{name: "openai content", stream: openAIStream, want: Content, events: 2},
		{name: "openai filter then role then tool call", stream: sse("", oFilter, "", oRole, "", oToolCall), want: Content, events: 3},
		{name: "openai reasoning", stream: sse("", oRole, "", oReason), want: Content, events: 2},
		{name: "openai role only", stream: sse("", oRole), want: Pending, events: 1},
		{name: "openai error", stream: sse("", oError), want: Failed, events: 1, errInfo: ErrorInfo{"rate_limit_exceeded", "Rate limit reached"}},
		{name: "openai error after role", stream: sse("", oRole, "", oError2), want: Failed, events: 2, errInfo: ErrorInfo{"server_error", "The server had an error"}},
		{name: "openai empty", stream: sse("", oRole, "", oFinish, "", oUsage, "", oDone), want: Ended, events: 4},
		{name: "comments and keep-alives only", stream: ": ok\n\n: ping\n\n", want: Pending},
		{name: "first event policy: preamble", policy: HoldFirstEvent, stream: anthropicStream, want: Content, events: 1},
		{name: "first event policy: openai role", policy: HoldFirstEvent, stream: openAIStream, want: Content, events: 1},
		{name: "first event policy: error", policy: HoldFirstEvent, stream: sse("error", aOverloaded), want: Failed, events: 1, errInfo: ErrorInfo{"overloaded_error", "Overloaded"}},
		{name: "first event policy: done", policy: HoldFirstEvent, stream: sse("", oDone), want: Ended, events: 1},
		{name: "first event policy: error after preamble is missed", policy: HoldFirstEvent, stream: sse("message_start", aMessageStart, "error", aOverloaded), want: Content, events: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.stream)
			for _, size := range []int{len(in) + 1, 1, 2, 7, 64} {
				insp := Inspector{Policy: tt.policy}
				got := Pending
				for i := 0; i < len(in); i += size {
					v := insp.Feed(in[i:min(i+size, len(in))])
					if got != Pending && v != got {
						t.Fatalf("chunk %d: state changed from %v to %v", size, got, v)
					}
					got = v
				}
				if got != tt.want || insp.State() != tt.want || insp.Events() != tt.events ||
					insp.Error() != tt.errInfo {
					t.Fatalf("chunk %d: got %v (State %v), %d events, %+v; want %v, %d events, %+v",
						size, got, insp.State(), insp.Events(), insp.Error(), tt.want, tt.events, tt.errInfo)
				}
				// Decisive states stick, whatever follows.
				if got != Pending {
					if v := insp.Feed([]byte(sse("error", aOverloaded))); v != got {
						t.Fatalf("state changed to %v after more input", v)
					}
				}
			}
		})
	}
}

func TestInspectorInvalidAndReset(t *testing.T) {
	t.Parallel()
	insp := Inspector{MaxLine: 64}
	if v := insp.Feed([]byte("event: message_start\ndata: " + aMessageStart + "\n\n")); v != Invalid {
		t.Fatalf("state %v, want invalid", v)
	}
	if insp.p.Err() != ErrLineTooLong {
		t.Fatalf("err %v", insp.p.Err())
	}
	insp.Reset()
	if insp.State() != Pending || insp.p.Err() != nil || insp.Events() != 0 || insp.MaxLine != 64 {
		t.Fatal("Reset kept state")
	}
	insp.MaxLine = 0
	if v := insp.Feed([]byte(sse("error", aOverloaded))); v != Failed {
		t.Fatalf("after Reset: %v", v)
	}
	insp.Reset()
	if insp.Error() != (ErrorInfo{}) {
		t.Fatal("Reset kept the error")
	}
}

func TestInspectorNoAllocs(t *testing.T) {
	in := []byte(anthropicStream)
	var insp Inspector
	insp.Feed(in)
	if a := testing.AllocsPerRun(100, func() {
		insp.Reset()
		for i := 0; i < len(in) && insp.Feed(in[i:min(i+100, len(in))]) == Pending; i += 100 {
		}
	}); a != 0 {
		t.Fatalf("%v allocations per held response", a)
	}
}

func TestStrings(t *testing.T) {
	t.Parallel()
	if KindContent.String() != "content" || Kind(99).String() != "Kind(?)" ||
		Failed.String() != "failed" || State(-1).String() != "State(?)" ||
		HoldFirstEvent.String() != "first_event" || HoldFirstContent.String() != "first_content" || Policy(5).String() != "Policy(?)" {
		t.Fatal("String methods")
	}
	for _, tt := range []struct {
		e    ErrorInfo
		want string
	}{
		{ErrorInfo{"overloaded_error", "Overloaded"}, "overloaded_error: Overloaded"},
		{ErrorInfo{"", "boom"}, "boom"},
		{ErrorInfo{"t", ""}, "t"},
	} {
		if got := tt.e.String(); got != tt.want {
			t.Errorf("%+v.String() = %q", tt.e, got)
		}
	}
}

// Keys are read as decoders read them: an escaped spelling is the same key.
func TestEscapedKeys(t *testing.T) {
	t.Parallel()
	info, ok := ParseError([]byte(`{"typ\u0065":"error","\u0065rror":{"type":"overloaded_error","m\u0065ssage":"Overloaded"}}`))
	if !ok || info.Type != "overloaded_error" || info.Message != "Overloaded" {
		t.Errorf("ParseError = %+v, %v", info, ok)
	}
	var u Usage
	if !u.Add(&Event{Type: "message_delta", Data: []byte(`{"usag\u0065":{"output_t\u006fkens":7}}`)}) || u.OutputTokens != 7 {
		t.Errorf("usage = %+v", u)
	}
}

func FuzzInspector(f *testing.F) {
	f.Add([]byte(anthropicStream), false)
	f.Add([]byte(openAIStream), true)
	f.Add([]byte(sse("error", aOverloaded)), false)
	f.Add([]byte(sse("", oError, "", oUsage)), false)
	f.Add([]byte(sse("message_start", `{"message":{"usage":{"input_tokens":1}}}`, "", `{"type":"message_stop"}`)), true)
	f.Add([]byte(`data: {"error":{"type":"\u0000","message":[1,{"a":"\\"}]},"usage":{"prompt_tokens":-5}}`+"\n\n"), false)
	f.Fuzz(func(t *testing.T, in []byte, firstEvent bool) {
		policy := HoldFirstContent
		if firstEvent {
			policy = HoldFirstEvent
		}
		whole := Inspector{Policy: policy}
		v := whole.Feed(in)
		split := Inspector{Policy: policy}
		var v2 State
		for i := range in {
			v2 = split.Feed(in[i : i+1])
		}
		if len(in) > 0 && (v != v2 || whole.Events() != split.Events() || whole.Error() != split.Error()) {
			t.Fatalf("whole %v %d %+v, bytes %v %d %+v", v, whole.Events(), whole.Error(), v2, split.Events(), split.Error())
		}
		if v != Failed && whole.Error() != (ErrorInfo{}) {
			t.Fatalf("error details without Failed: %+v", whole.Error())
		}

		var w1, w2 Watcher
		w1.Feed(in)
		for i := range in {
			w2.Feed(in[i : i+1])
		}
		e1, f1 := w1.Failed()
		e2, f2 := w2.Failed()
		if w1.Terminal() != w2.Terminal() || f1 != f2 || e1 != e2 || w1.Usage() != w2.Usage() || w1.events != w2.events {
			t.Fatalf("watcher differs when fed bytewise")
		}

		// The raw input as the data of events of every relevant type.
		var u Usage
		for _, typ := range []string{"", "message", "message_start", "message_delta", "error", "ping"} {
			ev := &Event{Type: typ, Data: in, Retry: -1}
			k := KindOf(ev)
			u.Add(ev)
			if k == KindError {
				eventError(ev)
			}
		}
		ParseError(in)

		// ErrorEvent always yields exactly one error event that round-trips.
		s := string(in)
		var n int
		var p Parser
		p.Feed(ErrorEvent(s, s), func(ev *Event) bool {
			n++
			info, ok := ParseError(ev.Data)
			want := validUTF8(s)
			if ev.Type != "error" || !ok || info.Type != want || info.Message != want {
				t.Fatalf("ErrorEvent(%q) round-trips as %q %+v %v", s, ev.Type, info, ok)
			}
			return true
		})
		if n != 1 {
			t.Fatalf("ErrorEvent(%q) yields %d events", s, n)
		}
	})
}
