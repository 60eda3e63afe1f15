package jsonscan

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSkipString(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("x", 40)
	for in, want := range map[string]int{
		`""`:                               2,
		`"abc"rest`:                        5,
		`"a\"b"`:                           6,
		`"a\\"b"`:                          5,
		`"a\\\"b"`:                         8,
		`"` + long + `\"` + long + `"`:     2 + 2*len(long) + 2,
		`"` + long + `\\"x"`:               1 + len(long) + 3,
		`"` + long + `\\\\\"` + `"`:        1 + len(long) + 6 + 1,
		`"012345678901234\"` + long + `"`:  1 + 15 + 2 + len(long) + 1, // an escape across the byte-by-byte part
		`"0123456789012345\"` + long + `"`: 1 + 16 + 2 + len(long) + 1,
		`"`:                                -1,
		`"abc`:                             -1,
		`"abc\"`:                           -1,
		`"abc\`:                            -1,
		`"` + long + `\"`:                  -1,
		`"` + long + `\`:                   -1,
		`"012345678901234\`:                -1,
	} {
		if got := SkipString([]byte(in), 0); got != want {
			t.Errorf("SkipString(%s) = %d, want %d", in, got, want)
		}
	}
}

func TestSkipValue(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		`1,`:                     `1`,
		`-1.5e3}`:                `-1.5e3`,
		`true `:                  `true`,
		`null`:                   `null`,
		`{"a":[1,{"b":"]}"}]} x`: `{"a":[1,{"b":"]}"}]}`,
		`[[[]]]]`:                `[[[]]]`,
		`[1,2}`:                  `[1,2}`, // brackets are counted, not matched
		`{"a":"\\"}`:             `{"a":"\\"}`,
		`{"a":"\"}"}`:            `{"a":"\"}"}`,
		`[1,{"b":2}`:             ``,
		`{"a":"unterminated}`:    ``,
		`,`:                      ``,
		`:`:                      ``,
		`}`:                      ``,
		` 1`:                     ``,
		``:                       ``,
	} {
		got := SkipValue([]byte(in), 0)
		if want == "" {
			if got != -1 {
				t.Errorf("SkipValue(%s) = %d, want -1", in, got)
			}
			continue
		}
		if got != len(want) {
			t.Errorf("SkipValue(%s) = %d, want %d", in, got, len(want))
		}
	}
}

func TestLookup(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, key, want string
	}{
		{`{"a":1,"b":2}`, "b", `2`},
		{` { "a" : "x" , "b" : [1, {"c":"]}"}] , "d":true } `, "d", `true`},
		{`{"a":"\\","b":"q\"}"}`, "b", `"q\"}"`},
		{`{"nested":{"b":1},"b":2}`, "b", `2`},
		{`{"b":1,"b":2}`, "b", `1`},
		{`{"a":1 "b":2}`, "b", ``}, // missing comma: stop
		{`{"a":}`, "a", ``},
		{`{"a":1`, "a", `1`}, // truncated after the value: still found
		{`{"a":"unterminated}`, "a", ``},
		{`{"\u0061":1}`, "a", `1`}, // keys are compared unescaped
		{`{"\u0061\u0062":1}`, "ab", `1`},
		{`{"\u00":1}`, "a", ``},
		{`{"\q":1}`, "q", ``},
		{`[1,2]`, "a", ``},
		{``, "a", ``},
		{`{`, "a", ``},
		{`{}`, "a", ``},
	}
	for _, tt := range tests {
		if got := string(Lookup([]byte(tt.in), tt.key)); got != tt.want {
			t.Errorf("Lookup(%s, %q) = %q, want %q", tt.in, tt.key, got, tt.want)
		}
	}
}

func TestMembersStart(t *testing.T) {
	t.Parallel()
	b := []byte(` { "a" : "x" , "model":  "m" }`)
	it := Object(b)
	var starts []int
	for it.Next() {
		m := &it.Member
		if string(b[m.Start:m.Start+len(m.Value)]) != string(m.Value) {
			t.Fatalf("Start %d does not locate %s", m.Start, m.Value)
		}
		starts = append(starts, m.Start)
	}
	if len(starts) != 2 || starts[0] != 9 || starts[1] != 25 {
		t.Errorf("starts = %v", starts)
	}
}

