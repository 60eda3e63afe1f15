package failover

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"sync/atomic"

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
	for it.Next() {
		m := &it.Member
		if m.KeyIs("model") {
			f = modelField(m)
		}
	}
	return f
}

// modelField reads a "model" member. A value that is not a valid JSON
// string (a Go escape, a raw control character) names no model, so an
// invalid body is never made valid by a mapping.
func modelField(m *jsonscan.Member) requestFields {
	v := m.Value
	if v[0] != '"' || len(v) < 2 {
		return requestFields{}
	}
	model, ok := "", true
	if jsonscan.Plain(v[1 : len(v)-1]) {
		model = modelName(v[1 : len(v)-1])
	} else if model, ok = jsonscan.Unquote(v); !ok {
		return requestFields{}
	}
	return requestFields{Model: model, modelStart: m.Start, modelEnd: m.Start + len(v)}
}

// modelNames holds the model names read lately, so that reading one again
// allocates nothing: clients name the same few models request after
// request. A slot is picked by hash; a new name replaces the one there.
var (
	modelNames    [8]atomic.Pointer[string]
	modelNameSeed = maphash.MakeSeed()
)

// maxModelName bounds the names modelNames keeps.
const maxModelName = 128

// modelName returns raw as a string, from modelNames when it is there.
func modelName(raw []byte) string {
	if len(raw) > maxModelName {
		return string(raw)
	}
	slot := &modelNames[maphash.Bytes(modelNameSeed, raw)%uint64(len(modelNames))]
	if p := slot.Load(); p != nil && *p == string(raw) {
		return *p
	}
	name := string(raw)
	slot.Store(&name)
	return name
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
// and l are all \u006X). Both are vectorized searches, a few tens of
// microseconds for a 200KB body.
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
	return hasLetterEscape(b)
}

// hasLetterEscape reports whether b holds \u006X for one of the letters of
// "model". It jumps from '6' to '6' with bytes.IndexByte: a rare byte in
// prose and code, where 'u' and backslashes are everywhere.
func hasLetterEscape(b []byte) bool {
	for i := 4; i < len(b)-1; i++ {
		j := bytes.IndexByte(b[i:len(b)-1], '6')
		if j < 0 {
			return false
		}
		i += j
		if string(b[i-4:i]) == `\u00` {
			switch b[i+1] {
			case 'd', 'D', 'f', 'F', '4', '5', 'c', 'C': // m o d e l
				return true
			}
		}
	}
	return false
}

// peekModel reads the first top-level "model" key (plain or escaped) and
// stops there, returning where its value ends. found is false when the
// body has no such key (the whole top level was read) or is not an
// object.
func peekModel(body []byte) (f requestFields, end int, found bool) {
	it := jsonscan.Object(body)
	for it.Next() {
		m := &it.Member
		if m.KeyIs("model") {
			return modelField(m), m.Start + len(m.Value), true
		}
	}
	return f, 0, false
}
