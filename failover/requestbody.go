package failover

import (
	"bytes"
	"encoding/json"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
)

// requestFields are the few top-level keys of a Messages request the proxy
// needs. Reading them must not cost a JSON decode of a multi-MB body.
type requestFields struct {
	Model string
	// modelStart and modelEnd bound the model value in the body, quotes
	// included, so a provider's mapping replaces exactly those bytes.
	modelStart, modelEnd int
}

// scanRequest reads "model" from the top level of a JSON object without
// decoding the rest. It reads to the end of the object: a key given twice
// counts as JSON decoders read it, the last one wins, so a model mapping
// cannot be sidestepped with a second "model"; a key spelled with escapes
// ("mod\u0065l") is the same key. A body that is not a JSON object yields
// zero fields: such a request is proxied as it is.
func scanRequest(body []byte) requestFields {
	var f requestFields
	it := jsonscan.Object(body)
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		if m.KeyIs("model") {
			f = modelField(m)
		}
	}
	return f
}

// modelField reads a "model" member. A value that is not a valid JSON
// string (a Go escape, a raw control character) names no model, so an
// invalid body is never made valid by a mapping.
func modelField(m jsonscan.Member) requestFields {
	if m.Value[0] == '"' {
		if model, ok := jsonscan.Unquote(m.Value); ok {
			return requestFields{Model: model, modelStart: m.Start, modelEnd: m.Start + len(m.Value)}
		}
	}
	return requestFields{}
}

// withModel returns body with the model value replaced by model: only
// those bytes change, the rest stays byte-identical (no re-encoding).
func withModel(body []byte, f requestFields, model string) []byte {
	if f.modelEnd == 0 || model == f.Model {
		return body
	}
	quoted, _ := json.Marshal(model) // a string never fails to marshal
	out := make([]byte, 0, len(body)-(f.modelEnd-f.modelStart)+len(quoted))
	out = append(out, body[:f.modelStart]...)
	out = append(out, quoted...)
	return append(out, body[f.modelEnd:]...)
}

// requestModel reads the top-level "model" that upstream JSON decoders
// read: the last one, however its key is spelled. It stops at the first
// one and keeps it when the rest of the body cannot hold another such key
// (no "model" and no \u escape of one of its letters), which is every
// ordinary request: Claude Code sends model first. Otherwise it scans
// the whole object.
func requestModel(body []byte) requestFields {
	f, end, found := peekModel(body)
	if !found || !mayHoldModelKey(body[end:]) {
		return f
	}
	return scanRequest(body)
}

// mayHoldModelKey reports whether b may contain a key spelled "model":
// the plain key, or one with a letter written as a \u escape (m, o, d, e
// and l are all \u006X). Both are vectorized searches: a few tens of
// microseconds for a 200KB body, against a full scan's hundreds.
func mayHoldModelKey(b []byte) bool {
	// searched as model": a quote first is found everywhere in JSON,
	// which makes the search twice as slow
	for rest := b; ; {
		i := bytes.Index(rest, []byte(`model"`))
		if i < 0 {
			break
		}
		if i > 0 && rest[i-1] == '"' {
			return true
		}
		rest = rest[i+len(`model"`):]
	}
	// searched as u006: a backslash first is much slower to find in
	// bodies full of \n and \"
	for {
		i := bytes.Index(b, []byte("u006"))
		if i < 0 || i+4 >= len(b) {
			return false
		}
		if i > 0 && b[i-1] == '\\' {
			switch b[i+4] {
			case 'd', 'D', 'f', 'F', '4', '5', 'c', 'C': // m o d e l
				return true
			}
		}
		b = b[i+4:]
	}
}

// peekModel reads the first top-level "model" key (plain or escaped) and
// stops there, returning where its value ends. found is false when the
// body has no such key (the whole top level was read) or is not an
// object.
func peekModel(body []byte) (f requestFields, end int, found bool) {
	it := jsonscan.Object(body)
	for m, ok := it.Next(); ok; m, ok = it.Next() {
		if m.KeyIs("model") {
			return modelField(m), m.Start + len(m.Value), true
		}
	}
	return f, 0, false
}
