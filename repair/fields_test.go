package repair

import (
	"bytes"
	"errors"
	"testing"
)

func TestDropFieldsConversation(t *testing.T) {
	t.Parallel()
	for _, st := range styles {
		in := build(st, conversation())
		out, n, err := DropFields(in, []string{"context_management", "metadata", "container"})
		if err != nil {
			t.Fatal(err)
		}
		if n != 2 {
			t.Errorf("n = %d, want 2", n)
		}
		want := bytes.Replace(in, []byte(`"metadata":{"user_id":"user_1f3a_account__session_9e2c"}`+st.sep), nil, 1)
		want = bytes.Replace(want, []byte(`"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]}`+st.sep), nil, 1)
		if !bytes.Equal(out, want) {
			t.Fatalf("%s:\n got: %s\nwant: %s", st.name, out, want)
		}
		ti, to := topLevel(t, in), topLevel(t, out)
		if len(to) != len(ti)-2 {
			t.Errorf("%d members left, want %d", len(to), len(ti)-2)
		}
		for k, v := range to {
			if !bytes.Equal(v, ti[k]) {
				t.Errorf("%q changed", k)
			}
		}
	}
}

func TestDropFieldsTable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		names    []string
		want     string
		n        int
	}{
		{"first", `{"container":"c","model":"m"}`, []string{"container"}, `{"model":"m"}`, 1},
		{"middle", `{"a":1, "container":{"id":"x"} ,"b":2}`, []string{"container"}, `{"a":1 ,"b":2}`, 1},
		{"last", "{\n  \"a\": 1,\n  \"container\": [1, {\"x\": \"y\"}]\n}", []string{"container"}, "{\n  \"a\": 1\n}", 1},
		{"only", `{ "container":null }`, []string{"container"}, `{  }`, 1},
		{"all of several", `{"x":1,"y":2,"z":3}`, []string{"z", "x", "y"}, `{}`, 3},
		{"first two", `{"x":1,"y":2,"z":3}`, []string{"x", "y"}, `{"z":3}`, 2},
		{"duplicates", `{"x":1,"a":0,"x":2}`, []string{"x"}, `{"a":0}`, 2},
		{"escaped key", `{"a":1,"cont\u0061iner":true}`, []string{"container"}, `{"a":1}`, 1},
		{"nested key kept", `{"metadata":{"container":"x"},"tools":[{"container":1}]}`, []string{"container"}, "", 0},
		{"absent", `{"a":"<b> & </script> \u00e9 \"q\" \\"}`, []string{"container"}, "", 0},
		{"no names", `{"container":1}`, nil, "", 0},
		{"empty object", `{}`, []string{"a"}, "", 0},
		{"strings kept verbatim", `{"container":1,"s":"<b> & </script> \u00e9 \"q\" \\"}`, []string{"container"}, `{"s":"<b> & </script> \u00e9 \"q\" \\"}`, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := []byte(tt.in)
			out, n, err := DropFields(in, tt.names)
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
			topLevel(t, out)
		})
	}
}

func TestDropFieldsErrors(t *testing.T) {
	t.Parallel()
	for _, in := range malformed {
		out, n, err := DropFields([]byte(in), []string{"context_management", "a"})
		var se *SyntaxError
		if !errors.As(err, &se) {
			t.Errorf("%q: err = %v, want *SyntaxError", in, err)
		}
		if n != 0 || string(out) != in {
			t.Errorf("%q: body changed on error", in)
		}
	}
}
