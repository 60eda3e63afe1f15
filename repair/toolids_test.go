package repair

import (
	"bytes"
	"errors"
	"strconv"
	"strings"
	"testing"
)

func TestSanitizeToolIDsConversation(t *testing.T) {
	t.Parallel()
	ids := map[string]string{
		"functions.Bash:0": wantID("functions.Bash:0"),
		"call.abc":         wantID("call.abc"),
	}
	if got := ids["functions.Bash:0"]; !strings.HasPrefix(got, "functions_Bash_0_") || len(got) != len("functions_Bash_0_")+8 {
		t.Fatalf("wantID = %q", got)
	}
	for _, st := range styles {
		t.Run(st.name, func(t *testing.T) {
			in := build(st, conversation())
			orig := bytes.Clone(in)
			out, n, err := SanitizeToolIDs(in)
			if err != nil {
				t.Fatal(err)
			}
			if n != 4 {
				t.Errorf("n = %d, want 4 (two tool_use ids, two tool_result references)", n)
			}
			if !bytes.Equal(in, orig) {
				t.Fatal("input modified")
			}
			want := build(st, replaceIDs(conversation(), ids))
			if !bytes.Equal(out, want) {
				t.Fatalf("output differs from the expected body\n got: %s\nwant: %s", out, want)
			}
			changed := onlyStringsChanged(t, in, out, func(from, to string) bool { return ids[from] == to })
			if changed != n {
				t.Errorf("%d tokens changed, n = %d", changed, n)
			}
			checkToolPairs(t, out)
		})
	}
}

// checkToolPairs checks every tool id is valid, distinct among tool_use
// blocks, and every tool_result answers a tool_use of the message before.
func checkToolPairs(t *testing.T, body []byte) {
	t.Helper()
	d := decode(t, body)
	uses := map[string]bool{}
	for i, m := range d.Messages {
		for _, raw := range m.Content {
			f := fields(t, raw)
			switch f.Type {
			case "tool_use":
				if !validID([]byte(f.ID)) {
					t.Errorf("message %d: invalid id %q", i, f.ID)
				}
				if uses[f.ID] {
					t.Errorf("message %d: duplicate id %q", i, f.ID)
				}
				uses[f.ID] = true
			case "tool_result":
				if !validID([]byte(f.ToolUseID)) {
					t.Errorf("message %d: invalid tool_use_id %q", i, f.ToolUseID)
				}
				if !uses[f.ToolUseID] {
					t.Errorf("message %d: tool_result for unknown id %q", i, f.ToolUseID)
				}
			}
		}
	}
}

// one builds a minimal body with the given messages (raw JSON).
func one(messages string) string {
	return `{"model":"m","messages":[` + messages + `]}`
}

