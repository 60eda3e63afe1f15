package streaminspect

import (
	"unicode/utf8"
)

// ErrorEvent returns a complete Anthropic-style error event,
//
//	event: error
//	data: {"type":"error","error":{"type":"<errType>","message":"<message>"}}
//
// followed by the empty line that dispatches it. A proxy writes it when a
// committed stream fails, so that clients see a proper error instead of a
// truncated stream. Both strings are JSON-escaped; control characters
// (notably CR and LF, which would break the event framing) are escaped and
// invalid UTF-8 is replaced by U+FFFD, so the result is always one valid
// event.
func ErrorEvent(errType, message string) []byte {
	const (
		head = `event: error` + "\n" + `data: {"type":"error","error":{"type":`
		mid  = `,"message":`
		tail = "}}\n\n"
	)
	b := make([]byte, 0, len(head)+len(mid)+len(tail)+len(errType)+len(message)+8)
	b = append(b, head...)
	b = appendJSONString(b, errType)
	b = append(b, mid...)
	b = appendJSONString(b, message)
	return append(b, tail...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid in JSON but end lines in JavaScript;
		// escape them like encoding/json does, for clients that eval.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
