package repair

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
)

// Every function refuses exactly what encoding/json refuses (for bodies
// that are objects).
func TestScannerAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	bodies := append([]string{
		`{}`, ` {"a" : [ 1 , -0.5e+3 , true , false , null , "x" , { } , [ ] ] } `,
		`{"a":"\ud83d\ude80 \u00e9 \/ \b\f\n\r\t \" \\"}`, "{\"a\":\"\xff\xfe\"}", `{"a":-0}`, `{"a":1E-7}`,
		`{"a":"\ud800"}`, `{"":""}`, `{"a":[[[[[]]]]]}`, "{\"a\":\"\x7f\"}",
	}, malformed...)
	for _, st := range styles {
		bodies = append(bodies, string(build(st, conversation())))
	}
	for _, b := range bodies {
		isObject := strings.HasPrefix(strings.TrimLeft(b, " \t\r\n"), "{")
		want := json.Valid([]byte(b)) && isObject
		_, _, err1 := SanitizeToolIDs([]byte(b))
		_, _, err2 := StripThinking([]byte(b), SelectAll())
		_, _, err3 := DropFields([]byte(b), []string{"zz"})
		_, err4 := ThinkingSignatures([]byte(b))
		for i, err := range []error{err1, err2, err3, err4} {
			if (err == nil) != want {
				t.Errorf("function %d on %q: err = %v, encoding/json valid object = %v", i, b, err, want)
			}
		}
	}
}

func TestScannerDepth(t *testing.T) {
	t.Parallel()
	nest := func(n int) []byte {
		return []byte(`{"a":` + strings.Repeat("[", n-2) + `{}` + strings.Repeat("]", n-2) + `}`)
	}
	for _, n := range []int{jsonscan.MaxDepth, jsonscan.MaxDepth + 1} {
		b := nest(n)
		_, _, err := DropFields(b, []string{"x"})
		if (err == nil) != json.Valid(b) {
			t.Errorf("depth %d: err = %v, json.Valid = %v", n, err, json.Valid(b))
		}
	}
	if _, _, err := DropFields(nest(jsonscan.MaxDepth+1), []string{"x"}); err == nil {
		t.Error("no error past the depth limit")
	}
}

func TestSyntaxErrorOffset(t *testing.T) {
	t.Parallel()
	_, _, err := DropFields([]byte(`{"a":1,"b":tru}`), []string{"a"})
	se, ok := err.(*SyntaxError)
	if !ok || se.Offset != 11 || !strings.Contains(se.Error(), "byte 11") {
		t.Errorf("err = %v", err)
	}
}

// Nothing to change: the same slice comes back, with no allocation.
func TestNoChangeNoAllocation(t *testing.T) {
	msgs := conversation()
	// Valid ids only, no thinking: nothing to repair.
	clean := withoutThinking(replaceIDs(msgs, map[string]string{"functions.Bash:0": "toolu_x", "call.abc": "toolu_y"}), func(int, int) bool { return false })
	body := build(styles[2], clean)
	withThinking := build(styles[2], replaceIDs(msgs, map[string]string{"functions.Bash:0": "toolu_x", "call.abc": "toolu_y"}))
	textBlock := SelectBlocks(BlockRef{1, 1}) // a text block: never removed
	cases := []struct {
		name string
		body []byte
		run  func([]byte) ([]byte, int, error)
	}{
		{"SanitizeToolIDs", body, SanitizeToolIDs},
		{"StripThinking/all", body, func(b []byte) ([]byte, int, error) { return StripThinking(b, SelectAll()) }},
		{"StripThinking/named", withThinking, func(b []byte) ([]byte, int, error) { return StripThinking(b, textBlock) }},
		{"DropFields", body, func(b []byte) ([]byte, int, error) { return DropFields(b, []string{"container"}) }},
	}
	for _, c := range cases {
		var out []byte
		var n int
		var err error
		allocs := testing.AllocsPerRun(20, func() { out, n, err = c.run(c.body) })
		if err != nil || n != 0 {
			t.Fatalf("%s: n = %d, err = %v", c.name, n, err)
		}
		if !sameSlice(out, c.body) {
			t.Errorf("%s: not the same slice", c.name)
		}
		if allocs != 0 {
			t.Errorf("%s: %v allocations, want 0", c.name, allocs)
		}
	}
	if bytes.Contains(body, []byte(`"thinking","thinking"`)) {
		t.Fatal("fixture still has thinking blocks")
	}
}