func TestSanitizeToolIDsTable(t *testing.T) {
	t.Parallel()
	q := strconv.Quote
	long := strings.Repeat("x.", 50) // 100 bytes
	tests := []struct {
		name, in, want string
		n              int
	}{{
		name: "valid ids untouched",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"toolu_01-AbC","name":"Bash","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01-AbC","content":"ok"}]}`),
	}, {
		name: "use and result map alike",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"functions.Bash:0","name":"Bash","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"functions.Bash:0","content":"ok"}]}`),
		want: one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q(wantID("functions.Bash:0")) + `,"name":"Bash","input":{}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":` + q(wantID("functions.Bash:0")) + `,"content":"ok"}]}`),
		n:    2,
	}, {
		name: "escaped invalid id hashes its value",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"functions\u002eBash:0","input":{}}]}`),
		want: one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q(wantID("functions.Bash:0")) + `,"input":{}}]}`),
		n:    1,
	}, {
		name: "escaped valid id left as written",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"toolu\u005f01","input":{}}]}`),
	}, {
		name: "escaped key",
		in:   one(`{"role":"assistant","content":[{"t\u0079pe":"tool_use","\u0069d":"a.b","input":{}}]}`),
		want: one(`{"role":"assistant","content":[{"t\u0079pe":"tool_use","\u0069d":` + q(wantID("a.b")) + `,"input":{}}]}`),
		n:    1,
	}, {
		name: "empty id",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"","input":{}}]}`),
		want: one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q(wantID("")) + `,"input":{}}]}`),
		n:    1,
	}, {
		name: "non-ASCII rune is one underscore",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"outil.été","input":{}}]}`),
		want: one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q("outil__t__"+wantID("outil.été")[len("outil__t__"):]) + `,"input":{}}]}`),
		n:    1,
	}, {
		name: "long id prefix cut to 64 bytes",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q(long) + `,"input":{}}]}`),
		want: one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q(wantID(long)[:64]+wantID(long)[100:]) + `,"input":{}}]}`),
		n:    1,
	}, {
		name: "server tool blocks",
		in:   one(`{"role":"assistant","content":[{"type":"server_tool_use","id":"srv:1","name":"web_search","input":{}},{"type":"web_search_tool_result","tool_use_id":"srv:1","content":[]}]}`),
		want: one(`{"role":"assistant","content":[{"type":"server_tool_use","id":` + q(wantID("srv:1")) + `,"name":"web_search","input":{}},{"type":"web_search_tool_result","tool_use_id":` + q(wantID("srv:1")) + `,"content":[]}]}`),
		n:    2,
	}, {
		name: "ids elsewhere untouched",
		in: one(`{"role":"assistant","content":[{"type":"text","text":"functions.Bash:0","id":"a.b"},` +
			`{"type":"tool_use","id":"ok_1","input":{"id":"a.b","tool_use_id":"c.d"}},` +
			`{"type":"tool_use","id":7,"input":{}},` +
			`{"type":"tool_use","input":{}}]},` +
			`{"role":"user","content":"functions.Bash:0"},{"role":"user","id":"x.y","content":[{"type":"tool_result","tool_use_id":"ok_1","content":[{"type":"tool_use","id":"nested.one"}]}]}`),
	}, {
		name: "type given after id",
		in:   one(`{"content":[{"id":"a:b","input":{},"type":"tool_use"}],"role":"assistant"}`),
		want: one(`{"content":[{"id":` + q(wantID("a:b")) + `,"input":{},"type":"tool_use"}],"role":"assistant"}`),
		n:    1,
	}, {
		name: "a valid id equal to a new id pushes it to a longer hash",
		in:   one(`{"role":"assistant","content":[{"type":"tool_use","id":"a.b","input":{}},{"type":"tool_use","id":` + q(wantID("a.b")) + `,"input":{}}]}`),
		want: one(`{"role":"assistant","content":[{"type":"tool_use","id":` + q(idWithHash("a.b", 16)) + `,"input":{}},{"type":"tool_use","id":` + q(wantID("a.b")) + `,"input":{}}]}`),
		n:    1,
	}, {
		name: "messages twice: both walked",
		in:   `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"}]}],"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"}]}]}`,
		want: `{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":` + q(wantID("a.b")) + `}]}],"messages":[{"role":"assistant","content":[{"type":"tool_use","id":` + q(wantID("a.b")) + `}]}]}`,
		n:    2,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			out, n, err := SanitizeToolIDs(in)
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
			if sameSlice(out, in) {
				t.Error("changed body aliases the input")
			}
			decode(t, out)
		})
	}
}

// idWithHash is wantID with a longer hash.
func idWithHash(orig string, hexLen int) string {
	w := wantID(orig)
	full := wantID(orig)[:len(w)-8] + fullHash(orig)
	return full[:len(w)-8+hexLen]
}

func TestSanitizeToolIDsCollidingIDs(t *testing.T) {
	t.Parallel()
	// a.b, a:b and a_b differ only where a.b and a:b are invalid; a_b is
	// valid. All three must stay distinct, each pair must still match.
	ids := []string{"a.b", "a:b", "a_b", "a b", "a.b"}
	var msgs []string
	for _, id := range ids[:4] {
		msgs = append(msgs,
			`{"role":"assistant","content":[{"type":"tool_use","id":`+strconv.Quote(id)+`,"name":"Bash","input":{}}]}`,
			`{"role":"user","content":[{"type":"tool_result","tool_use_id":`+strconv.Quote(id)+`,"content":"x"}]}`)
	}
	in := []byte(one(strings.Join(msgs, ",")))
	out, n, err := SanitizeToolIDs(in)
	if err != nil {
		t.Fatal(err)
	}
	if n != 6 {
		t.Errorf("n = %d, want 6", n)
	}
	checkToolPairs(t, out)
	d := decode(t, out)
	seen := map[string]string{}
	for i, m := range d.Messages {
		if m.Role != "assistant" {
			continue
		}
		id := fields(t, m.Content[0]).ID
		if prev, dup := seen[id]; dup {
			t.Errorf("%q and %q both became %q", prev, ids[i/2], id)
		}
		seen[id] = ids[i/2]
	}
	if len(seen) != 4 {
		t.Errorf("%d distinct ids, want 4: %v", len(seen), seen)
	}
	if _, ok := seen["a_b"]; !ok {
		t.Error("the valid id a_b was changed")
	}
}

