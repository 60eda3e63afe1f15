package failover

import (
	"bytes"
	"encoding/json"
)

// requestFields are the few top-level keys of a Messages request the proxy
// needs. Reading them must not cost a JSON decode of a multi-MB body.
type requestFields struct {
	Model string
	// modelStart and modelEnd bound the model value in the body, quotes
	// included, so a provider's mapping replaces exactly those bytes.
	modelStart, modelEnd int
}

// scanRequest reads "model" from the top level of a JSON object without
// decoding the rest. It reads to the end of the object: a
// key given twice counts as JSON decoders read it, the last one wins, so a
// model mapping cannot be sidestepped with a second "model". A body that is
// not a JSON object yields zero fields: such a request is proxied as it is.
func scanRequest(body []byte) requestFields {
	var f requestFields
	s := jsonScanner{b: body}
	s.ws()
	if !s.eat('{') {
		return f
	}
	for {
		s.ws()
		if s.eat('}') || s.i >= len(s.b) {
			return f
		}
		keyStart := s.i
		if !s.skipString() {
			return f
		}
		key := s.b[keyStart:s.i]
		s.ws()
		if !s.eat(':') {
			return f
		}
		s.ws()
		valStart := s.i
		if !s.skipValue() {
			return f
		}
		switch {
		case isKey(key, "model"):
			f.Model, f.modelStart, f.modelEnd = "", 0, 0
			if s.b[valStart] == '"' {
				if m, ok := unquote(s.b[valStart:s.i]); ok {
					f.Model, f.modelStart, f.modelEnd = m, valStart, s.i
				}
			}
		}
		s.ws()
		if !s.eat(',') {
			return f
		}
	}
}

// withModel returns body with the model value replaced by model: only
// those bytes change, the rest stays byte-identical (no re-encoding).
func withModel(body []byte, f requestFields, model string) []byte {
	if f.modelEnd == 0 || model == f.Model {
		return body
	}
	quoted, _ := json.Marshal(model) // a string never fails to marshal
	out := make([]byte, 0, len(body)-(f.modelEnd-f.modelStart)+len(quoted))
	out = append(out, body[:f.modelStart]...)
	out = append(out, quoted...)
	return append(out, body[f.modelEnd:]...)
}

// unquote decodes a JSON string literal, quotes included. It accepts only
// what a JSON decoder accepts (no Go escapes, no raw control characters),
// so an invalid body is never read as naming a model.
func unquote(q []byte) (string, bool) {
	plain := true
	for _, c := range q[1 : len(q)-1] {
		if c == '\\' || c < 0x20 {
			plain = false
			break
		}
	}
	if plain {
		return string(q[1 : len(q)-1]), true
	}
	var v string
	if json.Unmarshal(q, &v) != nil {
		return "", false
	}
	return v, true
}

// jsonScanner skips over JSON values without building them.
type jsonScanner struct {
	b []byte
	i int
}

func (s *jsonScanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

func (s *jsonScanner) eat(c byte) bool {
	if s.i < len(s.b) && s.b[s.i] == c {
		s.i++
		return true
	}
	return false
}

// skipString moves past a string starting at s.i (which must be a quote).
// It jumps from quote to quote with bytes.IndexByte (vectorized), and
// counts the backslashes before a quote to tell an escaped one.
func (s *jsonScanner) skipString() bool {
	if !s.eat('"') {
		return false
	}
	for {
		j := bytes.IndexByte(s.b[s.i:], '"')
		if j < 0 {
			s.i = len(s.b)
			return false
		}
		q := s.i + j
		backslashes := 0
		for k := q - 1; k >= s.i && s.b[k] == '\\'; k-- {
			backslashes++
		}
		s.i = q + 1
		if backslashes%2 == 0 {
			return true
		}
	}
}

// skipValue moves past one value of any kind.
func (s *jsonScanner) skipValue() bool {
	if s.i >= len(s.b) {
		return false
	}
	switch s.b[s.i] {
	case '"':
		return s.skipString()
	case '{', '[':
		depth := 0
		for s.i < len(s.b) {
			// jump to the next byte that matters; prose inside strings is
			// skipped by skipString's own IndexAny
			for s.i < len(s.b) && !structural[s.b[s.i]] {
				s.i++
			}
			if s.i >= len(s.b) {
				return false
			}
			switch s.b[s.i] {
			case '"':
				if !s.skipString() {
					return false
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					s.i++
					return true
				}
			}
			s.i++
		}
		return false
	default: // number, true, false, null
		start := s.i
		for s.i < len(s.b) {
			switch s.b[s.i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return s.i > start
			}
			s.i++
		}
		return s.i > start
	}
}

// structural marks the bytes that matter when skipping a container.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// isKey reports whether the quoted key q names name, as a JSON decoder
// reads it: a key spelled with escapes ("mod\u0065l") is the same key.
func isKey(q []byte, name string) bool {
	if len(q) == len(name)+2 && string(q[1:len(q)-1]) == name {
		return true
	}
	if bytes.IndexByte(q, '\\') < 0 {
		return false
	}
	k, ok := unquote(q)
	return ok && k == name
}

// requestModel reads the top-level "model" that upstream JSON decoders
// read: the last one, however its key is spelled. It stops at the first
// one and keeps it when the rest of the body cannot hold another such key
// (no "model" and no \u escape of one of its letters), which is every
// ordinary request: Claude Code sends model first. Otherwise it scans
// the whole object.
func requestModel(body []byte) requestFields {
	f, end, found := peekModel(body)
	if !found || !mayHoldModelKey(body[end:]) {
		return f
	}
	return scanRequest(body)
}

// mayHoldModelKey reports whether b may contain a key spelled "model":
// the plain key, or one with a letter written as a \u escape (m, o, d, e
// and l are all \u006X). Both are vectorized searches: a few tens of
// microseconds for a 200KB body, against a full scan's hundreds.
func mayHoldModelKey(b []byte) bool {
	if bytes.Contains(b, []byte(`"model"`)) {
		return true
	}
	// searched as u006: a backslash first is much slower to find in
	// bodies full of \n and \"
	for {
		i := bytes.Index(b, []byte("u006"))
		if i < 0 || i+4 >= len(b) {
			return false
		}
		if i > 0 && b[i-1] == '\\' {
			switch b[i+4] {
			case 'd', 'D', 'f', 'F', '4', '5', 'c', 'C': // m o d e l
				return true
			}
		}
		b = b[i+4:]
	}
}

// peekModel reads the first top-level "model" key (plain or escaped) and
// stops there, returning where its value ends. found is false when the
// body has no such key (the whole top level was read) or is not an
// object.
func peekModel(body []byte) (f requestFields, end int, found bool) {
	s := jsonScanner{b: body}
	s.ws()
	if !s.eat('{') {
		return f, 0, false
	}
	for {
		s.ws()
		keyStart := s.i
		if !s.skipString() {
			return f, 0, false
		}
		key := s.b[keyStart:s.i]
		s.ws()
		if !s.eat(':') {
			return f, 0, false
		}
		s.ws()
		valStart := s.i
		if !s.skipValue() {
			return f, 0, false
		}
		if isKey(key, "model") {
			if s.b[valStart] == '"' {
				if m, ok := unquote(s.b[valStart:s.i]); ok {
					f.Model, f.modelStart, f.modelEnd = m, valStart, s.i
				}
			}
			return f, s.i, true
		}
		s.ws()
		if !s.eat(',') {
			return f, 0, false
		}
	}
}
