package streaminspect

import "github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"

// Kind classifies an event of an LLM stream by what it means for failover.
type Kind int

// Kinds of events. The zero value is KindOther.
const (
	// KindOther is an event that says nothing about the stream's health:
	// Anthropic message_delta, unknown event types, OpenAI finish or usage
	// chunks, non-JSON data.
	KindOther Kind = iota
	// KindPreamble is an event a provider sends before generating: Anthropic
	// message_start and ping, an OpenAI chunk whose delta only has a role.
	KindPreamble
	// KindContent is model output: Anthropic content_block_start/delta/stop,
	// an OpenAI chunk whose delta has non-empty content, reasoning, refusal
	// or tool calls.
	KindContent
	// KindError is an error event: Anthropic `event: error`, or data
	// carrying an "error" object or "type":"error".
	KindError
	// KindTerminal is the normal end: Anthropic message_stop, OpenAI [DONE].
	KindTerminal
)

var kindNames = [...]string{"other", "preamble", "content", "error", "terminal"}

// String returns the kind's name, for logs and metrics labels.
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "Kind(?)"
}

// KindOf classifies ev. It decides by the event type when there is one and
// only looks into the data when the type does not tell: untyped events
// (OpenAI, or Anthropic payloads whose `event` line was dropped by some
// intermediary, recognized by their "type" member). It never allocates.
func KindOf(ev *Event) Kind {
	switch ev.Type {
	case "content_block_delta", "content_block_start", "content_block_stop":
		// A block start counts as content: the model has begun its answer
		// (for tool_use the start already names the tool), and deciding by
		// the event type keeps KindOf from decoding anything here.
		return KindContent
	case "message_start", "ping":
		return KindPreamble
	case "message_stop":
		return KindTerminal
	case "error":
		return KindError
	case "", "message":
		return kindOfData(ev.Data)
	}
	return KindOther
}

// isContentKey reports whether k is a member of an OpenAI delta that
// carries model output. "reasoning" is what some OpenAI-compatible gateways
// use for reasoning_content.
func isContentKey(k []byte) bool {
	switch string(k) {
	case "content", "reasoning_content", "reasoning", "refusal", "tool_calls", "function_call":
		return true
	}
	return false
}

// kindOfData classifies untyped event data.
func kindOfData(data []byte) Kind {
	d := jsonscan.TrimSpace(data)
	if string(d) == "[DONE]" {
		return KindTerminal
	}
	var isErr, content, role bool
	typed := KindOther
	var kb, dkb [32]byte
	it := jsonscan.Object(d)
	for it.Next() {
		m := &it.Member
		v := m.Value
		switch string(m.Name(kb[:0])) {
		case "error":
			if isErrorValue(v) {
				isErr = true
			}
		case "type":
			typed = kindOfDataType(v)
			if typed == KindError {
				isErr = true
			}
		case "choices":
			ci := jsonscan.Array(v)
			for c, ok := ci.Next(); ok && !content; c, ok = ci.Next() {
				di := jsonscan.Object(jsonscan.Lookup(c, "delta"))
				for di.Next() {
					dm := &di.Member
					dk := dm.Name(dkb[:0])
					if isContentKey(dk) && !isEmptyValue(dm.Value) {
						content = true
						break
					}
					if string(dk) == "role" {
						role = true
					}
				}
			}
		}
	}
	switch {
	case isErr:
		return KindError
	case content:
		return KindContent
	case typed != KindOther:
		return typed
	case role:
		return KindPreamble
	}
	return KindOther
}

// kindOfDataType maps the raw "type" member of an untyped payload, which
// for Anthropic mirrors the event name.
func kindOfDataType(v []byte) Kind {
	switch string(v) {
	case `"error"`:
		return KindError
	case `"content_block_delta"`, `"content_block_start"`, `"content_block_stop"`:
		return KindContent
	case `"message_start"`, `"ping"`:
		return KindPreamble
	case `"message_stop"`:
		return KindTerminal
	}
	return KindOther
}

// ErrorInfo describes an error event.
type ErrorInfo struct {
	// Type is the provider's error type: error.type (Anthropic
	// "overloaded_error", OpenAI "server_error"), or OpenAI's error.code
	// when the type is missing.
	Type string
	// Message is the human-readable error.message.
	Message string
}

// String formats the error for logs.
func (e ErrorInfo) String() string {
	switch {
	case e.Type == "":
		return e.Message
	case e.Message == "":
		return e.Type
	}
	return e.Type + ": " + e.Message
}

// ParseError extracts the error from an event's data. It recognizes the
// Anthropic payload {"type":"error","error":{"type":..,"message":..}}, the
// OpenAI payload {"error":{"type":..,"code":..,"message":..}}, and a bare
// {"error":"message"}, regardless of the event type. ok is false when data
// is not an error payload. It allocates the strings it returns, so call it
// only for events already known to be errors (or rare ones).
func ParseError(data []byte) (info ErrorInfo, ok bool) {
	var errV, typV, msgV []byte
	var kb [32]byte
	it := jsonscan.Object(data)
	for it.Next() {
		m := &it.Member
		switch string(m.Name(kb[:0])) {
		case "error":
			errV = m.Value
		case "type":
			typV = m.Value
		case "message":
			msgV = m.Value
		}
	}
	switch {
	case isObject(errV):
		var code []byte
		ei := jsonscan.Object(errV)
		for ei.Next() {
			m := &ei.Member
			switch string(m.Name(kb[:0])) {
			case "type":
				info.Type = jsonscan.Text(m.Value)
			case "code":
				code = m.Value
			case "message":
				info.Message = jsonscan.Text(m.Value)
			}
		}
		if info.Type == "" {
			info.Type = jsonscan.Text(code)
		}
		return info, true
	case isErrorValue(errV):
		return ErrorInfo{Message: jsonscan.Text(errV)}, true
	case string(typV) == `"error"`:
		if len(msgV) > 0 && msgV[0] == '"' {
			info.Message = jsonscan.Text(msgV)
		}
		return info, true
	}
	return ErrorInfo{}, false
}

