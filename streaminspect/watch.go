package streaminspect

import (
	"bytes"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
)

// Watcher follows a response after it was committed to the client, when
// failover is no longer possible but the proxy still wants to know how the
// stream went: whether it ended properly, whether it carried an error, and
// the token usage.
//
// It is fed every byte of the stream, so it is built to be cheap: events
// are told apart by type, and JSON is only looked into for message_start,
// message_delta and error events, and for untyped (OpenAI) chunks that
// mention "error", a non-null "usage", or an Anthropic "message_*" type.
// Content deltas are never decoded.
//
// Feed it the whole stream from its first byte, including any prefix a
// proxy held back, or the usage from message_start will be missing.
//
// The zero value is ready to use; set MaxLine before the first Feed. Reuse
// with Reset.
type Watcher struct {
	// MaxLine is passed to the Parser; zero means DefaultMaxLine. An
	// event with a line over it (a huge content delta) is skipped unread
	// (see Skipped), and the Watcher goes on with the next one: it still
	// sees the stream's end, usage and errors.
	MaxLine int

	p        Parser
	events   int
	progress int // events but pings
	terminal bool
	failed   bool
	errInfo  ErrorInfo
	usage    Usage
}

// Feed parses more decoded (uncompressed) stream bytes.
func (w *Watcher) Feed(b []byte) {
	w.p.MaxLine, w.p.SkipLong = w.MaxLine, true
	w.p.Feed(b, w.onEvent)
}

func (w *Watcher) onEvent(ev *Event) bool {
	w.events++
	switch ev.Type {
	case "ping":
		return true // keeps the connection open; says nothing of progress
	case "message_stop":
		w.terminal = true
	case "message_start", "message_delta":
		w.usage.Add(ev)
	case "error":
		w.setError(eventError(ev))
	case "", "message":
		w.untyped(ev.Data)
	}
	w.progress++
	return true
}

// untyped handles events without a type: OpenAI chunks and [DONE]. A
// quick pass over the chunk (see markers) keeps ordinary content chunks
// away from the JSON walker; it may let through a chunk that turns out to
// be ordinary (say, content quoting JSON), never the other way round.
func (w *Watcher) untyped(data []byte) {
	d := jsonscan.TrimSpace(data)
	if string(d) == "[DONE]" {
		w.terminal = true
		return
	}
	if len(d) == 0 || d[0] != '{' {
		return
	}
	hasErr, hasUsage, hasAnthropic := markers(d)
	if hasErr {
		if info, ok := ParseError(d); ok {
			w.setError(info)
		}
	}
	if hasAnthropic && kindOfDataType(jsonscan.Lookup(d, "type")) == KindTerminal {
		w.terminal = true
	}
	if hasUsage || hasAnthropic {
		w.usage.addUntyped(d)
	}
}

// markers reports whether d may have a top-level "error" member or a
// "type":"error" (an error payload), a "usage" member that is not null,
// or a "type":"message_..." (an Anthropic payload without its event line).
// OpenAI sends "usage":null on every chunk when usage reporting is on, and
// the real object only on the last one.
//
// It only stops at colons, which precede every member value and are far
// rarer than quotes in JSON, and looks at the key before and the value
// after. Colons inside strings make harmless false candidates.
func markers(d []byte) (errorish, usage, anthropic bool) {
	for i := 0; ; {
		j := bytes.IndexByte(d[i:], ':')
		if j < 0 {
			return
		}
		c := i + j
		i = c + 1
		k := c
		for k > 0 && isSpace(d[k-1]) {
			k--
		}
		if k < 6 || d[k-1] != '"' {
			continue
		}
		// Dispatch on the key's last letter: most keys fail right here.
		switch d[k-2] {
		case 'r':
			if k >= 7 && string(d[k-7:k]) == `"error"` && !hasNullAt(d, c+1) {
				errorish = true
			}
		case 'e':
			switch {
			case k >= 7 && string(d[k-7:k]) == `"usage"`:
				if v := jsonscan.SkipSpace(d, c+1); v < len(d) && !hasNullAt(d, v) {
					usage = true
				}
			case string(d[k-6:k]) == `"type"`:
				v := d[jsonscan.SkipSpace(d, c+1):]
				if len(v) >= 7 && string(v[:7]) == `"error"` {
					errorish = true
				} else if len(v) >= 9 && string(v[:9]) == `"message_` {
					anthropic = true
				}
			}
		}
	}
}

// hasNullAt reports whether the value at or after i (after whitespace) is null.
func hasNullAt(d []byte, i int) bool {
	i = jsonscan.SkipSpace(d, i)
	return len(d)-i >= 4 && string(d[i:i+4]) == "null"
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func (w *Watcher) setError(info ErrorInfo) {
	if !w.failed { // the first error is the cause; later ones are fallout
		w.failed = true
		w.errInfo = info
	}
}

// Terminal reports whether the stream's normal end (Anthropic message_stop
// or OpenAI [DONE]) was seen. A stream that closes without it was cut off.
func (w *Watcher) Terminal() bool { return w.terminal }

// Failed reports whether an error event was seen, with the first one's
// details.
func (w *Watcher) Failed() (ErrorInfo, bool) { return w.errInfo, w.failed }

// Progress counts the events seen so far that are not pings, events too
// long to read included: what a client takes for a sign of life (Claude
// Code ends a stream 300 s after its last such event, whatever pings came
// since).
func (w *Watcher) Progress() int { return w.progress + w.p.Skipped() }

// Usage returns the token usage reported so far.
func (w *Watcher) Usage() Usage { return w.usage }

// Reset prepares the Watcher for a new stream, keeping MaxLine and buffers.
func (w *Watcher) Reset() {
	w.p.Reset()
	w.events = 0
	w.progress = 0
	w.terminal = false
	w.failed = false
	w.errInfo = ErrorInfo{}
	w.usage = Usage{}
}
