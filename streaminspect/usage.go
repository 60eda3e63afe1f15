package streaminspect

import "github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"

// Usage is the token usage a stream reports, as the provider counts it.
// Counts are not normalized across providers: OpenAI's prompt_tokens
// include cached tokens, while Anthropic's input_tokens exclude cache reads
// and writes (reported separately).
type Usage struct {
	InputTokens         int64 // Anthropic input_tokens, OpenAI prompt_tokens
	OutputTokens        int64 // Anthropic output_tokens, OpenAI completion_tokens
	CacheReadTokens     int64 // Anthropic cache_read_input_tokens, OpenAI prompt_tokens_details.cached_tokens
	CacheCreationTokens int64 // Anthropic cache_creation_input_tokens
}

// Add folds the usage reported by ev into u and reports whether ev carried
// any. It understands Anthropic message_start (message.usage) and
// message_delta (usage), and untyped OpenAI chunks with a "usage" object.
//
// Providers report running totals for the stream, not increments: the
// output_tokens of message_delta is cumulative and supersedes the one of
// message_start. So each count present in ev REPLACES the previous value
// and counts absent from ev are kept. Summing several streams (retries,
// failover attempts) is up to the caller.
//
// Other event types are rejected by their type alone, without looking at
// the data, so Add is cheap to call on every event.
func (u *Usage) Add(ev *Event) bool {
	switch ev.Type {
	case "message_start":
		return u.addObject(jsonscan.Lookup(jsonscan.Lookup(ev.Data, "message"), "usage"))
	case "message_delta":
		return u.addObject(jsonscan.Lookup(ev.Data, "usage"))
	case "", "message":
		return u.addUntyped(ev.Data)
	}
	return false
}

// addUntyped handles OpenAI chunks, and Anthropic payloads whose event line
// was lost, told apart by their "type" member.
func (u *Usage) addUntyped(data []byte) bool {
	var typ, usage, msg []byte
	var kb [32]byte
	it := jsonscan.Object(data)
	for it.Next() {
		m := &it.Member
		switch string(m.Name(kb[:0])) {
		case "type":
			typ = m.Value
		case "usage":
			usage = m.Value
		case "message":
			msg = m.Value
		}
	}
	if string(typ) == `"message_start"` {
		return u.addObject(jsonscan.Lookup(msg, "usage"))
	}
	return u.addObject(usage)
}

// addObject reads a usage object. Both providers' key names are accepted
// (plus the OpenAI Responses API's input_tokens_details), since they never
// collide.
func (u *Usage) addObject(raw []byte) bool {
	found := false
	set := func(dst *int64, v []byte) {
		if n, ok := jsonscan.Int(v); ok {
			*dst = n
			found = true
		}
	}
	var kb [32]byte
	it := jsonscan.Object(raw)
	for it.Next() {
		m := &it.Member
		v := m.Value
		switch string(m.Name(kb[:0])) {
		case "input_tokens", "prompt_tokens":
			set(&u.InputTokens, v)
		case "output_tokens", "completion_tokens":
			set(&u.OutputTokens, v)
		case "cache_read_input_tokens":
			set(&u.CacheReadTokens, v)
		case "cache_creation_input_tokens":
			set(&u.CacheCreationTokens, v)
		case "prompt_tokens_details", "input_tokens_details":
			set(&u.CacheReadTokens, jsonscan.Lookup(v, "cached_tokens"))
		}
	}
	return found
}

// UsageOf reads a usage object outside a stream, such as the "usage" of a
// non-streaming answer, in either provider's key names. ok is false when
// it holds no count.
func UsageOf(raw []byte) (u Usage, ok bool) {
	ok = u.addObject(raw)
	return u, ok
}