func TestSanitizeToolIDsDeterministicAcrossTurns(t *testing.T) {
	t.Parallel()
	st := styles[0]
	turn3 := conversation()[:5]
	turn4 := append(conversation(),
		msg{role: "user", blocks: []string{`{"type":"text","text":"and the other one"}`}},
		msg{role: "assistant", blocks: []string{toolUse("functions.Read:1", "x"), toolUse("functions.Bash:0x", "y")}},
		msg{role: "user", blocks: []string{toolResult("functions.Read:1", "a"), toolResult("functions.Bash:0x", "b")}},
	)
	out3, n3, err := SanitizeToolIDs(build(st, turn3))
	if err != nil {
		t.Fatal(err)
	}
	out4, n4, err := SanitizeToolIDs(build(st, turn4))
	if err != nil {
		t.Fatal(err)
	}
	if n3 != 4 || n4 != 8 {
		t.Errorf("n = %d, %d; want 4, 8", n3, n4)
	}
	d3, d4 := decode(t, out3), decode(t, out4)
	for i := range d3.Messages {
		for j := range d3.Messages[i].Content {
			if !bytes.Equal(d3.Messages[i].Content[j], d4.Messages[i].Content[j]) {
				t.Errorf("message %d block %d differs between turns:\n%s\n%s", i, j, d3.Messages[i].Content[j], d4.Messages[i].Content[j])
			}
		}
	}
	// And a second run over the same body is byte-identical.
	again, _, _ := SanitizeToolIDs(build(st, turn4))
	if !bytes.Equal(again, out4) {
		t.Error("two runs over the same body differ")
	}
	// Sanitizing is idempotent.
	if o, n, _ := SanitizeToolIDs(out4); n != 0 || !sameSlice(o, out4) {
		t.Errorf("second pass changed %d ids", n)
	}
}

func TestSanitizeToolIDsNewIDCollision(t *testing.T) {
	t.Parallel()
	// Pathological: valid ids equal to the 8-, 16- and 64-digit forms.
	l8, l16, l64 := idWithHash("a.b", 8), idWithHash("a.b", 16), idWithHash("a.b", 64)
	in := []byte(one(`{"role":"assistant","content":[` +
		`{"type":"tool_use","id":"a.b"},{"type":"tool_use","id":"` + l8 + `"},` +
		`{"type":"tool_use","id":"` + l16 + `"},{"type":"tool_use","id":"` + l64 + `"}]}`))
	out, n, err := SanitizeToolIDs(in)
	if err != nil || n != 1 {
		t.Fatalf("n = %d, err = %v", n, err)
	}
	got := fields(t, decode(t, out).Messages[0].Content[0]).ID
	if got != l64+"_2" {
		t.Errorf("got %q, want %q", got, l64+"_2")
	}
}

func TestSanitizeToolIDsErrors(t *testing.T) {
	t.Parallel()
	for _, in := range malformed {
		out, n, err := SanitizeToolIDs([]byte(in))
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: err = %v, want *SyntaxError", in, err)
		}
		if n != 0 || string(out) != in {
			t.Errorf("%q: body changed on error", in)
		}
	}
}

func TestSanitizeToolIDsHashCollision(t *testing.T) {
	t.Parallel()
	// Two ids with the same readable part whose SHA-256 share the first 8
	// hex digits (found by a birthday search): the second must not get the
	// first one's new id.
	a, b := "x::::.:...:............", "x.:.::.:.::.:.::......."
	if wantID(a) != wantID(b) {
		t.Fatalf("fixture: %s and %s no longer collide", wantID(a), wantID(b))
	}
	in := []byte(one(`{"role":"assistant","content":[{"type":"tool_use","id":"` + a + `"},{"type":"tool_use","id":"` + b + `"}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + b + `"},{"type":"tool_result","tool_use_id":"` + a + `"}]}`))
	out, n, err := SanitizeToolIDs(in)
	if err != nil || n != 4 {
		t.Fatalf("n = %d, err = %v", n, err)
	}
	d := decode(t, out)
	ua, ub := fields(t, d.Messages[0].Content[0]).ID, fields(t, d.Messages[0].Content[1]).ID
	if ua != wantID(a) || ub != idWithHash(b, 16) {
		t.Errorf("got %q, %q; want %q, %q", ua, ub, wantID(a), idWithHash(b, 16))
	}
	checkToolPairs(t, out)
	if ra := fields(t, d.Messages[1].Content[1]).ToolUseID; ra != ua {
		t.Errorf("tool_result for a refers to %q, want %q", ra, ua)
	}
}
