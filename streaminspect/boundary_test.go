package streaminspect

import (
	"bytes"
	"testing"
)

func TestLastBoundary(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want int
	}{
		{"", -1},
		{"data: x\n", -1},
		{"data: x\n\n", 9},
		{"data: x\n\ndata: {\"type\":\"content_block_del", 9},
		{"event: a\ndata: x\n\nevent: b\ndata: y\n\n", 36},
		{"data: x\r\n\r\n", 11},
		{"data: x\r\n\r\ndata: y", 11},
		{"data: x\r\rdata: y", 9},
		{"data: x\n\r\n", 10},
		{"data: x\r\n\r", -1}, // the empty line's CR may still be followed by LF
		{"\n\n", 2},
	} {
		if got := LastBoundary([]byte(tc.in)); got != tc.want {
			t.Errorf("LastBoundary(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// FuzzLastBoundary checks that what LastBoundary says is a boundary is one:
// a parser fed b[:n] has no event in progress, and every event of b[:n]
// was dispatched.
func FuzzLastBoundary(f *testing.F) {
	for _, s := range []string{"data: x\n\n", "event: a\ndata: x\r\n\r\ndata: y", "data: a\r\rdata", "data: {\"a\":1}\n\ndata: [DONE]\n\n", ":c\n\nid: 1\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		n := LastBoundary(b)
		if n < 0 {
			return
		}
		if n > len(b) {
			t.Fatalf("boundary %d past the end %d", n, len(b))
		}
		// After the boundary, an error event of our own must be read whole,
		// as exactly the event we wrote.
		var p Parser
		var last *Event
		var got []byte
		in := append(bytes.Clone(b[:n]), ErrorEvent("api_error", "cut")...)
		p.Feed(in, func(ev *Event) bool {
			last = ev
			got = append(got[:0], ev.Data...)
			return true
		})
		if p.Err() != nil {
			return // over the line limit: nothing to check
		}
		if last == nil || last.Type != "error" || string(got) != `{"type":"error","error":{"type":"api_error","message":"cut"}}` {
			t.Fatalf("after %q the error event reads as %v %q", b[:n], last, got)
		}
	})
}