func TestElements(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		`[]`:                               0,
		` [ 1 , "a,]" , {"x":[]}, [[]] ] `: 4,
		`[1,`:                              1,
		`[,1]`:                             0,
		`{}`:                               0,
	} {
		it := Array([]byte(in))
		n := 0
		for _, ok := it.Next(); ok; _, ok = it.Next() {
			n++
		}
		if n != want {
			t.Errorf("Array(%s): %d elements, want %d", in, n, want)
		}
	}
}

func TestKeyIs(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]bool{
		`model`:                          true,
		`mod\u0065l`:                     true,
		`\u006d\u006f\u0064\u0065\u006c`: true,
		`\u006D\u006F\u0064\u0065\u006C`: true,
		`Model`:                          false,
		`models`:                         false,
		`mod\u0065`:                      false,
		`mod\el`:                         false, // not a JSON escape
		`mod\u00zzl`:                     false,
		`mode\u006c\u0000`:               false,
		`mod` + "\x00" + `el`:            false,
		`mod\"el`:                        false,
	} {
		if got := KeyIs([]byte(raw), "model"); got != want {
			t.Errorf("KeyIs(%s, model) = %v", raw, got)
		}
	}
}

func TestName(t *testing.T) {
	t.Parallel()
	var buf [8]byte
	for raw, want := range map[string]string{
		`type`: `type`, `t\u0079pe`: `type`, `\u00e9\u00e9\u00e9\u00e9\u00e9`: `ééééé`, `a\qb`: `a\qb`,
		`long key with an escape past the first words: t\u0079pe`: `long key with an escape past the first words: type`,
	} {
		it := Object([]byte(`{"` + raw + `":1}`))
		ok := it.Next()
		if got := it.Name(buf[:0]); !ok || string(got) != want {
			t.Errorf("Name(%s) = %q, want %q", raw, got, want)
		}
	}
}

func TestUnquoteAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, q := range []string{
		`""`, `"plain"`, `"a\"b\\c\/d\be\ff\ng\rh\ti"`, `"\u00e9\u00E9"`, `"\ud83d\ude80"`, `"\ud83dx"`,
		`"\ude80"`, `"\ud83d\u0041"`, `"\ud83d\ud83d\ude80"`, `"\u0000"`, `"模型"`,
		`"a\x"`, `"\u12"`, `"\u12g4"`, "\"a\tb\"", `"a"b"`, `"a\"`, `"`, `a`, `"\`, `"\'"`, `"\U0001F600"`,
	} {
		var want string
		err := json.Unmarshal([]byte(q), &want)
		got, ok := Unquote([]byte(q))
		if ok != (err == nil) || got != want {
			t.Errorf("Unquote(%s) = %q, %v; encoding/json %q, %v", q, got, ok, want, err)
		}
	}
}

func TestText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		``: ``, `null`: ``, `"a"`: `a`, `"a\nb\u00e9"`: "a\nb\u00e9", `429`: `429`, `"bad\x"`: `bad\x`, `"`: ``,
	} {
		if got := Text([]byte(in)); got != want {
			t.Errorf("Text(%s) = %q, want %q", in, got, want)
		}
	}
}

func TestInt(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{`0`: 0, `42`: 42, `-7`: -7, `123456789012345678`: 123456789012345678} {
		if got, ok := Int([]byte(in)); !ok || got != want {
			t.Errorf("Int(%s) = %d, %v", in, got, ok)
		}
	}
	for _, in := range []string{``, `-`, `1.5`, `1e3`, `"1"`, `null`, `1234567890123456789`} {
		if _, ok := Int([]byte(in)); ok {
			t.Errorf("Int(%s) accepted", in)
		}
	}
}

