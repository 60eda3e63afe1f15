package streaminspect

import (
	"fmt"
	"strings"
	"testing"
)

// anthropicBenchStream returns a realistic 50-event Anthropic stream:
// message_start, ping, content_block_start, 44 text deltas,
// content_block_stop, message_delta, message_stop; and the chunks an
// upstream typically flushes it in (one event each).
func anthropicBenchStream() (whole []byte, chunks [][]byte) {
	events := []string{
		sse("message_start", `{"type":"message_start","message":{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5-20250929","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0},"output_tokens":1,"service_tier":"standard"}}}`),
		sse("ping", `{"type": "ping"}`),
		sse("content_block_start", `{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`),
	}
	words := strings.Fields("The quick brown fox jumps over the lazy dog while the proxy watches every byte of the stream go by, counting tokens and waiting for the end of the message, which should arrive shortly after these words \"quoted\" and a newline\\n.")
	for i := 0; i < 44; i++ {
		events = append(events, sse("content_block_delta", fmt.Sprintf(`{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" %s"}}`, words[i%len(words)])))
	}
	events = append(events,
		sse("content_block_stop", `{"type":"content_block_stop","index":0}`),
		sse("message_delta", `{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"input_tokens":472,"cache_creation_input_tokens":0,"cache_read_input_tokens":2048,"output_tokens":57}}`),
		sse("message_stop", `{"type":"message_stop"}`),
	)
	for _, e := range events {
		chunks = append(chunks, []byte(e))
		whole = append(whole, e...)
	}
	return whole, chunks
}

func openAIBenchStream() (whole []byte, chunks [][]byte) {
	events := []string{sse("", `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}`)}
	for i := 0; i < 46; i++ {
		events = append(events, sse("", fmt.Sprintf(`{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{"content":" word%d"},"logprobs":null,"finish_reason":null}],"usage":null}`, i)))
	}
	events = append(events,
		sse("", `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}`),
		sse("", `{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","service_tier":"default","system_fingerprint":"fp_eb9dce56a8","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":47,"total_tokens":66,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}`),
		"data: [DONE]\n\n",
	)
	for _, e := range events {
		chunks = append(chunks, []byte(e))
		whole = append(whole, e...)
	}
	return whole, chunks
}

// benchChunkings feeds a stream one event per chunk (how upstreams flush)
// and in 4 KiB reads (how a busy proxy reads).
func benchChunkings(whole []byte, perEvent [][]byte) map[string][][]byte {
	var reads [][]byte
	for i := 0; i < len(whole); i += 4096 {
		reads = append(reads, whole[i:min(i+4096, len(whole))])
	}
	return map[string][][]byte{"per-event": perEvent, "4KiB": reads}
}

func BenchmarkParser(b *testing.B) {
	whole, perEvent := anthropicBenchStream()
	for _, name := range []string{"per-event", "4KiB"} {
		chunks := benchChunkings(whole, perEvent)[name]
		b.Run(name, func(b *testing.B) {
			var p Parser
			n := 0
			fn := func(ev *Event) bool { n++; return true }
			b.SetBytes(int64(len(whole)))
			b.ReportAllocs()
			for b.Loop() {
				p.Reset()
				for _, c := range chunks {
					p.Feed(c, fn)
				}
			}
			if n%50 != 0 {
				b.Fatalf("%d events", n)
			}
		})
	}
}

func BenchmarkWatcher(b *testing.B) {
	for _, stream := range []struct {
		name string
		gen  func() ([]byte, [][]byte)
		want Usage
	}{
		{"anthropic", anthropicBenchStream, Usage{InputTokens: 472, OutputTokens: 57, CacheReadTokens: 2048}},
		{"openai", openAIBenchStream, Usage{InputTokens: 19, OutputTokens: 47}},
	} {
		whole, perEvent := stream.gen()
		for _, name := range []string{"per-event", "4KiB"} {
			chunks := benchChunkings(whole, perEvent)[name]
			b.Run(stream.name+"/"+name, func(b *testing.B) {
				var w Watcher
				b.SetBytes(int64(len(whole)))
				b.ReportAllocs()
				for b.Loop() {
					w.Reset()
					for _, c := range chunks {
						w.Feed(c)
					}
				}
				if !w.Terminal() || w.events != 50 || w.Usage() != stream.want {
					b.Fatalf("terminal %v events %d usage %+v", w.Terminal(), w.events, w.Usage())
				}
			})
		}
	}
}

// BenchmarkInspector measures a hold until the first content event.
func BenchmarkInspector(b *testing.B) {
	for _, stream := range []struct {
		name string
		gen  func() ([]byte, [][]byte)
	}{{"anthropic", anthropicBenchStream}, {"openai", openAIBenchStream}} {
		_, perEvent := stream.gen()
		b.Run(stream.name, func(b *testing.B) {
			var in Inspector
			b.ReportAllocs()
			for b.Loop() {
				in.Reset()
				for _, c := range perEvent {
					if in.Feed(c) != Pending {
						break
					}
				}
			}
			if in.State() != Content {
				b.Fatalf("state %v", in.State())
			}
		})
	}
}
