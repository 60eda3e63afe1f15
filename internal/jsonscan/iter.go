package jsonscan

import "bytes"

// Member is one member of an object, as written: nothing is decoded.
type Member struct {
	Key   []byte // between the quotes, escapes not decoded (see KeyIs)
	Value []byte // the whole value: a string keeps its quotes
	Start int    // offset of Value in the bytes being iterated
	esc   bool   // Key may hold an escape (false: certainly none)
}

// KeyIs reports whether the member's key is name, as a JSON decoder reads
// it: "mod\u0065l" is "model".
func (m *Member) KeyIs(name string) bool {
	if !m.esc {
		return string(m.Key) == name
	}
	return KeyIs(m.Key, name)
}

// Members iterates over the members of an object, leniently (see SkipValue):
//
//	it := jsonscan.Object(b)
//	for it.Next() {
//		m := &it.Member
//		...
//	}
//
// It stops at the end of the object or at the first member it cannot read;
// the members before stay good. Bytes after the object are not looked at.
type Members struct {
	Member // the current member, after Next returned true
	cursor
}

// cursor is where an iteration over an object or an array stands.
type cursor struct {
	b    []byte
	i    int
	done bool
}

// openCursor starts a cursor inside the container that bracket opens at
// the start of b (after any whitespace); anything else is done at once.
func openCursor(b []byte, bracket byte) cursor {
	i := SkipSpace(b, 0)
	if i >= len(b) || b[i] != bracket {
		return cursor{done: true}
	}
	return cursor{b: b, i: i + 1}
}

// Object starts iterating over the object in b, which may be surrounded by
// whitespace. Anything that is not an object has no members.
func Object(b []byte) Members {
	return Members{cursor: openCursor(b, '{')}
}

// Next moves to the next member and reports whether there is one.
func (it *Members) Next() bool {
	if it.done {
		return false
	}
	it.done = true // until this member is read whole
	b := it.b
	i := SkipSpace(b, it.i)
	if i >= len(b) || b[i] != '"' {
		return false // '}' or garbage
	}
	ks := i
	ke, esc := skipString(b, ks)
	if ke < 0 {
		return false
	}
	i = SkipSpace(b, ke)
	if i >= len(b) || b[i] != ':' {
		return false
	}
	vs := SkipSpace(b, i+1)
	ve := SkipValue(b, vs)
	if ve < 0 {
		return false
	}
	i = SkipSpace(b, ve)
	if i < len(b) && b[i] == ',' {
		it.i, it.done = i+1, false
	}
	// else '}' or garbage: this member is good, but it is the last.
	it.Member = Member{Key: b[ks+1 : ke-1], Value: b[vs:ve], Start: vs, esc: esc}
	return true
}

// Elements iterates over the elements of an array, leniently.
type Elements struct {
	cursor
}

// Array starts iterating over the array in b (whitespace around allowed).
// Anything that is not an array has no elements.
func Array(b []byte) Elements {
	return Elements{cursor: openCursor(b, '[')}
}

// Next returns the next element, or false at the end.
func (it *Elements) Next() ([]byte, bool) {
	if it.done {
		return nil, false
	}
	it.done = true
	b := it.b
	i := SkipSpace(b, it.i)
	ve := SkipValue(b, i) // -1 on ']' too
	if ve < 0 {
		return nil, false
	}
	v := b[i:ve]
	i = SkipSpace(b, ve)
	if i < len(b) && b[i] == ',' {
		it.i, it.done = i+1, false
	}
	return v, true
}

// Lookup returns the value of the first member named key in the object b,
// or nil. It stops there: use Members to honour a repeated key the way
// decoders do (the last one wins).
func Lookup(b []byte, key string) []byte {
	it := Object(b)
	for it.Next() {
		if it.KeyIs(key) {
			return it.Value
		}
	}
	return nil
}

// Name returns the member's key as a decoder reads it: Key itself when it
// holds no escape, else its value decoded into buf (which it may outgrow).
// A key with an invalid escape is returned as written, so it matches no
// plain name.
func (m *Member) Name(buf []byte) []byte {
	if !m.esc {
		return m.Key
	}
	return m.decodedName(buf)
}

func (m *Member) decodedName(buf []byte) []byte {
	if bytes.IndexByte(m.Key, '\\') < 0 {
		return m.Key
	}
	if v, ok := unescape(buf[:0], m.Key); ok {
		return v
	}
	return m.Key
}
