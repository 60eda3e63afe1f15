package jsonscan

import (
	"bytes"
	"unicode/utf16"
	"unicode/utf8"
)

// KeyIs reports whether the raw string (between its quotes, as Member.Key
// and Span.Raw give it) reads as name once unescaped. name must be plain
// (no backslash, quote or control character), as every key we look for
// is. Without an escape this is one comparison: an escaped string is
// always longer than its value, so only a longer one is decoded, on the
// stack.
func KeyIs(raw []byte, name string) bool {
	switch {
	case len(raw) == len(name):
		return string(raw) == name
	case len(raw) < len(name) || len(raw) > 6*len(name) || bytes.IndexByte(raw, '\\') < 0:
		return false
	}
	var buf [64]byte
	v, ok := unescape(buf[:0], raw)
	return ok && string(v) == name
}

// Unquote returns the value of the JSON string q (quotes included). It
// accepts exactly what encoding/json accepts, so an invalid string is never
// read as a value; the value is the one encoding/json decodes, except that
// bytes that are not UTF-8 are kept as they are.
func Unquote(q []byte) (string, bool) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", false
	}
	inner := q[1 : len(q)-1]
	if Plain(inner) {
		return string(inner), true
	}
	s := Scanner{B: q}
	if s.Str(); s.Err != nil || s.I != len(q) {
		return "", false
	}
	return string(AppendUnescape(nil, inner)), true
}

// Plain reports whether raw, the bytes between a string's quotes, is its
// value as it is: no escape, no quote, no control character.
func Plain(raw []byte) bool {
	for _, c := range raw {
		if c == '\\' || c == '"' || c < 0x20 {
			return false
		}
	}
	return true
}

// Text returns a value as text, for messages: a string is decoded (or
// given as written between its quotes when it is not valid), null is "",
// and any other value (a numeric error code, say) is returned as written.
// It allocates; use it on rare payloads only.
func Text(raw []byte) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] != '"' {
		return string(raw)
	}
	if len(raw) < 2 {
		return ""
	}
	if s, ok := Unquote(raw); ok {
		return s
	}
	return string(raw[1 : len(raw)-1])
}

// Int parses an integer of at most 18 digits (a token count, say).
// Fractions, exponents and anything longer are refused.
func Int(raw []byte) (int64, bool) {
	neg := false
	if len(raw) > 0 && raw[0] == '-' {
		neg, raw = true, raw[1:]
	}
	if len(raw) == 0 || len(raw) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// AppendUnescape appends the value of a string's raw bytes (between the
// quotes, valid: see Scanner.Str) to dst, decoding escapes the way
// encoding/json does: a lone surrogate becomes U+FFFD. Bytes that are not
// UTF-8 are kept as they are (encoding/json would replace them).
func AppendUnescape(dst, raw []byte) []byte {
	dst, _ = unescape(dst, raw)
	return dst
}

// unescape is AppendUnescape that also reports whether raw was a valid
// string body: no quote, no control character, no unknown escape. On
// invalid input the bytes appended so far are returned with false.
func unescape(dst, raw []byte) ([]byte, bool) {
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			if c < 0x20 || c == '"' {
				return dst, false
			}
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(raw) {
			return dst, false
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
		case '"', '\\', '/':
			dst = append(dst, raw[i+1])
		case 'u':
			if i+6 > len(raw) {
				return dst, false
			}
			r := hex4(raw[i+2 : i+6])
			if r < 0 {
				return dst, false
			}
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
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, false
		}
		i += 2
	}
	return dst, true
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
