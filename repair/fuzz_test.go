package repair

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// validObject is the contract's precondition: valid JSON whose top level
// is an object.
func validObject(b []byte) bool {
	return json.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{"))
}

// fuzzSeeds passes the seed bodies to add (f is unused; it marks the
// helper as fuzz-only).
func fuzzSeeds(_ *testing.F, add func(body []byte)) {
	// Small seeds: the fuzzer minimises every new input it finds, which is
	// slow on the full-size fixture.
	for _, st := range styles {
		add(build(st, conversationWith(24)))
	}
	add([]byte(one(`{"role":"assistant","content":[{"type":"tool_use","id":"a.b","input":{}},{"type":"thinking","thinking":"x","signature":"s"}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"a.b"}]}`)))
	add([]byte(`{"messages":[{"content":[{"type":"redacted_thinking","data":"d"}],"role":"assistant"}],"container":"c"}`))
	add([]byte(`{"r\u006fle":"x","messages":[{"r\u006fle":"assist\u0061nt","c\u006fntent":[{"t\u0079pe":"thinking","signature":"\u00e9"}]}]}`))
	for _, m := range malformed {
		add([]byte(m))
	}
}

// checkCommon checks what every body-editing function promises.
func checkCommon(t *testing.T, in, out []byte, n int, err error) bool {
	t.Helper()
	if validObject(in) != (err == nil) {
		t.Fatalf("err = %v, but valid object = %v", err, validObject(in))
	}
	if err != nil {
		if n != 0 || !sameSlice(out, in) {
			t.Fatal("body changed on error")
		}
		return false
	}
	if (n == 0) != sameSlice(out, in) {
		t.Fatalf("n = %d, same slice = %v", n, sameSlice(out, in))
	}
	if !json.Valid(out) {
		t.Fatalf("invalid JSON out of valid JSON:\n in: %q\nout: %q", in, out)
	}
	return true
}

func FuzzSanitizeToolIDs(f *testing.F) {
	fuzzSeeds(f, func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, in []byte) {
		orig := bytes.Clone(in)
		out, n, err := SanitizeToolIDs(in)
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if !checkCommon(t, in, out, n, err) {
			return
		}
		if n == 0 {
			return
		}
		changed := onlyStringsChanged(t, in, out, func(from, to string) bool {
			return !validID([]byte(from)) && validID([]byte(to))
		})
		if changed != n {
			t.Fatalf("%d tokens changed, n = %d", changed, n)
		}
		if again, n2, err := SanitizeToolIDs(out); err != nil || n2 != 0 || !sameSlice(again, out) {
			t.Fatalf("second pass: n = %d, err = %v", n2, err)
		}
	})
}

func FuzzStripThinking(f *testing.F) {
	fuzzSeeds(f, func(b []byte) {
		f.Add(b, 0, 0, true)
		f.Add(b, 3, 1, false)
	})
	f.Fuzz(func(t *testing.T, in []byte, m, c int, all bool) {
		sel := SelectBlocks(BlockRef{m, c})
		if all {
			sel = SelectAll()
		}
		orig := bytes.Clone(in)
		out, n, err := StripThinking(in, sel)
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if !checkCommon(t, in, out, n, err) {
			return
		}
		if n > 0 && len(out) >= len(in) {
			t.Fatalf("removed %d blocks but the body did not shrink", n)
		}
		if !all {
			// Indexes name blocks of the body passed in: a second pass
			// over out may find another block at (m, c), so no
			// idempotence here, but one ref removes one block at most.
			if n > 1 {
				t.Fatalf("one block named, %d removed", n)
			}
			return
		}
		// Nothing removable is left behind.
		if again, n2, err := StripThinking(out, sel); err != nil || n2 != 0 || !sameSlice(again, out) {
			t.Fatalf("second pass: n = %d, err = %v", n2, err)
		}
	})
}

func FuzzDropFields(f *testing.F) {
	fuzzSeeds(f, func(b []byte) {
		f.Add(b, "context_management,container")
		f.Add(b, "messages")
	})
	f.Fuzz(func(t *testing.T, in []byte, list string) {
		names := strings.Split(list, ",")
		orig := bytes.Clone(in)
		out, n, err := DropFields(in, names)
		if !bytes.Equal(in, orig) {
			t.Fatal("input modified")
		}
		if !checkCommon(t, in, out, n, err) {
			return
		}
		if again, n2, err := DropFields(out, names); err != nil || n2 != 0 || !sameSlice(again, out) {
			t.Fatalf("second pass: n = %d, err = %v", n2, err)
		}
		if !utf8.ValidString(list) || strings.ContainsRune(list, utf8.RuneError) || !utf8.Valid(in) {
			return // encoding/json would see other keys than the raw bytes
		}
		var before, after map[string]json.RawMessage
		if json.Unmarshal(in, &before) != nil || json.Unmarshal(out, &after) != nil {
			t.Fatal("decode")
		}
		for _, name := range names {
			delete(before, name)
		}
		if len(before) != len(after) {
			t.Fatalf("keys: %d left, want %d", len(after), len(before))
		}
		for k, v := range before {
			if !bytes.Equal(after[k], v) {
				t.Fatalf("member %q changed: %s -> %s", k, v, after[k])
			}
		}
	})
}

func FuzzParseRefusal(f *testing.F) {
	f.Add("messages.3.content.0: Invalid `signature` in `thinking` block")
	f.Add("Unexpected value(s) `a` for the `anthropic-beta` header")
	f.Add("context_management: Extra inputs are not permitted")
	f.Fuzz(func(t *testing.T, msg string) {
		r := ParseRefusal(msg)
		if r.Kind == RefusalNone && (len(r.Blocks) > 0 || len(r.Names) > 0) {
			t.Fatal("details without a kind")
		}
		_ = r.Selector()
	})
}
