package streaminspect

import (
	"bytes"
	"encoding/json"
)

// This file is a minimal, allocation-free JSON walker. The inspector needs a
// handful of keys out of small objects on the hot path (every OpenAI chunk
// during the hold, usage events); encoding/json would allocate and decode
// far more than that. The walker is lenient: it does not validate what it
// skips, and keys are compared in their raw (still escaped) form, which is
// how every provider sends them. Malformed input just yields "not found".

// skipWS returns the index of the first non-whitespace byte at or after i.
func skipWS(b []byte, i int) int {
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

// skipString expects b[i] == '"' and returns the index just past the
// closing quote, or -1 if the string is unterminated. A plain loop beats
// bytes.IndexByte here: the strings in these payloads are mostly short keys.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '"':
			return i + 1
		case '\\':
			i++ // the escaped byte cannot close the string
		}
	}
	return -1
}

// skipValue returns the index just past the value starting at b[i], or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	}
	start := i
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	if i == start {
		return -1
	}
	return i
}

// objIter iterates over the members of a JSON object.
type objIter struct {
	b    []byte
	i    int
	done bool
}

// iterObject starts iterating over the object in raw (surrounding
// whitespace allowed). A non-object yields no members.
func iterObject(raw []byte) objIter {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '{' {
		return objIter{done: true}
	}
	return objIter{b: raw, i: i + 1}
}

// next returns the next member: its raw key (without quotes, escapes not
// decoded) and its raw value.
func (it *objIter) next() (key, val []byte, ok bool) {
	if it.done {
		return nil, nil, false
	}
	b := it.b
	i := skipWS(b, it.i)
	if i < len(b) && b[i] == '}' {
		it.done = true
		return nil, nil, false
	}
	if i >= len(b) || b[i] != '"' {
		it.done = true
		return nil, nil, false
	}
	ke := skipString(b, i)
	if ke < 0 {
		it.done = true
		return nil, nil, false
	}
	key = b[i+1 : ke-1]
	i = skipWS(b, ke)
	if i >= len(b) || b[i] != ':' {
		it.done = true
		return nil, nil, false
	}
	i = skipWS(b, i+1)
	ve := skipValue(b, i)
	if ve < 0 {
		it.done = true
		return nil, nil, false
	}
	val = b[i:ve]
	i = skipWS(b, ve)
	switch {
	case i < len(b) && b[i] == ',':
		it.i = i + 1
	default:
		// '}' or garbage: this member is still good, but it is the last.
		it.done = true
	}
	return key, val, true
}

// arrIter iterates over the elements of a JSON array.
type arrIter struct {
	b    []byte
	i    int
	done bool
}

func iterArray(raw []byte) arrIter {
	i := skipWS(raw, 0)
	if i >= len(raw) || raw[i] != '[' {
		return arrIter{done: true}
	}
	return arrIter{b: raw, i: i + 1}
}

func (it *arrIter) next() (val []byte, ok bool) {
	if it.done {
		return nil, false
	}
	b := it.b
	i := skipWS(b, it.i)
	if i >= len(b) || b[i] == ']' {
		it.done = true
		return nil, false
	}
	ve := skipValue(b, i)
	if ve < 0 {
		it.done = true
		return nil, false
	}
	val = b[i:ve]
	i = skipWS(b, ve)
	if i < len(b) && b[i] == ',' {
		it.i = i + 1
	} else {
		it.done = true
	}
	return val, true
}

// lookup returns the raw value of key in the object raw, or nil.
func lookup(raw []byte, key string) []byte {
	it := iterObject(raw)
	for {
		k, v, ok := it.next()
		if !ok {
			return nil
		}
		if string(k) == key {
			return v
		}
	}
}

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
		return skipWS(raw, 1) == len(raw)-1
	}
	return false
}

// isObject reports whether raw is a JSON object (as returned by the iterators).
func isObject(raw []byte) bool { return len(raw) > 0 && raw[0] == '{' }

// jsonInt parses a raw JSON integer (a token count). Non-integers, floats
// and out-of-range numbers are rejected.
func jsonInt(raw []byte) (int64, bool) {
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

// jsonText returns raw as text: a JSON string is decoded, null is "", and
// any other value (a numeric error code, say) is returned as written. It
// allocates; use it on rare payloads such as errors only.
func jsonText(raw []byte) string {
	if len(raw) == 0 || string(raw) == "null" {
		return ""
	}
	if raw[0] != '"' {
		return string(raw)
	}
	if len(raw) < 2 {
		return ""
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw[1 : len(raw)-1])
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return string(raw[1 : len(raw)-1])
	}
	return s
}

// trimSpace trims the JSON whitespace around b.
func trimSpace(b []byte) []byte {
	i := skipWS(b, 0)
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
