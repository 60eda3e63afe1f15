package repair

import (
	"bytes"
	"encoding/json"
	"io"
	"testing"
)

// segments splits body along the tokens encoding/json's Decoder reads:
// segment i runs from the end of token i-1 to the end of token i, so it
// holds the separators and whitespace before the token and the token's own
// bytes. Concatenated, the segments are the body. This is the independent
// yardstick for "every byte outside the changed tokens is identical".
func segments(t testing.TB, body []byte) (segs [][]byte, toks []json.Token) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	prev := 0
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("tokenize: %v", err)
		}
		end := int(dec.InputOffset())
		segs = append(segs, body[prev:end])
		toks = append(toks, tok)
		prev = end
	}
	if !bytes.Equal(bytes.TrimSpace(body[prev:]), nil) {
		t.Fatalf("trailing bytes %q", body[prev:])
	}
	return segs, toks
}

// onlyStringsChanged checks that out is in with some string tokens
// replaced, each replacement accepted by allowed, every other byte
// identical; it returns how many tokens changed.
func onlyStringsChanged(t testing.TB, in, out []byte, allowed func(from, to string) bool) int {
	t.Helper()
	inSegs, inToks := segments(t, in)
	outSegs, outToks := segments(t, out)
	if len(inSegs) != len(outSegs) {
		t.Fatalf("token count changed: %d -> %d", len(inSegs), len(outSegs))
	}
	changed := 0
	for i := range inSegs {
		if bytes.Equal(inSegs[i], outSegs[i]) {
			continue
		}
		from, ok1 := inToks[i].(string)
		to, ok2 := outToks[i].(string)
		if !ok1 || !ok2 {
			t.Fatalf("token %d changed and is not a string: %q -> %q", i, inSegs[i], outSegs[i])
		}
		pi, po := bytes.IndexByte(inSegs[i], '"'), bytes.IndexByte(outSegs[i], '"')
		if !bytes.Equal(inSegs[i][:pi], outSegs[i][:po]) {
			t.Fatalf("separator before token %d changed: %q -> %q", i, inSegs[i][:pi], outSegs[i][:po])
		}
		if !allowed(from, to) {
			t.Fatalf("token %d: %q -> %q not allowed", i, from, to)
		}
		changed++
	}
	return changed
}
