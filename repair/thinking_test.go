package repair

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// withoutThinking drops thinking blocks from assistant messages, and the
// messages left with nothing, the way StripThinking(SelectAll) must.
func withoutThinking(msgs []msg, keep func(m, b int) bool) []msg {
	var out []msg
	for i, m := range msgs {
		if m.role != "assistant" {
			out = append(out, m)
			continue
		}
		n := m
		n.blocks = nil
		for j, b := range m.blocks {
			if (strings.HasPrefix(b, `{"type":"thinking"`) || strings.HasPrefix(b, `{"type":"redacted_thinking"`)) && !keep(i, j) {
				continue
			}
			n.blocks = append(n.blocks, b)
		}
		if len(n.blocks) > 0 {
			out = append(out, n)
		}
	}
	return out
}

func TestStripThinkingConversation(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		sel   Selector
		keep  func(m, b int) bool
		n     int
		msgs  int
		valid bool
	}{
		{"all", SelectAll(), func(m, b int) bool { return false }, 5, 7, true},
		{"named", SelectBlocks(BlockRef{3, 1}, BlockRef{3, 0}, BlockRef{7, 0}), func(m, b int) bool { return m != 3 && m != 7 }, 3, 8, true},
		{"thinking-only message", SelectBlocks(BlockRef{5, 0}), func(m, b int) bool { return m != 5 }, 1, 7, true},
	}
	for _, st := range styles {
		for _, tc := range cases {
			t.Run(st.name+"/"+tc.name, func(t *testing.T) {
				in := build(st, conversation())
				orig := bytes.Clone(in)
				out, n, err := StripThinking(in, tc.sel)
				if err != nil {
					t.Fatal(err)
				}
				if n != tc.n {
					t.Errorf("n = %d, want %d", n, tc.n)
				}
				if !bytes.Equal(in, orig) {
					t.Fatal("input modified")
				}
				want := build(st, withoutThinking(conversation(), tc.keep))
				if !bytes.Equal(out, want) {
					t.Fatalf("\n got: %s\nwant: %s", out, want)
				}
				d := decode(t, out)
				if len(d.Messages) != tc.msgs {
					t.Errorf("%d messages, want %d", len(d.Messages), tc.msgs)
				}
				keptBlocksIdentical(t, in, out)
			})
		}
	}
}

// keptBlocksIdentical checks, independently of the expected body, that
// every block of out is byte-identical to a block of in, in order, that
// only thinking blocks went missing, and that every other top-level member
// is byte-identical.
func keptBlocksIdentical(t *testing.T, in, out []byte) {
	t.Helper()
	di, do := decode(t, in), decode(t, out)
	var inBlocks, outBlocks []json.RawMessage
	for _, m := range di.Messages {
		inBlocks = append(inBlocks, m.Content...)
	}
	for _, m := range do.Messages {
		outBlocks = append(outBlocks, m.Content...)
	}
	j := 0
	for _, b := range inBlocks {
		if j < len(outBlocks) && bytes.Equal(b, outBlocks[j]) {
			j++
			continue
		}
		if typ := fields(t, b).Type; typ != "thinking" && typ != "redacted_thinking" {
			t.Fatalf("a %s block was removed or changed: %s", typ, b)
		}
	}
	if j != len(outBlocks) {
		t.Fatalf("output has blocks not in the input: %s", outBlocks[j])
	}
	ti, to := topLevel(t, in), topLevel(t, out)
	for k, v := range ti {
		if k != "messages" && !bytes.Equal(v, to[k]) {
			t.Errorf("top-level %q changed", k)
		}
	}
}

