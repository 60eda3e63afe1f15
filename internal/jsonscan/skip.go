package jsonscan

import (
	"bytes"
	"encoding/binary"
	"math/bits"
)

// SkipSpace returns the index of the first byte at or after i that is not
// JSON whitespace.
func SkipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// TrimSpace returns b without the JSON whitespace around it.
func TrimSpace(b []byte) []byte {
	i := SkipSpace(b, 0)
	j := len(b)
	for j > i {
		switch b[j-1] {
		case ' ', '\t', '\n', '\r':
			j--
			continue
		}
		break
	}
	return b[i:j]
}

// wordsBeforeIndex is how many eight-byte words SkipString reads before
// it switches to bytes.IndexByte: most keys and many values are shorter,
// and for them a word loop beats the call.
const wordsBeforeIndex = 3

// quoteOrBackslash returns x's bytes that are a quote or a backslash, as
// their high bit (the "has zero byte" word trick: the lowest bit set is
// exact, the ones above it may not be).
func quoteOrBackslash(x uint64) uint64 {
	quote := x ^ (ones * '"')
	slash := x ^ (ones * '\\')
	return ((quote-ones)&^quote | (slash-ones)&^slash) & highs
}

// SkipString expects b[i] == '"' and returns the index just past the
// closing quote, or -1 if the string does not end. Escapes are not checked:
// a backslash escapes the byte after it. Short strings are read eight bytes
// at a time; past the first words it jumps from quote to quote with
// bytes.IndexByte, which passes over prose, code and base64 many bytes at a
// time, \n and \t escapes included, and counts the backslashes before a
// quote to tell an escaped one.
func SkipString(b []byte, i int) int {
	end, _ := skipString(b, i)
	return end
}

// skipString is SkipString that also reports whether the string may hold
// an escape: false only when it certainly holds none, so a key can be
// compared without a second look.
func skipString(b []byte, i int) (end int, esc bool) {
	i++
	for w := 0; w < wordsBeforeIndex; {
		if i+8 > len(b) {
			for ; i < len(b); i++ {
				switch b[i] {
				case '"':
					return i + 1, esc
				case '\\':
					esc = true
					i++ // the escaped byte cannot close the string
				}
			}
			return -1, esc
		}
		m := quoteOrBackslash(binary.LittleEndian.Uint64(b[i:]))
		if m == 0 {
			i += 8
			w++
			continue
		}
		i += bits.TrailingZeros64(m) / 8
		if b[i] == '"' {
			return i + 1, esc
		}
		esc = true
		i += 2 // a backslash and the byte it escapes
	}
	// i is where no escape is pending: a backslash run before a quote
	// starts at or after it.
	for i < len(b) {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return -1, true
		}
		q := i + j
		k := q
		for k > i && b[k-1] == '\\' {
			k--
		}
		if (q-k)%2 == 0 {
			return q + 1, true
		}
		i = q + 1
	}
	return -1, true
}

// structural marks the bytes that matter when skipping a container.
var structural = [256]bool{'"': true, '{': true, '}': true, '[': true, ']': true}

// SkipValue returns the index just past the value starting at b[i], or -1
// when there is none. Objects and arrays are skipped by counting brackets
// outside strings (brackets are counted, not matched); numbers and literals
// run to the next delimiter. It allocates nothing, however deep the nesting.
func SkipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return SkipString(b, i)
	case '{', '[':
		depth := 0
		for {
			for i < len(b) && !structural[b[i]] {
				i++
			}
			if i >= len(b) {
				return -1
			}
			switch b[i] {
			case '"':
				if i = SkipString(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			default: // '}', ']'
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	case ',', ':', '}', ']':
		return -1
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			if i == start {
				return -1
			}
			return i
		}
		i++
	}
	return i
}
