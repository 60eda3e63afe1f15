package failover

import (
	"bytes"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
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
	// Anthropic's or OpenAI's key names, read in place: this runs on every
	// non-streaming answer
	return streaminspect.UsageOf(tail[start:end])
}

// maxUsageBody bounds how much of a non-streaming success is kept to read
// its usage; a larger body goes uncounted rather than held.
const maxUsageBody = 256 << 10

// keepForUsage keeps what the usage reader needs of a committed JSON
// body: its last usageTail bytes (usage comes last in Anthropic's and
// OpenAI's responses), or, when compressed, the whole body up to
// maxUsageBody, since a compressed tail cannot be decoded alone.
func (g *gate) keepForUsage(p []byte) {
	b := g.usageBody
	if g.header.Get("Content-Encoding") != "" {
		if b.Len()+len(p) > maxUsageBody {
			releaseHeld(g.usageBody)
			g.usageBody = nil
			return
		}
		b.Write(p)
		return
	}
	if len(p) >= usageTail {
		b.Reset()
		b.Write(p[len(p)-usageTail:])
		return
	}
	if over := b.Len() + len(p) - usageTail; over > 0 {
		kept := b.Bytes()[over:]
		b.Reset()
		b.Write(kept) // shifts within the same array: copy handles overlap
	}
	b.Write(p)
}

func (g *gate) releaseUsageLocked() {
	releaseHeld(g.usageBody)
	g.usageBody = nil
}

// usage returns the token usage of a committed response: from the stream's
// message_start/message_delta events, or the JSON body's usage object.
func (g *gate) usage() (streaminspect.Usage, bool) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.isStream {
		u := g.watch.Usage()
		return u, u != (streaminspect.Usage{})
	}
	if g.usageBody == nil {
		return streaminspect.Usage{}, false
	}
	defer g.releaseUsageLocked()
	body := g.usageBody.Bytes()
	if enc := g.header.Get("Content-Encoding"); enc != "" {
		var err error
		if body, err = classify.DecodeBody(enc, body, maxUsageBody); err != nil {
			return streaminspect.Usage{}, false
		}
	}
	return usageFromTail(body)
}