func TestStripThinkingTable(t *testing.T) {
	t.Parallel()
	th := `{"type":"thinking","thinking":"t","signature":"c2ln"}`
	rt := `{"type":"redacted_thinking","data":"ZGF0YQ=="}`
	tx := `{"type":"text","text":"x"}`
	tu := `{"type":"tool_use","id":"toolu_1","name":"Bash","input":{}}`
	user := `{"role":"user","content":[{"type":"text","text":"hi"}]}`
	tests := []struct {
		name, in, want string
		sel            Selector
		n              int
	}{
		{"first of two", one(`{"role":"assistant","content":[` + th + `,` + tx + `]}`), one(`{"role":"assistant","content":[` + tx + `]}`), SelectAll(), 1},
		{"middle", one(`{"role":"assistant","content":[` + tx + `, ` + th + ` , ` + tu + `]}`), one(`{"role":"assistant","content":[` + tx + ` , ` + tu + `]}`), SelectAll(), 1},
		{"last", one(`{"role":"assistant","content":[` + tx + ",\n " + th + "\n]}"), one(`{"role":"assistant","content":[` + tx + "\n]}"), SelectAll(), 1},
		{"first two of three", one(`{"role":"assistant","content":[ ` + rt + `,` + th + `,` + tu + `]}`), one(`{"role":"assistant","content":[ ` + tu + `]}`), SelectAll(), 2},
		{"alternating", one(`{"role":"assistant","content":[` + th + `,` + tx + `,` + rt + `,` + tu + `,` + th + `]}`), one(`{"role":"assistant","content":[` + tx + `,` + tu + `]}`), SelectAll(), 3},
		{"whole message, first", `{"messages":[{"role":"assistant","content":[` + th + `]},` + user + `]}`, `{"messages":[` + user + `]}`, SelectAll(), 1},
		{"whole message, middle", `{"messages":[` + user + `, {"role":"assistant","content":[` + th + `,` + rt + `]}, ` + user + `]}`, `{"messages":[` + user + `, ` + user + `]}`, SelectAll(), 2},
		{"whole message, last", `{"messages":[` + user + ",\n{\"role\":\"assistant\",\"content\":[" + th + "]}\n]}", `{"messages":[` + user + "\n]}", SelectAll(), 1},
		{"only message", `{"messages":[ {"role":"assistant","content":[` + th + `]} ],"x":1}`, `{"messages":[  ],"x":1}`, SelectAll(), 1},
		{"two adjacent messages", `{"messages":[` + user + `,{"role":"assistant","content":[` + th + `]},{"role":"assistant","content":[` + rt + `]},` + user + `]}`, `{"messages":[` + user + `,` + user + `]}`, SelectAll(), 2},
		{"role after content", one(`{"content":[` + th + `,` + tx + `],"role":"assistant"}`), one(`{"content":[` + tx + `],"role":"assistant"}`), SelectAll(), 1},
		{"role after content, whole message", `{"messages":[` + user + `,{"content":[` + th + `],"role":"assistant"}]}`, `{"messages":[` + user + `]}`, SelectAll(), 1},
		{"escaped type and role", one(`{"r\u006fle":"assist\u0061nt","content":[{"type":"thinkin\u0067","signature":"x"},` + tx + `]}`), one(`{"r\u006fle":"assist\u0061nt","content":[` + tx + `]}`), SelectAll(), 1},
		{"named block only", one(`{"role":"assistant","content":[` + th + `,` + tx + `]},{"role":"assistant","content":[` + th + `,` + tx + `]}`), one(`{"role":"assistant","content":[` + th + `,` + tx + `]},{"role":"assistant","content":[` + tx + `]}`), SelectBlocks(BlockRef{1, 0}), 1},
		{"named text block is kept", one(`{"role":"assistant","content":[` + th + `,` + tx + `]}`), "", SelectBlocks(BlockRef{0, 1}), 0},
		{"named block out of range", one(`{"role":"assistant","content":[` + th + `]}`), "", SelectBlocks(BlockRef{4, 0}), 0},
		{"user message untouched", one(`{"role":"user","content":[` + th + `,` + tx + `]}`), "", SelectAll(), 0},
		{"no role untouched", one(`{"content":[` + th + `]}`), "", SelectAll(), 0},
		{"string content", one(`{"role":"assistant","content":"thinking"}`), "", SelectAll(), 0},
		{"empty content", one(`{"role":"assistant","content":[]}`), "", SelectAll(), 0},
		{"zero selector", one(`{"role":"assistant","content":[` + th + `]}`), "", Selector{}, 0},
		{"nested thinking untouched", one(`{"role":"user","content":[{"type":"tool_result","tool_use_id":"x","content":[` + th + `]}]}`), "", SelectAll(), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			out, n, err := StripThinking(in, tt.sel)
			if err != nil {
				t.Fatal(err)
			}
			if n != tt.n {
				t.Errorf("n = %d, want %d", n, tt.n)
			}
			if tt.want == "" {
				if !sameSlice(out, in) {
					t.Errorf("nothing to change, yet a new body: %s", out)
				}
				return
			}
			if string(out) != tt.want {
				t.Errorf("\n got: %s\nwant: %s", out, tt.want)
			}
			decode(t, out)
		})
	}
}