var validityCases = []string{
	`{}`, ` {"a" : [ 1 , -0.5e+3 , true , false , null , "x" , { } , [ ] ] } `,
	`{"a":"\ud83d\ude80 \u00e9 \/ \b\f\n\r\t \" \\"}`, "{\"a\":\"\xff\xfe\"}", `{"a":-0}`, `{"a":1E-7}`,
	`{"a":"\ud800"}`, `{"":""}`, `{"a":[[[[[]]]]]}`, "{\"a\":\"\x7f\"}", `1`, `"x"`, `[]`, `null`,
	`{"a":1,"b":tru}`, `{"a":01}`, `{"a":1.}`, `{"a":-}`, `{"a":1e}`, `{"a":.5}`, `{"a":+1}`, `{"a":"\x"}`,
	`{"a":"\u12"}`, "{\"a\":\"\x01\"}", `{"a" 1}`, `{"a":1,}`, `[1,]`, `{"a":1}}`, `{"a":1} x`, `{`, ``, ` `,
	`{'a':1}`, `{a:1}`, `[1 2]`, `nul`, `True`, `{"a":[}`, `{"a":{]}`,
}

func TestValidAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, b := range validityCases {
		if got, want := Valid([]byte(b)), json.Valid([]byte(b)); got != want {
			t.Errorf("Valid(%q) = %v, encoding/json %v", b, got, want)
		}
	}
}

func TestValidDepth(t *testing.T) {
	t.Parallel()
	nest := func(n int) []byte {
		return []byte(strings.Repeat("[", n) + strings.Repeat("]", n))
	}
	for _, n := range []int{MaxDepth, MaxDepth + 1} {
		b := nest(n)
		if got, want := Valid(b), json.Valid(b); got != want {
			t.Errorf("depth %d: Valid = %v, encoding/json %v", n, got, want)
		}
	}
	if Valid(nest(MaxDepth + 1)) {
		t.Error("no error past the depth limit")
	}
}

func TestSyntaxErrorOffset(t *testing.T) {
	t.Parallel()
	s := Scanner{B: []byte(`{"a":1,"b":tru}`)}
	s.Value(0)
	if s.Err == nil || s.Err.Offset != 11 || !strings.Contains(s.Err.Error(), "byte 11") {
		t.Errorf("err = %v", s.Err)
	}
}

func TestSpanIs(t *testing.T) {
	t.Parallel()
	b := []byte(`{"r\u006fle":"assist\u0061nt"}`)
	s := Scanner{B: b}
	s.Enter('{', '}')
	k := s.Key()
	v := s.Str()
	if s.Err != nil || !k.Is(b, "role") || !v.Is(b, "assistant") || !k.Esc || string(v.Text(b)) != "assistant" {
		t.Errorf("key %+v value %+v err %v", k, v, s.Err)
	}
	if (Span{}).Is(b, "") || (Span{}).Raw(b) != nil {
		t.Error("an absent span matches")
	}
}

// The lenient walk allocates nothing, whatever it skips.
func TestNoAllocations(t *testing.T) {
	body := []byte(`{"system":"` + strings.Repeat(`a \"quoted\" \\ text\n`, 100) + `","messages":[` +
		strings.Repeat(`{"role":"user","content":[{"type":"text","text":"hi"}]},`, 50) + `{}],"mod\u0065l":"m"}`)
	allocs := testing.AllocsPerRun(20, func() {
		it := Object(body)
		n := 0
		for it.Next() {
			m := &it.Member
			if m.KeyIs("model") {
				n++
			}
		}
		if n != 1 || Lookup(body, "model") == nil {
			t.Fatal("model not found")
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations, want 0", allocs)
	}
}

// decodedMembers reads the top-level members of a valid object with
// encoding/json's tokenizer: keys decoded, values as written.
func decodedMembers(t *testing.T, b []byte) (keys []string, vals [][]byte) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not an object: %v %v", tok, err)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		vals = append(vals, raw)
	}
	return keys, vals
}

