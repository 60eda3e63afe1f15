package streaminspect

import (
	"bytes"
	"errors"
	"math"
)

// DefaultMaxLine is the limit used when Parser.MaxLine is zero: the longest
// line, and the largest data of one event, the parser will hold in memory.
const DefaultMaxLine = 1 << 20

// Errors reported by [Parser.Err]. Once one is reported the parser ignores
// all further input until Reset, so memory stays bounded by MaxLine even
// when a peer sends an endless line.
var (
	// ErrLineTooLong means a line (excluding its line ending) exceeded MaxLine.
	ErrLineTooLong = errors.New("streaminspect: event-stream line too long")
	// ErrEventTooLarge means the data lines of one event, joined, exceeded MaxLine.
	ErrEventTooLarge = errors.New("streaminspect: event-stream event too large")
)

// Event is one dispatched event-stream event.
//
// The parser reuses a single Event and its buffers: an *Event and its Data
// are valid only during the callback that receives them. Copy what you
// need to keep. Type and ID are ordinary strings and may be kept.
type Event struct {
	// Type is the value of the last `event` field of the event, or "" when
	// there was none (the spec then calls the event "message").
	Type string
	// Data is the value of the event's `data` lines joined by "\n". It may
	// be empty (a lone "data:" line dispatches an event with empty data).
	Data []byte
	// ID is the stream's last event ID: the value of the most recent valid
	// `id` field, which per spec persists across events until changed.
	ID string
	// Retry is the value of a valid `retry` field seen in this event's block
	// of lines, in milliseconds, or -1 when there was none.
	Retry int
}

// Parser is an incremental event-stream parser following the WHATWG
// "event stream interpretation" rules:
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
//
// Input may be split anywhere: inside a field name, inside a CRLF pair,
// inside a UTF-8 sequence. Lines end in LF, CRLF or a lone CR; a CR ending
// one chunk and an LF starting the next are one line ending. A UTF-8 BOM at
// the very start of the stream is skipped. Bytes are not UTF-8 validated or
// replaced: every byte the format cares about is ASCII, so working on bytes
// gives the same lines, and invalid sequences simply pass through in Data.
//
// Per spec an event that is not terminated by an empty line before the end
// of the stream is never dispatched, so there is no Flush.
//
// The zero value is ready to use. A Parser must not be used concurrently.
type Parser struct {
	// MaxLine bounds memory: the longest line, and the largest joined data
	// of one event, that will be accepted. Zero means DefaultMaxLine.
	// Exceeding it stops the parser with ErrLineTooLong or ErrEventTooLarge.
	MaxLine int

	// SkipLong drops an event that breaks MaxLine (one over-long line, or
	// data over MaxLine joined) instead of stopping: the rest of the line
	// is skipped as it arrives, the event is not dispatched, and parsing
	// goes on with the next line. Memory stays bounded by MaxLine. Skipped
	// counts the events dropped.
	SkipLong bool

	line []byte // unterminated line carried over from earlier chunks
	data []byte // data buffer of the event being built, when it is copied
	// cur is the data of the event being built: while borrowed, a slice
	// of the chunk being fed (one data line, no copy), else of data. A
	// chunk is only borrowed within one Feed: what is left is copied at
	// its end, since the caller may reuse the chunk's memory.
	cur []byte

	evType   string // event type buffer
	lastType string // last non-well-known type, to avoid re-allocating it
	lastID   string // last event ID buffer

	retry      int // stream reconnection time, valid if retrySet
	blockRetry int // retry seen since the last empty line, valid if blockRetrySet

	bomN          uint8 // bytes of a leading BOM matched so far
	started       bool  // BOM check done
	skipLF        bool  // previous chunk ended in CR: drop a leading LF
	hasData       bool  // at least one data line seen for this event
	borrowed      bool  // cur is a slice of the chunk being fed
	retrySet      bool
	blockRetrySet bool
	skipLine      bool // SkipLong: inside an over-long line, dropping it
	dropEvent     bool // SkipLong: the event being built broke a limit
	skipped       int

	err error
	ev  Event
}

var bom = [3]byte{0xEF, 0xBB, 0xBF}

