package failover

import (
	"bytes"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// usageTail is how much of the end of an uncompressed JSON success is kept
// to read its usage from.
const usageTail = 8 << 10

// usageFromTail reads the last "usage" object in the end of a response
// body. An unescaped `"usage":` can only be a key (a quote inside a JSON
// string is escaped), and the top-level usage comes last.
func usageFromTail(tail []byte) (streaminspect.Usage, bool) {
	i := bytes.LastIndex(tail, []byte(`"usage"`))
	for i > 0 && tail[i-1] == '\\' {
		i = bytes.LastIndex(tail[:i], []byte(`"usage"`))
	}
	if i < 0 {
		return streaminspect.Usage{}, false
	}
	i = jsonscan.SkipSpace(tail, i+len(`"usage"`))
	if i >= len(tail) || tail[i] != ':' {
		return streaminspect.Usage{}, false
	}
	start := jsonscan.SkipSpace(tail, i+1)
	end := jsonscan.SkipValue(tail, start)
	if end < 0 {
		return streaminspect.Usage{}, false
	}
	return decodeUsage(tail[start:end])
}

// maxUsageBody bounds how much of a non-streaming success is kept to read
// its usage; a larger body goes uncounted rather than held.
const maxUsageBody = 256 << 10

// decodeUsage reads a usage object, in Anthropic's form (input_tokens,
// output_tokens, cache_read_input_tokens, cache_creation_input_tokens) or
// OpenAI's (prompt_tokens, completion_tokens,
// prompt_tokens_details.cached_tokens), without decoding it into a value:
// this runs on every non-streaming answer.
func decodeUsage(raw []byte) (streaminspect.Usage, bool) {
	if len(raw) == 0 || raw[0] != '{' {
		return streaminspect.Usage{}, false
	}
	return streaminspect.UsageOf(raw)
}