// isErrorValue reports whether the raw value of an "error" member denotes
// an error: an object, or a non-empty string. Some providers send
// "error":null on healthy chunks.
func isErrorValue(v []byte) bool {
	return isObject(v) || (len(v) > 2 && v[0] == '"')
}

// isObject reports whether a raw value is a JSON object.
func isObject(raw []byte) bool { return len(raw) > 0 && raw[0] == '{' }

// isEmptyValue reports whether raw is absent, null, "", [] or {}: the ways
// a provider says "nothing here" for an optional field.
func isEmptyValue(raw []byte) bool {
	if len(raw) == 0 {
		return true
	}
	switch raw[0] {
	case 'n':
		return string(raw) == "null"
	case '"':
		return len(raw) == 2
	case '[', '{':
		return jsonscan.SkipSpace(raw, 1) == len(raw)-1
	}
	return false
}

// maxRawError bounds how much of a non-JSON error payload is kept.
const maxRawError = 512

// eventError returns the ErrorInfo of an event classified as KindError.
// A payload that is not recognizable JSON is kept (truncated) as the
// message so that logs still show what the upstream said.
func eventError(ev *Event) ErrorInfo {
	if info, ok := ParseError(ev.Data); ok {
		return info
	}
	msg := jsonscan.TrimSpace(ev.Data)
	if len(msg) > maxRawError {
		msg = msg[:maxRawError]
	}
	return ErrorInfo{Message: string(msg)}
}

// Policy says how long an Inspector holds a response.
type Policy int

const (
	// HoldFirstContent (the default) holds until the first content event,
	// an error event, or the terminal event. It catches errors that follow
	// the preamble (Anthropic sends overloaded_error after message_start).
	HoldFirstContent Policy = iota
	// HoldFirstEvent is decisive at the first event of any kind, trading
	// the errors that come after a preamble for less time to first byte.
	// A first event that is an error still yields Failed.
	HoldFirstEvent
)

// String returns the policy's name, for logs and configuration.
func (p Policy) String() string {
	switch p {
	case HoldFirstContent:
		return "first_content"
	case HoldFirstEvent:
		return "first_event"
	}
	return "Policy(?)"
}

// State is where a held stream stands, as far as an Inspector has read it:
// pending, or decided (content, failed, ended, invalid).
type State int

const (
	// Pending means no decisive event yet: keep holding and feeding.
	Pending State = iota
	// Content means the stream is healthy and producing: the first content
	// event was seen (under HoldFirstEvent: the first non-error event that
	// was not terminal). Release the response.
	Content
	// Failed means an error event came first; Error describes it. The
	// response may be discarded and the request failed over.
	Failed
	// Ended means the terminal event came before any content, e.g. an empty
	// message. What to do with it is the caller's policy.
	Ended
	// Invalid means the bytes broke the parser's limits (see Err): no
	// judgement is possible. Callers typically stop holding and pass the
	// response through as is.
	Invalid
)

var stateNames = [...]string{"pending", "content", "failed", "ended", "invalid"}

// String returns the state's name, for logs and metrics labels.
func (v State) String() string {
	if v >= 0 && int(v) < len(stateNames) {
		return stateNames[v]
	}
	return "State(?)"
}

// Inspector inspects the first events of a response that a proxy holds
// back, to decide whether to release it or fail over.
//
// The zero value is ready to use with the HoldFirstContent policy. Set
// Policy and MaxLine before the first Feed. Reuse with Reset.
type Inspector struct {
	// Policy selects when the hold ends.
	Policy Policy
	// MaxLine is passed to the Parser; zero means DefaultMaxLine.
	MaxLine int

	p       Parser
	state   State
	events  int
	errInfo ErrorInfo
}

// Feed takes decoded (uncompressed) stream bytes, in order, and returns the
// state so far. The first decisive (non-Pending) state is final: Feed
// stops parsing at the decisive event and every later Feed returns the same
// state without looking at its input.
func (in *Inspector) Feed(b []byte) State {
	if in.state != Pending {
		return in.state
	}
	in.p.MaxLine = in.MaxLine
	in.p.Feed(b, in.onEvent)
	if in.state == Pending && in.p.Err() != nil {
		in.state = Invalid
	}
	return in.state
}

func (in *Inspector) onEvent(ev *Event) bool {
	in.events++
	switch KindOf(ev) {
	case KindError:
		in.state = Failed
		in.errInfo = eventError(ev)
	case KindContent:
		in.state = Content
	case KindTerminal:
		in.state = Ended
	default:
		if in.Policy != HoldFirstEvent {
			return true
		}
		in.state = Content
	}
	return false
}

// State returns the state so far, as the last Feed did.
func (in *Inspector) State() State { return in.state }

// Error returns the error event's details when the state is Failed, and
// the zero ErrorInfo otherwise.
func (in *Inspector) Error() ErrorInfo { return in.errInfo }

// Events returns how many events were seen, up to and including the
// decisive one.
func (in *Inspector) Events() int { return in.events }

// Reset prepares the Inspector for a new response, keeping Policy, MaxLine
// and buffers.
func (in *Inspector) Reset() {
	in.p.Reset()
	in.state = Pending
	in.events = 0
	in.errInfo = ErrorInfo{}
}