// Feed parses chunk and calls fn, in order, for each event completed by it.
// fn may be nil to only advance the parser.
//
// Feed returns the number of bytes of chunk it consumed: len(chunk), unless
// fn returned false. Then Feed stops right after the line ending of the
// empty line that dispatched that event and returns its offset; pass
// chunk[n:] to a later Feed to continue where it stopped.
//
// When the input breaks a limit (see MaxLine) Feed records the error, which
// Err reports, and discards the chunk and all later input: it then returns
// len(chunk) and never calls fn again until Reset.
func (p *Parser) Feed(chunk []byte, fn func(ev *Event) bool) int {
	n := p.feed(chunk, fn)
	if p.borrowed {
		p.data = append(p.data[:0], p.cur...)
		p.cur, p.borrowed = p.data, false
	}
	return n
}

func (p *Parser) feed(chunk []byte, fn func(ev *Event) bool) int {
	if p.err != nil {
		return len(chunk)
	}
	pos := 0
	if !p.started {
		// Match a BOM that may itself be split across chunks.
		for pos < len(chunk) && p.bomN < 3 && chunk[pos] == bom[p.bomN] {
			pos++
			p.bomN++
		}
		switch {
		case p.bomN == 3:
			p.started = true
		case pos == len(chunk):
			return len(chunk) // still a possible BOM prefix
		default:
			// Not a BOM after all: the bytes matched in earlier chunks start
			// the first line; those matched in this chunk are parsed again.
			p.started = true
			p.line = append(p.line, bom[:int(p.bomN)-pos]...)
			pos = 0
		}
	}
	if p.skipLF && pos < len(chunk) {
		p.skipLF = false
		if chunk[pos] == '\n' {
			pos++
		}
	}

	limit := p.MaxLine
	if limit <= 0 {
		limit = DefaultMaxLine
	}
	// Indexes of the next LF and CR at or after pos, len(chunk) if none.
	// Each is searched again only once passed, so a chunk without any CR
	// (the usual case) is searched for CR once, not once per line.
	lf, cr := -1, -1
	for pos < len(chunk) {
		if lf < pos {
			lf = indexFrom(chunk, pos, '\n')
		}
		if cr < pos {
			cr = indexFrom(chunk, pos, '\r')
		}
		end := min(lf, cr)
		if end == len(chunk) {
			// Unterminated: keep it for the next chunk, within the limit.
			if p.skipLine || len(p.line)+len(chunk)-pos > limit {
				p.tooLong() // with SkipLong, the rest is skipped as it arrives
				return len(chunk)
			}
			p.line = append(p.line, chunk[pos:]...)
			return len(chunk)
		}
		over := p.skipLine || len(p.line)+end-pos > limit
		if over && !p.tooLong() {
			return len(chunk)
		}
		line := chunk[pos:end]
		if over {
			line = nil // dropped; its line ending still counts
			p.skipLine = false
		}
		fromChunk := true
		if len(p.line) > 0 {
			p.line = append(p.line, line...)
			line, fromChunk = p.line, false
		}
		pos = end + 1
		if chunk[end] == '\r' {
			if pos < len(chunk) {
				if chunk[pos] == '\n' {
					pos++
				}
			} else {
				p.skipLF = true
			}
		}
		var cont bool
		if over {
			cont = true
		} else {
			cont = p.processLine(line, fromChunk, fn, limit)
		}
		p.line = p.line[:0]
		if p.err != nil {
			return len(chunk)
		}
		if !cont {
			return pos
		}
	}
	return len(chunk)
}

// indexFrom returns the index of the first c in b at or after i, or len(b).
func indexFrom(b []byte, i int, c byte) int {
	if j := bytes.IndexByte(b[i:], c); j >= 0 {
		return i + j
	}
	return len(b)
}

