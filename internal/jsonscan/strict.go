package jsonscan

import (
	"encoding/binary"
	"fmt"
)

// MaxDepth bounds nesting the way encoding/json does: a document nested
// deeper than this is refused by Scanner rather than walked.
const MaxDepth = 10000

// SyntaxError is the first thing a Scanner found wrong.
type SyntaxError struct {
	Offset int    // byte offset at which the problem was found
	Msg    string // what was wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("invalid JSON at byte %d: %s", e.Offset, e.Msg)
}

// Span locates a string token: Start is its opening quote, End is one past
// its closing quote. Esc tells whether it holds an escape (then its text
// must be unescaped before comparing). OK is false for no string.
type Span struct {
	Start, End int
	Esc        bool
	OK         bool
}

// Raw returns the bytes between the quotes, nil for no string.
func (sp Span) Raw(b []byte) []byte {
	if !sp.OK {
		return nil
	}
	return b[sp.Start+1 : sp.End-1]
}

// Text returns the string's value: the raw bytes when there is no escape
// (no allocation), an unescaped copy otherwise.
func (sp Span) Text(b []byte) []byte {
	if !sp.Esc || !sp.OK {
		return sp.Raw(b)
	}
	return AppendUnescape(nil, sp.Raw(b))
}

// Is reports whether the string's value is name, without allocating.
func (sp Span) Is(b []byte, name string) bool {
	if !sp.OK {
		return false
	}
	if !sp.Esc {
		return string(sp.Raw(b)) == name
	}
	return KeyIs(sp.Raw(b), name)
}

// plain[c] is true for the bytes a strict string scan can pass over
// without a second look: not a quote, not a backslash, not a control
// character.
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

// Scanner walks JSON in B from I, validating it as encoding/json does. The
// first error is kept in Err; after it every method is a no-op that
// reports failure. A caller walks what it cares about with Enter, Key, Str
// and More, and skips the rest with Value.
type Scanner struct {
	B   []byte
	I   int
	Err *SyntaxError
}

// Fail records msg at the current offset (unless an error is already
// recorded) and returns false.
func (s *Scanner) Fail(msg string) bool {
	if s.Err == nil {
		s.Err = &SyntaxError{Offset: s.I, Msg: msg}
	}
	return false
}

// Space skips whitespace.
func (s *Scanner) Space() { s.I = SkipSpace(s.B, s.I) }

// Peek skips whitespace and returns the next byte, 0 at the end.
func (s *Scanner) Peek() byte {
	s.Space()
	if s.I < len(s.B) {
		return s.B[s.I]
	}
	return 0
}

// Enter consumes the opening byte of a container and reports whether an
// element follows. An empty container is consumed whole and yields false;
// so does an error (see Err).
func (s *Scanner) Enter(open, close byte) bool {
	if s.Err != nil {
		return false
	}
	if s.Peek() != open {
		return s.Fail("expected " + string(rune(open)))
	}
	s.I++
	if s.Peek() == close {
		s.I++
		return false
	}
	return true
}

// More consumes the separator after an element: true after a comma, false
// after the closing byte or on error.
func (s *Scanner) More(close byte) bool {
	if s.Err != nil {
		return false
	}
	switch s.Peek() {
	case ',':
		s.I++
		return true
	case close:
		s.I++
		return false
	}
	return s.Fail("expected , or " + string(rune(close)))
}

// Key reads an object key and the colon after it, and leaves the scanner
// at the value (whitespace skipped).
func (s *Scanner) Key() Span {
	if s.Err != nil {
		return Span{}
	}
	s.Space()
	k := s.Str()
	if s.Err != nil {
		return Span{}
	}
	if s.Peek() != ':' {
		s.Fail("expected :")
		return Span{}
	}
	s.I++
	s.Space()
	return k
}

// Str reads the string token at I and returns its span.
func (s *Scanner) Str() Span {
	b := s.B
	i := s.I
	if s.Err != nil {
		return Span{}
	}
	if i >= len(b) || b[i] != '"' {
		s.Fail("expected string")
		return Span{}
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
			s.I = i
			s.Fail("unterminated string")
			return Span{}
		}
		switch b[i] {
		case '"':
			s.I = i + 1
			return Span{Start: start, End: i + 1, Esc: esc, OK: true}
		case '\\':
			esc = true
			if i+1 >= len(b) {
				s.I = i
				s.Fail("unterminated escape")
				return Span{}
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if i+6 > len(b) || hex4(b[i+2:i+6]) < 0 {
					s.I = i
					s.Fail("invalid \\u escape")
					return Span{}
				}
				i += 6
			default:
				s.I = i
				s.Fail("invalid escape")
				return Span{}
			}
		default:
			s.I = i
			s.Fail("control character in string")
			return Span{}
		}
	}
}

// Value skips one value of any kind, validating it. depth is the nesting
// level of the container holding it (a top-level object's members are at
// level 1).
func (s *Scanner) Value(depth int) bool {
	if s.Err != nil {
		return false
	}
	switch c := s.Peek(); {
	case c == '"':
		s.Str()
	case c == '{':
		if depth >= MaxDepth {
			return s.Fail("nested too deeply")
		}
		if s.Enter('{', '}') {
			for {
				s.Key()
				s.Value(depth + 1)
				if !s.More('}') {
					break
				}
			}
		}
	case c == '[':
		if depth >= MaxDepth {
			return s.Fail("nested too deeply")
		}
		if s.Enter('[', ']') {
			for {
				s.Value(depth + 1)
				if !s.More(']') {
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
	case c == 0 && s.I >= len(s.B):
		s.Fail("unexpected end of input")
	default:
		s.Fail("unexpected byte")
	}
	return s.Err == nil
}

// End checks that only whitespace follows the top-level value.
func (s *Scanner) End() {
	if s.Err != nil {
		return
	}
	s.Space()
	if s.I < len(s.B) {
		s.Fail("data after the top-level value")
	}
}

func (s *Scanner) literal(word string) {
	if len(s.B)-s.I < len(word) || string(s.B[s.I:s.I+len(word)]) != word {
		s.Fail("invalid literal")
		return
	}
	s.I += len(word)
}

func (s *Scanner) digits() bool {
	start := s.I
	for s.I < len(s.B) && s.B[s.I] >= '0' && s.B[s.I] <= '9' {
		s.I++
	}
	return s.I > start
}

func (s *Scanner) number() {
	b := s.B
	if s.I < len(b) && b[s.I] == '-' {
		s.I++
	}
	switch {
	case s.I < len(b) && b[s.I] == '0':
		s.I++
	case !s.digits():
		s.Fail("invalid number")
		return
	}
	if s.I < len(b) && b[s.I] == '.' {
		s.I++
		if !s.digits() {
			s.Fail("invalid number")
			return
		}
	}
	if s.I < len(b) && (b[s.I] == 'e' || b[s.I] == 'E') {
		s.I++
		if s.I < len(b) && (b[s.I] == '+' || b[s.I] == '-') {
			s.I++
		}
		if !s.digits() {
			s.Fail("invalid number")
		}
	}
}

// Valid reports whether b is one valid JSON value, as json.Valid does.
func Valid(b []byte) bool {
	s := Scanner{B: b}
	s.Value(0)
	s.End()
	return s.Err == nil
}
