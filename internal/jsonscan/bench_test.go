package jsonscan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// claudeCodeBody builds a request like Claude Code's of about size bytes:
// a long system prompt, tool definitions, and a history of tool calls with
// code (full of quotes, backslashes and newlines); "model" comes last so
// the whole top level is walked.
func claudeCodeBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"max_tokens":32000,"temperature":1,`)
	sys, _ := json.Marshal(strings.Repeat("You are an interactive CLI tool that helps users with software engineering tasks. "+
		"Use the <example> tags & follow \"instructions\".\n", 40))
	b.WriteString(`"system":[{"type":"text","text":` + string(sys) + `,"cache_control":{"type":"ephemeral"}}],"tools":[`)
	for i := range 16 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"Tool%d","description":"Performs operation %d. Usage:\n- The path must be absolute\n- Use \"quotes\" for paths with spaces","input_schema":{"type":"object","properties":{"file_path":{"type":"string","description":"The absolute path"},"limit":{"type":"number"}},"required":["file_path"]}}`, i, i)
	}
	b.WriteString(`],"messages":[`)
	code, _ := json.Marshal("func main() {\n\tfmt.Printf(\"%s\\n\", `raw`)\n\tif a < b && c > d {\n\t\treturn \"\\\\\"\n\t}\n}\n")
	for i := 0; b.Len() < size-200; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		id := fmt.Sprintf("toolu_01%022d", i)
		fmt.Fprintf(&b, `{"role":"assistant","content":[{"type":"thinking","thinking":"Let me look at the file %d.","signature":"EqQBCkYIBxgCKkA%040d"},{"type":"tool_use","id":"%s","name":"Read","input":{"file_path":"/src/main%d.go"}}]},`, i, i, id, i)
		fmt.Fprintf(&b, `{"role":"user","content":[{"type":"tool_result","tool_use_id":"%s","content":%s}]}`, id, code)
	}
	b.WriteString(`],"metadata":{"user_id":"user_abc"},"stream":true,"model":"claude-sonnet-4-5"}`)
	return b.Bytes()
}

// BenchmarkMembers walks the top level of a 200 KB request body: what
// reading its last "model" costs.
func BenchmarkMembers(b *testing.B) {
	body := claudeCodeBody(200 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		it := Object(body)
		var model []byte
		for it.Next() {
			m := &it.Member
			if m.KeyIs("model") {
				model = m.Value
			}
		}
		if model == nil {
			b.Fatal("no model")
		}
	}
}

// BenchmarkScannerValue is the strict walk over the same body.
func BenchmarkScannerValue(b *testing.B) {
	body := claudeCodeBody(200 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		s := Scanner{B: body}
		if !s.Value(0) {
			b.Fatal(s.Err)
		}
	}
}

// BenchmarkLookupEvent reads the type and a nested field of a typical
// streamed event.
func BenchmarkLookupEvent(b *testing.B) {
	ev := []byte(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello, here is the next few words of the answer"}}`)
	b.SetBytes(int64(len(ev)))
	b.ReportAllocs()
	for b.Loop() {
		if Lookup(ev, "type") == nil || Lookup(Lookup(ev, "delta"), "text") == nil {
			b.Fatal("not found")
		}
	}
}
