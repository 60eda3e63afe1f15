package streaminspect

import "testing"

func TestUsageAdd(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		events [][2]string // type, data
		want   Usage
	}{
		{
			name: "anthropic message_delta replaces output",
			events: [][2]string{
				{"message_start", `{"type":"message_start","message":{"id":"m","usage":{"input_tokens":25,"cache_creation_input_tokens":10,"cache_read_input_tokens":100,"output_tokens":1}}}`},
				{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"\"usage\":{\"output_tokens\":999}"}}`},
				{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}`},
				{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":20}}`},
			},
			want: Usage{InputTokens: 25, OutputTokens: 20, CacheReadTokens: 100, CacheCreationTokens: 10},
		},
		{
			name: "anthropic message_delta with input counts",
			events: [][2]string{
				{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}`},
				{"message_delta", `{"type":"message_delta","usage":{"input_tokens":30,"cache_creation_input_tokens":null,"cache_read_input_tokens":7,"output_tokens":9}}`},
			},
			want: Usage{InputTokens: 30, OutputTokens: 9, CacheReadTokens: 7},
		},
		{
			name: "openai usage chunk",
			events: [][2]string{
				{"", `{"choices":[{"delta":{"content":"hi"}}],"usage":null}`},
				{"", `{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":34,"total_tokens":46,"prompt_tokens_details":{"cached_tokens":5,"audio_tokens":0}}}`},
				{"", `[DONE]`},
			},
			want: Usage{InputTokens: 12, OutputTokens: 34, CacheReadTokens: 5},
		},
		{
			name: "untyped anthropic payloads",
			events: [][2]string{
				{"", `{"type":"message_start","message":{"usage":{"input_tokens":4,"output_tokens":1}}}`},
				{"message", `{"type":"message_delta","usage":{"output_tokens":8}}`},
			},
			want: Usage{InputTokens: 4, OutputTokens: 8},
		},
		{
			name: "malformed counts ignored",
			events: [][2]string{
				{"message_delta", `{"usage":{"output_tokens":"12","input_tokens":1.5,"cache_read_input_tokens":99999999999999999999}}`},
				{"message_delta", `{"usage":{"output_tokens":`},
				{"ping", `{"usage":{"output_tokens":3}}`},
			},
			want: Usage{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var u Usage
			for _, e := range tt.events {
				u.Add(&Event{Type: e[0], Data: []byte(e[1]), Retry: -1})
			}
			if u != tt.want {
				t.Fatalf("got %+v, want %+v", u, tt.want)
			}
		})
	}
}

func TestUsageAddReportsFound(t *testing.T) {
	t.Parallel()
	var u Usage
	if u.Add(&Event{Type: "content_block_delta", Data: []byte(aDelta)}) {
		t.Error("content delta reported usage")
	}
	if u.Add(&Event{Data: []byte(`{"usage":null}`)}) {
		t.Error("null usage reported")
	}
	if !u.Add(&Event{Type: "message_delta", Data: []byte(`{"usage":{"output_tokens":0}}`)}) {
		t.Error("zero output_tokens not reported")
	}
}
