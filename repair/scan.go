package repair

import (
	"encoding/binary"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting the way encoding/json does: a body nested deeper
// than this is refused rather than walked.
const maxDepth = 10000

// SyntaxError reports a body that is not the JSON object the functions of
// this package edit. Nothing is edited when one is returned.
type SyntaxError struct {
	Offset int    // byte offset at which the problem was found
	Msg    string // what was wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("repair: invalid request body at byte %d: %s", e.Offset, e.Msg)
}

// span locates a JSON string token in the body: start is the opening quote,
// end is one past the closing quote. esc tells whether the token holds a
// backslash escape (then its text must be unescaped before comparing).
type span struct {
	start, end int
	esc        bool
	ok         bool
}

// raw returns the bytes between the quotes, nil for an absent string.
func (sp span) raw(b []byte) []byte {
	if !sp.ok {
		return nil
	}
	return b[sp.start+1 : sp.end-1]
}

// text returns the string's value: the raw bytes when there is no escape
// (no allocation), an unescaped copy otherwise.
func (sp span) text(b []byte) []byte {
	if !sp.esc || !sp.ok {
		return sp.raw(b)
	}
	return appendUnescape(nil, sp.raw(b))
}

// is reports whether the string's value equals name, without allocating.
func (sp span) is(b []byte, name string) bool {
	if !sp.ok {
		return false
	}
	if !sp.esc {
		return string(sp.raw(b)) == name
	}
	var buf [64]byte
	return string(appendUnescape(buf[:0], sp.raw(b))) == name
}

// plain[c] is true for the bytes a string scan can pass over without a
// second look: not a quote, not a backslash, not a control character.
var plain = func() (t [256]bool) {
	for c := 0x20; c < 256; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// special8 reports whether any of the eight bytes in x is a quote, a
// backslash or a control character (the classic "has zero byte" and "has
// byte less than n" word tricks; exact, no false negatives).
func special8(x uint64) bool {
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	return ((quote-ones)&^quote|(slash-ones)&^slash|(x-ones*0x20)&^x)&highs != 0
}

// scanner reads JSON from b starting at i. The first error is kept in err;
// after it every method is a no-op that reports failure.
type scanner struct {
	b   []byte
	i   int
	err error
}

func (s *scanner) fail(msg string) bool {
	if s.err == nil {
		s.err = &SyntaxError{Offset: s.i, Msg: msg}
	}
	return false
}

func (s *scanner) ws() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek skips whitespace and returns the next byte, 0 at the end.
func (s *scanner) peek() byte {
	s.ws()
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// enter consumes the opening byte of a container and reports whether an
// element follows. An empty container is consumed whole and yields false;
// so does an error (see s.err).
func (s *scanner) enter(open, close byte) bool {
	if s.err != nil {
		return false
	}
	if s.peek() != open {
		return s.fail("expected " + string(rune(open)))
	}
	s.i++
	if s.peek() == close {
		s.i++
		return false
	}
	return true
}

// more consumes the separator after an element: true after a comma, false
// after the closing byte or on error.
func (s *scanner) more(close byte) bool {
	if s.err != nil {
		return false
	}
	switch s.peek() {
	case ',':
		s.i++
		return true
	case close:
		s.i++
		return false
	}
	return s.fail("expected , or " + string(rune(close)))
}

// key reads an object key and the colon after it, and leaves the scanner
// at the value (whitespace skipped).
func (s *scanner) key() span {
	if s.err != nil {
		return span{}
	}
	s.ws()
	k := s.str()
	if s.err != nil {
		return span{}
	}
	if s.peek() != ':' {
		s.fail("expected :")
		return span{}
	}
	s.i++
	s.ws()
	return k
}

// str reads a string token at s.i and returns its span.
func (s *scanner) str() span {
	b := s.b
	i := s.i
	if s.err != nil {
		return span{}
	}
	if i >= len(b) || b[i] != '"' {
		s.fail("expected string")
		return span{}
	}
	start := i
	i++
	esc := false
	for {
		// Eight bytes at a time while none of them needs a look (most of a
		// multi-MB body is base64 and prose), then byte by byte up to the
		// one that does.
		for i+8 <= len(b) && !special8(binary.LittleEndian.Uint64(b[i:])) {
			i += 8
		}
		for i < len(b) && plain[b[i]] {
			i++
		}
		if i >= len(b) {
			s.i = i
			s.fail("unterminated string")
			return span{}
		}
		switch b[i] {
		case '"':
			s.i = i + 1
			return span{start: start, end: i + 1, esc: esc, ok: true}
		case '\\':
			esc = true
			if i+1 >= len(b) {
				s.i = i
				s.fail("unterminated escape")
				return span{}
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hex4(b[i+2:i+6]) < 0 {
					s.i = i
					s.fail("invalid \\u escape")
					return span{}
				}
				i += 6
			default:
				s.i = i
				s.fail("invalid escape")
				return span{}
			}
		default:
			s.i = i
			s.fail("control character in string")
			return span{}
		}
	}
}

// value skips one value of any kind, validating it. depth is the nesting
// level of the container holding it (the top-level object is level 1).
func (s *scanner) value(depth int) bool {
	if s.err != nil {
		return false
	}
	switch c := s.peek(); {
	case c == '"':
		s.str()
	case c == '{':
		if depth >= maxDepth {
			return s.fail("nested too deeply")
		}
		if s.enter('{', '}') {
			for {
				s.key()
				s.value(depth + 1)
				if !s.more('}') {
					break
				}
			}
		}
	case c == '[':
		if depth >= maxDepth {
			return s.fail("nested too deeply")
		}
		if s.enter('[', ']') {
			for {
				s.value(depth + 1)
				if !s.more(']') {
					break
				}
			}
		}
	case c == 't':
		s.literal("true")
	case c == 'f':
		s.literal("false")
	case c == 'n':
		s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		s.number()
	case c == 0 && s.i >= len(s.b):
		s.fail("unexpected end of body")
	default:
		s.fail("unexpected byte")
	}
	return s.err == nil
}

func (s *scanner) literal(word string) {
	if len(s.b)-s.i < len(word) || string(s.b[s.i:s.i+len(word)]) != word {
		s.fail("invalid literal")
		return
	}
	s.i += len(word)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && isDigit(s.b[s.i]) {
		s.i++
	}
	return s.i > start
}

func (s *scanner) number() {
	b := s.b
	if s.i < len(b) && b[s.i] == '-' {
		s.i++
	}
	switch {
	case s.i < len(b) && b[s.i] == '0':
		s.i++
	case !s.digits():
		s.fail("invalid number")
		return
	}
	if s.i < len(b) && b[s.i] == '.' {
		s.i++
		if !s.digits() {
			s.fail("invalid number")
			return
		}
	}
	if s.i < len(b) && (b[s.i] == 'e' || b[s.i] == 'E') {
		s.i++
		if s.i < len(b) && (b[s.i] == '+' || b[s.i] == '-') {
			s.i++
		}
		if !s.digits() {
			s.fail("invalid number")
		}
	}
}

// end checks that only whitespace follows the top-level value.
func (s *scanner) end() {
	if s.err != nil {
		return
	}
	s.ws()
	if s.i < len(s.b) {
		s.fail("data after the top-level value")
	}
}

// hex4 decodes four hex digits, -1 if they are not.
func hex4(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

// appendUnescape appends the value of a string's raw bytes (between the
// quotes, already validated by str) to dst, decoding escapes the way
// encoding/json does: a lone surrogate becomes U+FFFD. Bytes that are not
// UTF-8 are kept as they are (encoding/json would replace them); the result
// only feeds comparisons and the id hash, which see the same bytes whether
// or not the string held escapes.
func appendUnescape(dst, raw []byte) []byte {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			dst = append(dst, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			if i+6 > len(raw) {
				dst = append(dst, raw[i:]...)
				return dst
			}
			r := hex4(raw[i+2 : i+6])
			i += 6
			if utf16.IsSurrogate(r) {
				r2 := rune(-1)
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 = hex4(raw[i+2 : i+6])
				}
				if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			if r < 0 {
				r = utf8.RuneError
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default: // " \ /
			dst = append(dst, raw[i+1])
		}
		i += 2
	}
	return dst
}
