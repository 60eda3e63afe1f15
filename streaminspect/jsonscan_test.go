package streaminspect

import (
	"bytes"
	"encoding/json"
	"testing"
	"unicode/utf8"
)

func TestLookup(t *testing.T) {
	tests := []struct {
		in, key, want string
	}{
		{`{"a":1,"b":2}`, "b", `2`},
		{` { "a" : "x" , "b" : [1, {"c":"]}"}] , "d":true } `, "d", `true`},
		{`{"a":"\\","b":"q\"}"}`, "b", `"q\"}"`},
		{`{"a":"\\\"","b":null}`, "b", `null`},
		{`{"nested":{"b":1},"b":2}`, "b", `2`},
		{`{"a":{"b":[{"c":"{"}]},"b":-3.5e2}`, "b", `-3.5e2`},
		{`{"b":1,"b":2}`, "b", `1`},
		{`{"a":1 "b":2}`, "b", ``}, // missing comma: stop
		{`{"a":}`, "a", ``},        // missing value
		{`{"a":1`, "a", `1`},       // truncated after the value: still found
		{`{"a":"unterminated}`, "a", ``},
		{`{"a":[1,2}`, "a", `[1,2}`}, // brackets are counted, not matched
		{`{"a":[1,{"b":2}`, "a", ``},
		{`{"\u0061":1}`, "a", ``}, // escaped keys are not decoded
		{`[1,2]`, "a", ``},
		{`"a"`, "a", ``},
		{``, "a", ``},
		{`{`, "a", ``},
		{`{}`, "a", ``},
	}
	for _, tt := range tests {
		if got := string(lookup([]byte(tt.in), tt.key)); got != tt.want {
			t.Errorf("lookup(%s, %q) = %q, want %q", tt.in, tt.key, got, tt.want)
		}
	}
}

func TestArrayIter(t *testing.T) {
	for in, want := range map[string]int{
		`[]`:                               0,
		` [ 1 , "a,]" , {"x":[]}, [[]] ] `: 4,
		`[1,`:                              1,
		`[,1]`:                             0,
		`{}`:                               0,
	} {
		it := iterArray([]byte(in))
		n := 0
		for _, ok := it.next(); ok; _, ok = it.next() {
			n++
		}
		if n != want {
			t.Errorf("iterArray(%s): %d elements, want %d", in, n, want)
		}
	}
}

func TestValueHelpers(t *testing.T) {
	for in, want := range map[string]bool{
		``: true, `null`: true, `""`: true, `[]`: true, `{}`: true, `[ ]`: true, `{ }`: true,
		`"x"`: false, `[1]`: false, `{"a":1}`: false, `0`: false, `false`: false, `nul`: false,
	} {
		if got := isEmptyValue([]byte(in)); got != want {
			t.Errorf("isEmptyValue(%s) = %v", in, got)
		}
	}
	for in, want := range map[string]int64{`0`: 0, `42`: 42, `-7`: -7, `123456789012345678`: 123456789012345678} {
		if got, ok := jsonInt([]byte(in)); !ok || got != want {
			t.Errorf("jsonInt(%s) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{``, `-`, `1.5`, `1e3`, `"1"`, `null`, `1234567890123456789`} {
		if _, ok := jsonInt([]byte(in)); ok {
			t.Errorf("jsonInt(%s) accepted", in)
		}
	}
	for in, want := range map[string]string{
		``: ``, `null`: ``, `"a"`: `a`, `"a\nb\u00e9"`: "a\nb\u00e9", `429`: `429`, `"bad\x"`: `bad\x`, `"`: ``,
	} {
		if got := jsonText([]byte(in)); got != want {
			t.Errorf("jsonText(%s) = %q, want %q", in, got, want)
		}
	}
}

// checkWalker compares the walker with encoding/json on valid input: the
// same top-level members with the same raw values, and the same elements.
func checkWalker(t *testing.T, in []byte) {
	if !json.Valid(in) || !utf8.Valid(in) {
		return
	}
	in = bytes.TrimSpace(in)
	switch {
	case len(in) > 0 && in[0] == '{':
		var want map[string]json.RawMessage
		if err := json.Unmarshal(in, &want); err != nil {
			t.Fatalf("json: %v", err)
		}
		got := map[string]json.RawMessage{}
		it := iterObject(in)
		for k, v, ok := it.next(); ok; k, v, ok = it.next() {
			if bytes.IndexByte(k, '\\') >= 0 {
				return // escaped keys are knowingly not decoded
			}
			got[string(k)] = json.RawMessage(v)
		}
		if len(got) != len(want) {
			t.Fatalf("walker found %d members, encoding/json %d", len(got), len(want))
		}
		for k, v := range want {
			if !bytes.Equal(got[k], v) {
				t.Fatalf("member %q: walker %s, encoding/json %s", k, got[k], v)
			}
		}
	case len(in) > 0 && in[0] == '[':
		var want []json.RawMessage
		if err := json.Unmarshal(in, &want); err != nil {
			t.Fatalf("json: %v", err)
		}
		it := iterArray(in)
		i := 0
		for v, ok := it.next(); ok; v, ok = it.next() {
			if i >= len(want) || !bytes.Equal(v, want[i]) {
				t.Fatalf("element %d differs: %s", i, v)
			}
			i++
		}
		if i != len(want) {
			t.Fatalf("walker found %d elements, encoding/json %d", i, len(want))
		}
	}
}

func TestWalkerMatchesEncodingJSON(t *testing.T) {
	for _, s := range []string{aMessageStart, aDelta, oContent, oToolCall, oUsage, oError, `[1, "x", {"a":[]}, null]`, `{"a":"\\\\","b":{"c":"\"}"}}`} {
		checkWalker(t, []byte(s))
	}
}
