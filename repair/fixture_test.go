package repair

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// msg is one message of a test conversation: a role and its content blocks
// as raw JSON text.
type msg struct {
	role     string
	blocks   []string
	roleLast bool // write "content" before "role"
}

// style is how a test body is laid out; each style keeps its separators
// uniform, so removing an element must give the body built without it.
type style struct {
	name string
	sep  string // between elements of arrays and members of objects
}

var styles = []style{
	{"compact", ","},
	{"spaced", ", "},
	{"pretty", ",\n    "},
}

// Realistic pieces of a Claude Code request. The strings hold escapes,
// HTML-ish text and non-ASCII on purpose: none of it may change.
const (
	systemText   = `"You are Claude Code, Anthropic's official CLI for Claude.\n<env>\nWorking directory: /home/u/src\nIs git repo: true\n</env>\nNever write </script> & never \"guess\" paths like C:\\\\Users. Caf\u00e9 \u2014 \ud83d\ude80 ok"`
	userText     = `{"type":"text","text":"Fix the failing test in <pkg>/x_test.go && run \"go test\" \\o/ \u00e9t\u00e9 </script>"}`
	cacheText    = `{"type":"text","text":"<system-reminder>\nAs you answer, use the TodoWrite tool.\n</system-reminder>","cache_control":{"type":"ephemeral"}}`
	assistantTxt = `{"type":"text","text":"I'll look at the test first. Let me run it & see what <fails>."}`
)

func thinkingBlock(n int) string {
	return `{"type":"thinking","thinking":"The user wants the test fixed.\nStep ` + strconv.Itoa(n) +
		`: read \"x_test.go\" & check <T>.","signature":"` + signature(n) + `"}`
}

// signature is a realistic-looking (base64) thinking signature.
func signature(n int) string {
	raw := make([]byte, 180)
	for i := range raw {
		raw[i] = byte(i*7 + n*13)
	}
	return "Eq" + base64.StdEncoding.EncodeToString(raw)
}

func redactedBlock(n int) string {
	return `{"type":"redacted_thinking","data":"EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh` + strconv.Itoa(n) + `+0Hy8Yk3QQ=="}`
}

func toolUse(id, cmd string) string {
	return `{"type":"tool_use","id":` + strconv.Quote(id) + `,"name":"Bash","input":{"command":` + strconv.Quote(cmd) + `,"description":"Run <it> & check"}}`
}

func toolResult(id, out string) string {
	return `{"type":"tool_result","tool_use_id":` + strconv.Quote(id) + `,"content":[{"type":"text","text":` + strconv.Quote(out) + `}],"is_error":false}`
}

func imageBlock(size int) string {
	raw := make([]byte, size)
	for i := range raw {
		raw[i] = byte(i * 31)
	}
	return `{"type":"image","source":{"type":"base64","media_type":"image/png","data":"` + base64.StdEncoding.EncodeToString(raw) + `"}}`
}

// build returns a Claude Code request body with the given messages.
func build(st style, msgs []msg) []byte {
	sep := st.sep
	var b strings.Builder
	b.WriteString(`{"model":"claude-sonnet-4-5-20250929"` + sep + `"max_tokens":32000` + sep)
	b.WriteString(`"system":[{"type":"text","text":` + systemText + `,"cache_control":{"type":"ephemeral"}}]` + sep)
	b.WriteString(`"tools":[{"name":"Bash","description":"Executes a bash command. Use && to chain; quote paths with spaces: \"a b\".","input_schema":{"type":"object","properties":{"command":{"type":"string"},"timeout":{"type":"number","maximum":600000}},"required":["command"],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}}]` + sep)
	b.WriteString(`"metadata":{"user_id":"user_1f3a_account__session_9e2c"}` + sep)
	b.WriteString(`"messages":[`)
	for i, m := range msgs {
		if i > 0 {
			b.WriteString(sep)
		}
		content := `"content":[` + strings.Join(m.blocks, sep) + `]`
		role := `"role":"` + m.role + `"`
		if m.roleLast {
			b.WriteString(`{` + content + sep + role + `}`)
		} else {
			b.WriteString(`{` + role + sep + content + `}`)
		}
	}
	b.WriteString(`]` + sep + `"thinking":{"type":"enabled","budget_tokens":31999}` + sep)
	b.WriteString(`"context_management":{"edits":[{"type":"clear_thinking_20251015","keep":"all"}]}` + sep)
	b.WriteString(`"temperature":1e0` + sep + `"stream":true}`)
	return []byte(b.String())
}

// conversation is a multi-turn Claude Code session in which a failover
// brought tool ids from another provider (functions.Bash:N) next to
// Anthropic's own (toolu_...).
func conversation() []msg { return conversationWith(3000) }

