package repair

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"unicode/utf8"
)

// idChar[c] is true for the bytes Anthropic allows in a tool id:
// ^[a-zA-Z0-9_-]+$.
var idChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
	}
	return t
}()

func validID(id []byte) bool {
	if len(id) == 0 {
		return false
	}
	for _, c := range id {
		if !idChar[c] {
			return false
		}
	}
	return true
}

// maxIDPrefix bounds the readable part of a sanitized id; the hash that
// follows it keeps long ids apart.
const maxIDPrefix = 64

// hashLens are the hash lengths (hex digits) tried in turn when a shorter
// one would collide with another id of the same body.
var hashLens = [...]int{8, 16, 64}

// SanitizeToolIDs rewrites every tool id outside ^[a-zA-Z0-9_-]+$: the "id"
// of tool_use blocks (and of any "*_tool_use" block) and the "tool_use_id"
// of tool_result blocks (and of any "*_tool_result" block), in every message.
//
// The mapping is a pure function of the id, so the same id maps the same way
// on every turn and no state is kept between requests: each character
// outside the pattern (each UTF-8 rune, or each invalid byte) becomes '_',
// the result is cut to 64 bytes, and '_' plus the first 8 hex digits of the
// SHA-256 of the original id (its unescaped value) is appended. So
// "functions.Bash:0" becomes "functions_Bash_0_" + 8 hex digits and never
// meets the valid id "functions_Bash_0", which is left alone. A tool_use and
// the tool_result that answers it carry the same original id and so get the
// same new one.
//
// Distinctness within the body is checked, not assumed: if a new id equals a
// valid id present in the body, or the new id of another original, the hash
// is lengthened to 16 and then 64 digits, and as a last resort a counter is
// appended. Ids are settled in order of first appearance, so a later turn
// (the same messages plus more) reproduces the earlier mapping unless one of
// its new messages carries a valid id equal to an earlier new id, which needs
// a 32-bit hash collision or a deliberate choice of id; then only that
// request's prompt cache prefix changes.
//
// It returns the new body and the number of id values rewritten (tool_use
// ids and tool_result references counted separately). When no id needs a
// change it returns body itself and allocates nothing. An escaped id whose
// value is valid ("toolu\u005f01") is left as written.
func SanitizeToolIDs(body []byte) ([]byte, int, error) {
	w := newWalker(body, modeFindBadID)
	if err := w.run(); err != nil {
		return body, 0, err
	}
	if !w.stop {
		return body, 0, nil
	}

	w = newWalker(body, modeCollectIDs)
	if err := w.run(); err != nil {
		return body, 0, err
	}

	// The valid ids present in the body, which no new id may equal.
	valid := make(map[string]struct{})
	for _, r := range w.ids {
		if r.valid {
			valid[string(r.sp.Text(body))] = struct{}{}
		}
	}
	mapping := make(map[string]string) // original (unescaped) -> new id
	used := make(map[string]struct{})  // new ids handed out
	size := len(body)
	n := 0
	for _, r := range w.ids {
		if r.valid {
			continue
		}
		orig := r.sp.Text(body)
		to, ok := mapping[string(orig)]
		if !ok {
			to = newID(orig, valid, used)
			mapping[string(orig)] = to
			used[to] = struct{}{}
		}
		size += len(to) + 2 - (r.sp.End - r.sp.Start)
		n++
	}

	p := splicer{src: body, size: size}
	buf := make([]byte, 0, 2+maxIDPrefix+1+64+8)
	for _, r := range w.ids {
		if r.valid {
			continue
		}
		buf = append(buf[:0], '"')
		buf = append(buf, mapping[string(r.sp.Text(body))]...)
		buf = append(buf, '"')
		p.replace(r.sp.Start, r.sp.End, buf)
	}
	return p.finish(), n, nil
}

// newID returns the sanitized form of orig that is neither a valid id of
// the body nor already handed out.
func newID(orig []byte, valid, used map[string]struct{}) string {
	free := func(id string) bool {
		_, v := valid[id]
		_, u := used[id]
		return !v && !u
	}
	sum := sha256.Sum256(orig)
	var id string
	for _, l := range hashLens {
		id = sanitizedID(orig, sum, l)
		if free(id) {
			return id
		}
	}
	for i := 2; ; i++ {
		if c := id + "_" + strconv.Itoa(i); free(c) {
			return c
		}
	}
}

// sanitizedID is the mapping without the collision check: the allowed
// characters of orig (others as '_', at most maxIDPrefix bytes), '_', and
// hashLen hex digits of sum.
func sanitizedID(orig []byte, sum [32]byte, hashLen int) string {
	out := make([]byte, 0, maxIDPrefix+1+hashLen)
	for i := 0; i < len(orig) && len(out) < maxIDPrefix; {
		c := orig[i]
		if idChar[c] {
			out = append(out, c)
			i++
			continue
		}
		_, size := utf8.DecodeRune(orig[i:])
		out = append(out, '_')
		i += size
	}
	out = append(out, '_')
	var hx [64]byte
	hex.Encode(hx[:], sum[:])
	out = append(out, hx[:hashLen]...)
	return string(out)
}
