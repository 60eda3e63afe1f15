package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// benchModel is the model every generated body asks for.
const benchModel = "claude-sonnet-4-5-20250929"

// jstr is s as a JSON string the way JavaScript's JSON.stringify writes it
// (Claude Code is a Node program): no HTML escaping of <, > and &.
func jstr(s string) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil {
		panic(err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// makeBody returns a Messages request body of exactly size bytes (or a
// minimal one when size <= 0) with "model" as its first key and "stream"
// as its last, shaped like what Claude Code sends: a system prompt with
// cache_control, a list of tools with JSON schemas, a conversation of
// tool_use / tool_result turns carrying source code, metadata, max_tokens.
func makeBody(size int, stream bool) []byte {
	streamVal := "false"
	if stream {
		streamVal = "true"
	}
	if size <= 0 {
		return []byte(`{"model":"` + benchModel + `","max_tokens":1024,"messages":[{"role":"user","content":"Hello, Claude"}],"stream":` + streamVal + `}`)
	}
	// head: everything up to the last message's text; tail: the rest.
	var head strings.Builder
	head.WriteString(`{"model":"` + benchModel + `","messages":[`)
	tail := `"},{"type":"text","text":"<system-reminder>\nThe TodoWrite tool hasn't been used recently.\n</system-reminder>"}]}],` +
		`"temperature":1,"system":[{"type":"text","text":` + jstr("You are Claude Code, Anthropic's official CLI for Claude.") +
		`,"cache_control":{"type":"ephemeral"}}`
	if size >= 16<<10 {
		tail += `,{"type":"text","text":` + jstr(systemPrompt()) + `,"cache_control":{"type":"ephemeral"}}],"tools":` + toolsJSON()
	} else {
		tail += `]`
	}
	tail += `,"metadata":{"user_id":"user_5f1c0e3d9b8a7f6e5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918_account__session_6a1f4c2e-9d3b-4e8a-b7c6-1f2e3d4c5b6a"},"max_tokens":32000,"stream":` + streamVal + `}`

	// conversation turns until the body is nearly big enough
	const lastOpen = `{"role":"user","content":[{"type":"text","text":"`
	turn := 0
	for {
		t := conversationTurn(turn)
		if head.Len()+len(t)+len(lastOpen)+len(tail) > size {
			break
		}
		head.WriteString(t)
		turn++
	}
	head.WriteString(lastOpen)
	pad := size - head.Len() - len(tail)
	if pad < 0 {
		// too small for the fixed parts: a plain body, padded
		small := makeBody(0, stream)
		if size <= len(small)+16 {
			return small
		}
		s := string(small)
		i := strings.Index(s, `Hello, Claude`) + len(`Hello, Claude`)
		return []byte(s[:i] + filler(size-len(s)) + s[i:])
	}
	head.WriteString(filler(pad))
	head.WriteString(tail)
	return []byte(head.String())
}

// filler is n bytes of words that JSON does not escape.
func filler(n int) string {
	const words = " Please keep going with the refactor and run the tests again when you are done."
	var b strings.Builder
	b.Grow(n)
	for b.Len() < n {
		b.WriteString(words[:min(len(words), n-b.Len())])
	}
	return b.String()
}

// conversationTurn is one user message, one assistant tool_use and the
// user's tool_result with a file's contents: the bulk of a real body.
func conversationTurn(i int) string {
	id := fmt.Sprintf("toolu_01%022d", i)
	path := fmt.Sprintf("/home/dev/project/internal/server/handler_%d.go", i)
	return `{"role":"user","content":[{"type":"text","text":` + jstr(fmt.Sprintf("Look at %s and tell me why the tests fail — the <error> says \"unexpected EOF\" & nothing else.", path)) + `}]},` +
		`{"role":"assistant","content":[{"type":"text","text":` + jstr("I'll read the file first.") + `},` +
		`{"type":"tool_use","id":"` + id + `","name":"Read","input":{"file_path":` + jstr(path) + `}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"` + id + `","content":` + jstr(sourceFile(i)) + `}]},`
}

// sourceFile is a few KB of Go source as Claude Code's Read tool returns it
// (line-numbered, tabs, quotes, < and &&: plenty of escapes).
func sourceFile(i int) string {
	var b strings.Builder
	lines := []string{
		"package server",
		"",
		"import (",
		"\t\"context\"",
		"\t\"errors\"",
		"\t\"net/http\"",
		")",
		"",
		fmt.Sprintf("// Handler%d serves the endpoint → see docs/api.md for the contract.", i),
		fmt.Sprintf("type Handler%d struct {", i),
		"\tnext  http.Handler",
		"\tlimit int",
		"}",
		"",
		fmt.Sprintf("func (h *Handler%d) ServeHTTP(w http.ResponseWriter, r *http.Request) {", i),
		"\tif r.ContentLength > int64(h.limit) && h.limit > 0 {",
		"\t\thttp.Error(w, \"request too large: <limit>\", http.StatusRequestEntityTooLarge)",
		"\t\treturn",
		"\t}",
		"\tctx, cancel := context.WithCancel(r.Context())",
		"\tdefer cancel()",
		"\tif err := h.serve(ctx, w, r); err != nil && !errors.Is(err, context.Canceled) {",
		"\t\tw.Header().Set(\"Content-Type\", \"application/json\")",
		"\t\tw.WriteHeader(http.StatusBadGateway)",
		"\t\t_, _ = w.Write([]byte(`{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream failed\"}}`))",
		"\t}",
		"}",
		"",
	}
	n := 1
	for rep := 0; rep < 3; rep++ {
		for _, l := range lines {
			fmt.Fprintf(&b, "%6d\t%s\n", n, l)
			n++
		}
	}
	return b.String()
}

// systemPrompt is about 12 KB of instructions, as Claude Code's is.
func systemPrompt() string {
	var b strings.Builder
	b.WriteString("You are an interactive CLI tool that helps users with software engineering tasks. Use the instructions below and the tools available to you to assist the user.\n\n")
	b.WriteString("IMPORTANT: Assist with defensive security tasks only. Refuse to create, modify, or improve code that may be used maliciously.\n\n")
	sections := []string{"Tone and style", "Proactiveness", "Following conventions", "Code style", "Task Management", "Doing tasks", "Tool usage policy"}
	for len(b.String()) < 12<<10 {
		for _, s := range sections {
			fmt.Fprintf(&b, "# %s\n- You should be concise, direct, and to the point. When you run a non-trivial bash command, you should explain what the command does and why you are running it.\n- Use `<example>` blocks & \"quotes\" where they help; never guess URLs.\n\n", s)
		}
	}
	return b.String()
}

// toolsJSON is a list of tool definitions with input schemas.
func toolsJSON() string {
	type prop struct{ name, typ, desc string }
	tools := []struct {
		name, desc string
		props      []prop
	}{
		{"Bash", "Executes a given bash command in a persistent shell session with optional timeout, ensuring proper handling and security measures.", []prop{{"command", "string", "The command to execute"}, {"timeout", "number", "Optional timeout in milliseconds (max 600000)"}, {"description", "string", "Clear, concise description of what this command does in 5-10 words"}}},
		{"Glob", "Fast file pattern matching tool that works with any codebase size. Supports glob patterns like \"**/*.js\" or \"src/**/*.ts\".", []prop{{"pattern", "string", "The glob pattern to match files against"}, {"path", "string", "The directory to search in"}}},
		{"Grep", "A powerful search tool built on ripgrep. Supports full regex syntax (e.g., \"log.*Error\", \"function\\s+\\w+\").", []prop{{"pattern", "string", "The regular expression pattern to search for in file contents"}, {"path", "string", "File or directory to search in"}, {"glob", "string", "Glob pattern to filter files"}}},
		{"Read", "Reads a file from the local filesystem. You can access any file directly by using this tool.", []prop{{"file_path", "string", "The absolute path to the file to read"}, {"offset", "number", "The line number to start reading from"}, {"limit", "number", "The number of lines to read"}}},
		{"Edit", "Performs exact string replacements in files. You must use your `Read` tool at least once in the conversation before editing.", []prop{{"file_path", "string", "The absolute path to the file to modify"}, {"old_string", "string", "The text to replace"}, {"new_string", "string", "The text to replace it with (must be different from old_string)"}}},
		{"Write", "Writes a file to the local filesystem. This tool will overwrite the existing file if there is one at the provided path.", []prop{{"file_path", "string", "The absolute path to the file to write"}, {"content", "string", "The content to write to the file"}}},
		{"TodoWrite", "Use this tool to create and manage a structured task list for your current coding session.", []prop{{"todos", "array", "The updated todo list"}}},
		{"WebFetch", "Fetches content from a specified URL and processes it using an AI model.", []prop{{"url", "string", "The URL to fetch content from"}, {"prompt", "string", "The prompt to run on the fetched content"}}},
	}
	var b strings.Builder
	b.WriteByte('[')
	for i, t := range tools {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(`{"name":` + jstr(t.name) + `,"description":` + jstr(t.desc+"\n\nUsage notes:\n- "+strings.Repeat(t.desc+" ", 3)) + `,"input_schema":{"type":"object","properties":{`)
		req := make([]string, 0, len(t.props))
		for j, p := range t.props {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(jstr(p.name) + `:{"type":` + jstr(p.typ) + `,"description":` + jstr(p.desc) + `}`)
			req = append(req, jstr(p.name))
		}
		b.WriteString(`},"required":[` + strings.Join(req, ",") + `],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}}`)
	}
	b.WriteByte(']')
	return b.String()
}
