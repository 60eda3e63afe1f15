package failover

import (
	"strings"
	"testing"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

func TestUsageFromTail(t *testing.T) {
	long := strings.Repeat(`lorem \"usage\": {\"input_tokens\": 999} `, 400)
	tests := []struct {
		name string
		body string
		want streaminspect.Usage
		ok   bool
	}{
		{"anthropic", `{"id":"m","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":12,"output_tokens":7,"cache_read_input_tokens":3,"cache_creation_input_tokens":4}}`,
			streaminspect.Usage{InputTokens: 12, OutputTokens: 7, CacheReadTokens: 3, CacheCreationTokens: 4}, true},
		{"openai, usage before another key", `{"choices":[],"usage":{"prompt_tokens":20,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":8}},"system_fingerprint":"x"}`,
			streaminspect.Usage{InputTokens: 20, OutputTokens: 5, CacheReadTokens: 8}, true},
		{"usage quoted inside the text is not read", `{"content":[{"type":"text","text":"` + long + `"}],"usage":{"input_tokens":1,"output_tokens":2}}`,
			streaminspect.Usage{InputTokens: 1, OutputTokens: 2}, true},
		{"no usage", `{"content":[{"type":"text","text":"the \"usage\": field"}]}`, streaminspect.Usage{}, false},
		{"cut usage", `{"usage":{"input_tokens":1,`, streaminspect.Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := tt.body
			if len(body) > usageTail {
				body = body[len(body)-usageTail:] // what the gate keeps
			}
			got, ok := usageFromTail([]byte(body))
			if ok != tt.ok || got != tt.want {
				t.Fatalf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}