// conversationWith is conversation with an image of imageSize bytes.
func conversationWith(imageSize int) []msg {
	return []msg{
		{role: "user", blocks: []string{userText, cacheText}},
		{role: "assistant", blocks: []string{thinkingBlock(1), assistantTxt, toolUse("toolu_01A09q90qw90lq917835lq9", "go test ./...")}},
		{role: "user", blocks: []string{toolResult("toolu_01A09q90qw90lq917835lq9", "--- FAIL: TestX (0.00s)\n\tx_test.go:12: got <nil>")}},
		{role: "assistant", blocks: []string{redactedBlock(2), thinkingBlock(2), toolUse("functions.Bash:0", "cat x_test.go"), toolUse("call.abc", "ls")}},
		{role: "user", blocks: []string{toolResult("functions.Bash:0", "package x\n"), toolResult("call.abc", "x.go\nx_test.go"), imageBlock(imageSize)}, roleLast: true},
		{role: "assistant", blocks: []string{thinkingBlock(3)}},
		{role: "user", blocks: []string{`{"type":"text","text":"continue"}`}},
		{role: "assistant", blocks: []string{thinkingBlock(4), assistantTxt}, roleLast: true},
	}
}

var notIDChar = regexp.MustCompile(`[^a-zA-Z0-9_-]`)

// wantID is the documented mapping, written independently of the code:
// disallowed characters to '_', then '_' and 8 hex digits of SHA-256.
func wantID(orig string) string {
	sum := sha256.Sum256([]byte(orig))
	return notIDChar.ReplaceAllString(orig, "_") + "_" + hex.EncodeToString(sum[:])[:8]
}

// replaceIDs rewrites ids in blocks, the way the expected output is built.
func replaceIDs(msgs []msg, ids map[string]string) []msg {
	out := make([]msg, len(msgs))
	for i, m := range msgs {
		out[i] = m
		out[i].blocks = nil
		for _, b := range m.blocks {
			for from, to := range ids {
				b = strings.ReplaceAll(b, `"id":`+strconv.Quote(from), `"id":`+strconv.Quote(to))
				b = strings.ReplaceAll(b, `"tool_use_id":`+strconv.Quote(from), `"tool_use_id":`+strconv.Quote(to))
			}
			out[i].blocks = append(out[i].blocks, b)
		}
	}
	return out
}

// decoded is the structure a body must still decode to.
type decoded struct {
	Messages []struct {
		Role    string            `json:"role"`
		Content []json.RawMessage `json:"content"`
	} `json:"messages"`
}

type blockFields struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	ToolUseID string `json:"tool_use_id"`
	Signature string `json:"signature"`
}

func decode(t testing.TB, body []byte) decoded {
	t.Helper()
	if !json.Valid(body) {
		t.Fatalf("not valid JSON:\n%s", body)
	}
	var d decoded
	if err := json.Unmarshal(body, &d); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return d
}

func fields(t testing.TB, raw json.RawMessage) blockFields {
	t.Helper()
	var f blockFields
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("decode block %s: %v", raw, err)
	}
	return f
}

// topLevel returns the raw top-level members of body.
func topLevel(t testing.TB, body []byte) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatalf("decode top level: %v", err)
	}
	return m
}

// sameSlice reports whether a and b are the same slice (not just equal).
func sameSlice(a, b []byte) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func fullHash(orig string) string {
	sum := sha256.Sum256([]byte(orig))
	return hex.EncodeToString(sum[:])
}

// malformed bodies: each must be refused by every function.
var malformed = []string{
	``,
	`   `,
	`[]`,
	`"messages"`,
	`null`,
	`{`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"}]}]`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"}]}]}}`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"}]}]} x`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b",}]}]}`,
	`{"messages":[{"role":"assistant","content":[{"type":"thinking","signature":"s"},]}]}`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"}]},]}`,
	`{"context_management":{},}`,
	`{,"a":1}`,
	`{"a" 1}`,
	`{"a":01}`,
	`{"a":1.}`,
	`{"a":-}`,
	`{"a":1e}`,
	`{"a":tru}`,
	`{"a":nul}`,
	`{"a":"\x"}`,
	`{"a":"\u12g4"}`,
	"{\"a\":\"tab\there\"}",
	`{"a":"unterminated}`,
	`{"a":[1,2}`,
	`{"a":{"b":1]}`,
	`{"a":1}{"b":2}`,
	`{"messages":[{"role":"assistant","content":[{"type":"tool_use","id":"a.b"} {"type":"text"}]}]}`,
	`{"messages":[{"role":"assistant","content":[{"type":"thinking","signature":"x"}]}],"context_management":{"x":[}}`,
	"{\"a\":1}\x00",
}