// check compares both ways of reading with encoding/json on b.
func check(t *testing.T, b []byte) {
	valid := json.Valid(b)
	if Valid(b) != valid {
		t.Fatalf("Valid = %v, encoding/json %v: %q", !valid, valid, b)
	}
	// the lenient walk never panics, on anything
	it := Object(b)
	var got []Member
	for it.Next() {
		m := &it.Member
		if m.Start < 0 || m.Start+len(m.Value) > len(b) || !bytes.Equal(b[m.Start:m.Start+len(m.Value)], m.Value) {
			t.Fatalf("member value %q not at %d", m.Value, m.Start)
		}
		got = append(got, *m)
	}
	el := Array(b)
	var elems [][]byte
	for v, ok := el.Next(); ok; v, ok = el.Next() {
		elems = append(elems, v)
	}
	if !valid {
		return
	}
	trimmed := TrimSpace(b)
	if end := SkipValue(trimmed, 0); end != len(trimmed) {
		t.Fatalf("SkipValue ends at %d of %d", end, len(trimmed))
	}
	switch trimmed[0] {
	case '{':
		keys, vals := decodedMembers(t, b)
		if len(got) != len(keys) {
			t.Fatalf("%d members, encoding/json %d: %q", len(got), len(keys), b)
		}
		for i, m := range got {
			if !bytes.Equal(m.Value, vals[i]) {
				t.Fatalf("member %d: value %q, encoding/json %q", i, m.Value, vals[i])
			}
			if utf8.Valid(m.Key) {
				k, ok := Unquote([]byte(`"` + string(m.Key) + `"`))
				if !ok || k != keys[i] {
					t.Fatalf("member %d: key %q, encoding/json %q", i, k, keys[i])
				}
				if string(m.Name(nil)) != keys[i] {
					t.Fatalf("member %d: Name %q, encoding/json %q", i, m.Name(nil), keys[i])
				}
				if strings.IndexFunc(keys[i], func(r rune) bool { return r < 0x20 || r == '"' || r == '\\' }) < 0 && !m.KeyIs(keys[i]) {
					t.Fatalf("member %d: KeyIs(%q) false for %q", i, keys[i], m.Key)
				}
			}
		}
	case '[':
		var want []json.RawMessage
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		if len(elems) != len(want) {
			t.Fatalf("%d elements, encoding/json %d", len(elems), len(want))
		}
		for i := range want {
			if !bytes.Equal(elems[i], want[i]) {
				t.Fatalf("element %d: %q, encoding/json %q", i, elems[i], want[i])
			}
		}
	case '"':
		var want string
		if err := json.Unmarshal(trimmed, &want); err != nil {
			t.Fatal(err)
		}
		s := Scanner{B: trimmed}
		sp := s.Str()
		got, ok := Unquote(trimmed)
		if !ok || s.Err != nil || sp.End != len(trimmed) || (utf8.Valid(trimmed) && got != want) {
			t.Fatalf("string %q: Unquote %q %v, encoding/json %q", trimmed, got, ok, want)
		}
	}
}

func TestCheckCases(t *testing.T) {
	t.Parallel()
	for _, b := range append(validityCases, fuzzSeeds...) {
		check(t, []byte(b))
	}
}

var fuzzSeeds = []string{
	`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}],"stream":true}`,
	`{"mod\u0065l":"a","model":"b","\u006d\u006f\u0064\u0065\u006c":"c"}`,
	`{"a":{"b":[1,2,{"c":"]}"}]},"d":"` + strings.Repeat(`x\"y\\`, 10) + `"}`,
	`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}`,
	`{"choices":[{"delta":{"content":"x"}}],"usage":null}`,
	`["a",1,null,true,{"k":[]}]`,
	`"` + strings.Repeat("0123456789", 3) + `\"\\\"\\"`,
	` { "a" : "x" , "b" : [1, {"c":"]}"}] , "d":true } `,
	`{"a":"\ud83d\ude00\u00e9"}`,
	"{\"a\":\"\xff\"}",
	`{"a":[1,2}`,
	`{"a":"unterminated}`,
}

func FuzzScan(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		check(t, b)
		if !bytes.Equal(b, orig) {
			t.Fatal("input modified")
		}
	})
}
