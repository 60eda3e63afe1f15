package repair

import (
	"reflect"
	"testing"
)

func TestParseRefusal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		msg  string
		want Refusal
	}{
		{"messages.1.content.2.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
			Refusal{Kind: RefusalToolIDs, Blocks: []BlockRef{{1, 2}}}},
		{"messages.4.content.0.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'",
			Refusal{Kind: RefusalToolIDs, Blocks: []BlockRef{{4, 0}}}},
		{"messages.3.content.0: Invalid `signature` in `thinking` block",
			Refusal{Kind: RefusalThinking, Blocks: []BlockRef{{3, 0}}}},
		{"messages.11.content.1: invalid signature in thinking block; messages.13.content.0: Invalid `signature` in `thinking` block; messages.11.content.1: again",
			Refusal{Kind: RefusalThinking, Blocks: []BlockRef{{11, 1}, {13, 0}}}},
		{"messages.5.content.0.thinking.signature: Field required",
			Refusal{Kind: RefusalThinking, Blocks: []BlockRef{{5, 0}}}},
		{"Invalid `signature` in `thinking` block",
			Refusal{Kind: RefusalThinking}},
		{"messages.1.content.0: Invalid `data` in `redacted_thinking` block",
			Refusal{Kind: RefusalThinking, Blocks: []BlockRef{{1, 0}}}},
		{"messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block (preceeding the lastmost set of `tool_use` and `tool_result` blocks).",
			Refusal{Kind: RefusalThinkingRequired, Blocks: []BlockRef{{1, 0}}}},
		{"Unexpected value(s) `context-management-2025-06-27`, `fine-grained-tool-streaming-2025-05-14` for the `anthropic-beta` header. Please consult our documentation at docs.anthropic.com or try again without the header.",
			Refusal{Kind: RefusalBetas, Names: []string{"context-management-2025-06-27", "fine-grained-tool-streaming-2025-05-14"}}},
		{"context_management: Extra inputs are not permitted",
			Refusal{Kind: RefusalFields, Names: []string{"context_management"}}},
		{"container: Extra inputs are not permitted; context_management: Extra inputs are not permitted",
			Refusal{Kind: RefusalFields, Names: []string{"container", "context_management"}}},
		{"tools.0.cache_control: Extra inputs are not permitted", Refusal{}},
		{`{"type":"error","error":{"type":"invalid_request_error","message":"messages.7.content.1: Invalid ` + "`signature`" + ` in ` + "`thinking`" + ` block"}}`,
			Refusal{Kind: RefusalThinking, Blocks: []BlockRef{{7, 1}}}},
		{"prompt is too long: 212345 tokens > 200000 maximum", Refusal{}},
		{"messages: roles must alternate between \"user\" and \"assistant\"", Refusal{}},
		{"max_tokens: Field required", Refusal{}},
		{"Unexpected value(s) for the `anthropic-beta` header", Refusal{}},
		{"", Refusal{}},
	}
	for _, tt := range tests {
		got := ParseRefusal(tt.msg)
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseRefusal(%q)\n got %+v\nwant %+v", tt.msg, got, tt.want)
		}
	}
}

func TestRefusalSelector(t *testing.T) {
	t.Parallel()
	r := ParseRefusal("messages.3.content.0: Invalid `signature` in `thinking` block")
	if s := r.Selector(); !s.Selects(3, 0) || s.Selects(3, 1) || s.All() {
		t.Errorf("selector %+v", s)
	}
	if s := ParseRefusal("Invalid `signature` in `thinking` block").Selector(); !s.All() {
		t.Error("a refusal naming no block should select all")
	}
	if s := ParseRefusal("messages.1.content.0.tool_use.id: String should match pattern 'x'").Selector(); !s.Empty() {
		t.Error("a tool id refusal selects thinking blocks")
	}
	if RefusalThinking.String() != "thinking" || RefusalKind(42).String() != "RefusalKind(42)" {
		t.Error("String wrong")
	}
}