// processLine applies one complete line (without its line ending);
// fromChunk says it is a slice of the chunk being fed. It reports whether
// parsing should go on, i.e. false only when fn said stop.
func (p *Parser) processLine(line []byte, fromChunk bool, fn func(*Event) bool, limit int) bool {
	if len(line) == 0 {
		return p.dispatch(fn)
	}
	if line[0] == ':' {
		return true // comment
	}
	name, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		name, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(name) { // no allocation: the compiler compares in place
	case "data":
		if p.dropEvent {
			return true
		}
		switch {
		case p.hasData:
			if len(p.cur)+1+len(value) > limit {
				if p.SkipLong {
					p.dropEvent = true
					p.cur, p.borrowed, p.data = nil, false, p.data[:0]
					return true
				}
				p.fail(ErrEventTooLarge)
				return false
			}
			if p.borrowed {
				p.data = append(p.data[:0], p.cur...)
				p.borrowed = false
			}
			p.data = append(p.data, '\n')
			p.data = append(p.data, value...)
			p.cur = p.data
		case fromChunk:
			p.cur, p.borrowed = value, true
		default:
			p.data = append(p.data[:0], value...)
			p.cur = p.data
		}
		p.hasData = true
	case "event":
		p.evType = p.internType(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 && string(value) != p.lastID {
			p.lastID = string(value)
		}
	case "retry":
		if n, ok := parseDigits(value); ok {
			p.retry, p.retrySet = n, true
			p.blockRetry, p.blockRetrySet = n, true
		}
	}
	return true
}

// dispatch handles an empty line.
func (p *Parser) dispatch(fn func(*Event) bool) bool {
	if p.dropEvent {
		p.dropEvent, p.hasData, p.evType, p.blockRetrySet = false, false, "", false
		p.cur, p.borrowed, p.data = nil, false, p.data[:0]
		p.skipped++
		return true
	}
	if !p.hasData {
		// Per spec: nothing to dispatch, but the block's fields are reset.
		p.evType = ""
		p.blockRetrySet = false
		return true
	}
	ev := &p.ev
	ev.Type = p.evType
	ev.Data = p.cur
	ev.ID = p.lastID
	ev.Retry = -1
	if p.blockRetrySet {
		ev.Retry = p.blockRetry
	}
	p.cur, p.borrowed, p.data = nil, false, p.data[:0]
	p.hasData = false
	p.evType = ""
	p.blockRetrySet = false
	if fn == nil {
		return true
	}
	// p.data is only appended to again after fn returns, and a borrowed
	// chunk is the caller's until Feed returns, so ev.Data stays intact
	// for the duration of the callback.
	return fn(ev)
}

// internType returns the event type as a string without allocating for
// the types LLM providers send on every event.
func (p *Parser) internType(b []byte) string {
	switch string(b) {
	case "":
		return ""
	case "message_start":
		return "message_start"
	case "message_delta":
		return "message_delta"
	case "message_stop":
		return "message_stop"
	case "content_block_start":
		return "content_block_start"
	case "content_block_delta":
		return "content_block_delta"
	case "content_block_stop":
		return "content_block_stop"
	case "ping":
		return "ping"
	case "error":
		return "error"
	case "message":
		return "message"
	}
	if string(b) != p.lastType {
		p.lastType = string(b)
	}
	return p.lastType
}

// parseDigits parses a non-empty run of ASCII digits, saturating at MaxInt.
func parseDigits(b []byte) (int, bool) {
	if len(b) == 0 {
		return 0, false
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := int(c - '0')
		if n > (math.MaxInt-d)/10 {
			n = math.MaxInt
		} else {
			n = n*10 + d
		}
	}
	return n, true
}

// tooLong handles a line over the limit: with SkipLong the line is
// dropped (skipLine until its end arrives) along with its event, and it
// reports true; otherwise the parser stops with ErrLineTooLong.
func (p *Parser) tooLong() bool {
	if !p.SkipLong {
		p.fail(ErrLineTooLong)
		return false
	}
	p.skipLine, p.dropEvent = true, true
	p.line = p.line[:0]
	return true
}

// Skipped returns how many events SkipLong dropped.
func (p *Parser) Skipped() int { return p.skipped }

func (p *Parser) fail(err error) {
	p.err = err
	// Drop the buffers: they may be MaxLine large and are useless now.
	p.line, p.data, p.cur, p.borrowed = nil, nil, nil, false
}

// Err returns ErrLineTooLong or ErrEventTooLarge once a limit was broken,
// nil otherwise.
func (p *Parser) Err() error { return p.err }

// LastEventID returns the last event ID buffer: the value of the most
// recent valid `id` field, even if no event was dispatched since.
func (p *Parser) LastEventID() string { return p.lastID }

// Retry returns the stream's reconnection time set by the most recent valid
// `retry` field, in milliseconds, or -1 if there was none.
func (p *Parser) Retry() int {
	if !p.retrySet {
		return -1
	}
	return p.retry
}

// maxKeep is the buffer capacity Reset keeps for reuse; larger buffers,
// grown by an unusual stream, are left to the garbage collector.
const maxKeep = 64 << 10

// Reset returns the parser to the start of a new stream, keeping MaxLine
// and reasonably sized buffers.
func (p *Parser) Reset() {
	line, data := p.line[:0], p.data[:0]
	if cap(line) > maxKeep {
		line = nil
	}
	if cap(data) > maxKeep {
		data = nil
	}
	*p = Parser{MaxLine: p.MaxLine, SkipLong: p.SkipLong, line: line, data: data, lastType: p.lastType}
}
