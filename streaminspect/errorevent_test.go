package streaminspect

import (
	"encoding/json"
	"testing"
)

// validUTF8 is what a JSON round trip makes of s: each invalid byte
// becomes U+FFFD.
func validUTF8(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	var out string
	if err := json.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return out
}

func TestErrorEvent(t *testing.T) {
	t.Parallel()
	got := string(ErrorEvent("overloaded_error", "Overloaded"))
	want := "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	for _, msg := range []string{
		"",
		`quote " and backslash \ and slash /`,
		"line\nbreak\r\nand\rCR\ttab",
		"\x00\x01\x1f\x7f control",
		"unicode é 日本 🎉",
		"line sep \u2028 para sep \u2029",
		"invalid \xff\xfe utf8 \xe6\x97",
		"</script><b>&amp;",
		"\n\ndata: injected\n\n",
	} {
		ev := ErrorEvent("api_error", msg)
		var events []rec
		var p Parser
		p.Feed(ev, func(e *Event) bool {
			events = append(events, rec{e.Type, string(e.Data), e.ID, e.Retry})
			return true
		})
		if len(events) != 1 || events[0].Type != "error" {
			t.Fatalf("%q: events %v", msg, events)
		}
		data := []byte(events[0].Data)
		if !json.Valid(data) {
			t.Fatalf("%q: invalid JSON %s", msg, data)
		}
		info, ok := ParseError(data)
		if !ok || info.Type != "api_error" || info.Message != validUTF8(msg) {
			t.Fatalf("%q: round trip %+v %v", msg, info, ok)
		}
		var v struct {
			Type  string `json:"type"`
			Error struct {
				Type    string `json:"type"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if err := json.Unmarshal(data, &v); err != nil || v.Type != "error" || v.Error.Message != validUTF8(msg) {
			t.Fatalf("%q: encoding/json reads %+v %v", msg, v, err)
		}
	}
}