func TestStripThinkingErrors(t *testing.T) {
	t.Parallel()
	for _, in := range malformed {
		out, n, err := StripThinking([]byte(in), SelectAll())
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: err = %v, want *SyntaxError", in, err)
		}
		if n != 0 || string(out) != in {
			t.Errorf("%q: body changed on error", in)
		}
	}
}

func TestSelector(t *testing.T) {
	t.Parallel()
	s := SelectBlocks(BlockRef{3, 1}, BlockRef{1, 0}, BlockRef{3, 1}, BlockRef{1, 2})
	if got := len(s.Blocks()); got != 3 {
		t.Errorf("%d blocks, want 3 (deduplicated)", got)
	}
	for _, c := range []struct {
		m, b int
		want bool
	}{{1, 0, true}, {1, 1, false}, {1, 2, true}, {3, 1, true}, {3, 0, false}, {0, 0, false}} {
		if got := s.Selects(c.m, c.b); got != c.want {
			t.Errorf("Selects(%d,%d) = %v", c.m, c.b, got)
		}
	}
	if !(Selector{}).Empty() || s.Empty() || SelectAll().Empty() || !SelectBlocks().Empty() {
		t.Error("Empty wrong")
	}
	if !SelectAll().Selects(99, 99) || !s.Union(SelectAll()).All() {
		t.Error("SelectAll wrong")
	}
	u := s.Union(SelectBlocks(BlockRef{0, 0}, BlockRef{1, 0}))
	if len(u.Blocks()) != 4 || !u.Selects(0, 0) || !u.Selects(3, 1) {
		t.Errorf("Union = %v", u.Blocks())
	}
	refs := []BlockRef{{2, 0}}
	s2 := SelectBlocks(refs...)
	refs[0] = BlockRef{5, 5}
	if !s2.Selects(2, 0) {
		t.Error("SelectBlocks did not copy its argument")
	}
}

func TestThinkingSignatures(t *testing.T) {
	t.Parallel()
	for _, st := range styles {
		sigs, err := ThinkingSignatures(build(st, conversation()))
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			m, c     int
			redacted bool
			sig      string
		}{
			{1, 0, false, signature(1)},
			{3, 0, true, "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh2+0Hy8Yk3QQ=="},
			{3, 1, false, signature(2)},
			{5, 0, false, signature(3)},
			{7, 0, false, signature(4)},
		}
		if len(sigs) != len(want) {
			t.Fatalf("%s: %d signatures, want %d", st.name, len(sigs), len(want))
		}
		for i, w := range want {
			g := sigs[i]
			if g.Message != w.m || g.Content != w.c || g.Redacted != w.redacted || string(g.Signature) != w.sig {
				t.Errorf("%s: signature %d = {%d %d %v %q}, want %+v", st.name, i, g.Message, g.Content, g.Redacted, g.Signature, w)
			}
		}
	}
	// Escapes are decoded; user turns and unsigned blocks are left out.
	sigs, err := ThinkingSignatures([]byte(one(
		`{"role":"user","content":[{"type":"thinking","signature":"user"}]},` +
			`{"role":"assistant","content":[{"type":"thinking","thinking":"x"},{"type":"thinking","signature":"a\/b\u002B=="},{"type":"thinking","signature":null}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	if len(sigs) != 1 || string(sigs[0].Signature) != "a/b+==" || sigs[0].Ref() != (BlockRef{1, 1}) {
		t.Errorf("got %+v", sigs)
	}
	if _, err := ThinkingSignatures([]byte(`{"messages":[}`)); err == nil {
		t.Error("no error for a malformed body")
	}
}
