package repair

import (
	"strconv"
	"strings"
)

// RefusalKind is the repair a provider's 400 asks for.
type RefusalKind uint8

const (
	// RefusalNone: the message names nothing this package can repair.
	RefusalNone RefusalKind = iota
	// RefusalToolIDs: a tool id fails ^[a-zA-Z0-9_-]+$. Repair: SanitizeToolIDs.
	RefusalToolIDs
	// RefusalThinking: a thinking block's signature (or a redacted_thinking
	// block's data) was refused or is missing. Repair:
	// StripThinking(body, r.Selector()), best joined with SignatureBook.Foreign.
	RefusalThinking
	// RefusalThinkingRequired: thinking is on and the final assistant
	// message of a tool-use loop does not start with a thinking block (the
	// usual outcome of stripping a foreign one there). Repair:
	// DropFields(body, []string{"thinking"}), turning thinking off for this
	// request.
	RefusalThinkingRequired
	// RefusalBetas: anthropic-beta values the provider does not know, in
	// Names. Repair: DropBetas(header, r.Names).
	RefusalBetas
	// RefusalFields: top-level request fields the provider does not accept,
	// in Names. Repair: DropFields(body, r.Names).
	RefusalFields
)

var kindNames = [...]string{"none", "tool_ids", "thinking", "thinking_required", "betas", "fields"}

func (k RefusalKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "RefusalKind(" + strconv.Itoa(int(k)) + ")"
}

// Refusal is what ParseRefusal read from an error message.
type Refusal struct {
	Kind RefusalKind
	// Blocks are the content blocks the message names
	// ("messages.3.content.0: ..."), in the order named, without repeats;
	// empty when it names none. Informational for RefusalToolIDs (the
	// repair rewrites every bad id anyway).
	Blocks []BlockRef
	// Names are the anthropic-beta values (RefusalBetas) or top-level keys
	// (RefusalFields) refused.
	Names []string
}

// Selector returns the thinking blocks to strip for a RefusalThinking: the
// blocks the message names, or every thinking block when it names none.
// The API names the first refused block only; a body with several foreign
// blocks needs them all gone in one retry, so a proxy should join this with
// SignatureBook.Foreign. For any other kind it selects nothing.
func (r Refusal) Selector() Selector {
	if r.Kind != RefusalThinking {
		return Selector{}
	}
	if len(r.Blocks) == 0 {
		return SelectAll()
	}
	return SelectBlocks(r.Blocks...)
}

// ParseRefusal reads the message of a 400 error (error.message of an
// Anthropic-format error body; a whole error body works too) and says what
// repair it asks for. It recognises, case-insensitively:
//
//	messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'
//	messages.2.content.0.tool_result.tool_use_id: String should match pattern ...
//	messages.3.content.0: Invalid `signature` in `thinking` block
//	messages.3.content.0.thinking.signature: Field required
//	messages.1.content.0.type: Expected `thinking` or `redacted_thinking`, but found `tool_use`. When `thinking` is enabled, a final `assistant` message must start with a thinking block ...
//	Unexpected value(s) `foo-2025-01-01` for the `anthropic-beta` header. ...
//	context_management: Extra inputs are not permitted
//
// Anything else is RefusalNone: the proxy passes the error to the client.
func ParseRefusal(message string) Refusal {
	lower := asciiLower(message) // same length: indexes into lower fit message
	switch {
	case strings.Contains(lower, "should match pattern") &&
		(strings.Contains(lower, "tool_use.id") || strings.Contains(lower, "tool_use_id")):
		return Refusal{Kind: RefusalToolIDs, Blocks: blockRefs(lower)}
	case strings.Contains(lower, "must start with a thinking block") ||
		strings.Contains(lower, "expected `thinking` or `redacted_thinking`"):
		return Refusal{Kind: RefusalThinkingRequired, Blocks: blockRefs(lower)}
	case strings.Contains(lower, "signature") && strings.Contains(lower, "thinking") ||
		strings.Contains(lower, "invalid") && strings.Contains(lower, "redacted_thinking"):
		return Refusal{Kind: RefusalThinking, Blocks: blockRefs(lower)}
	case strings.Contains(lower, "anthropic-beta") && strings.Contains(lower, "unexpected value"):
		if names := betaNames(message, lower); len(names) > 0 {
			return Refusal{Kind: RefusalBetas, Names: names}
		}
	case strings.Contains(lower, "extra inputs are not permitted"):
		if names := extraFields(message, lower); len(names) > 0 {
			return Refusal{Kind: RefusalFields, Names: names}
		}
	}
	return Refusal{}
}

// blockRefs finds every "messages.N.content.M" in s, in order, without
// repeats.
func blockRefs(s string) []BlockRef {
	var refs []BlockRef
	for rest := s; ; {
		i := strings.Index(rest, "messages.")
		if i < 0 {
			return refs
		}
		rest = rest[i+len("messages."):]
		m, after, ok := leadingInt(rest)
		if !ok || !strings.HasPrefix(after, ".content.") {
			continue
		}
		c, _, ok := leadingInt(after[len(".content."):])
		if !ok {
			continue
		}
		ref := BlockRef{m, c}
		dup := false
		for _, r := range refs {
			dup = dup || r == ref
		}
		if !dup {
			refs = append(refs, ref)
		}
	}
}

// leadingInt reads the decimal number s starts with.
func leadingInt(s string) (int, string, bool) {
	n := 0
	for n < len(s) && n < 9 && s[n] >= '0' && s[n] <= '9' {
		n++
	}
	if n == 0 {
		return 0, s, false
	}
	v, err := strconv.Atoi(s[:n])
	return v, s[n:], err == nil
}

// betaNames reads the backquoted values of "Unexpected value(s) `a`, `b`
// for the `anthropic-beta` header".
func betaNames(message, lower string) []string {
	i := strings.Index(lower, "unexpected value")
	j := strings.Index(lower, "for the `anthropic-beta` header")
	if i < 0 || j < i {
		return nil
	}
	var names []string
	seg := message[i:j]
	for {
		a := strings.IndexByte(seg, '`')
		if a < 0 {
			return names
		}
		b := strings.IndexByte(seg[a+1:], '`')
		if b < 0 {
			return names
		}
		if v := strings.TrimSpace(seg[a+1 : a+1+b]); v != "" {
			names = append(names, v)
		}
		seg = seg[a+1+b+1:]
	}
}

// extraFields reads the keys of "<key>: Extra inputs are not permitted"
// that are top-level (no dotted path).
func extraFields(message, lower string) []string {
	const phrase = ": extra inputs are not permitted"
	var names []string
	for off := 0; ; {
		i := strings.Index(lower[off:], phrase)
		if i < 0 {
			return names
		}
		end := off + i
		start := end
		for start > 0 && isKeyByte(message[start-1]) {
			start--
		}
		if key := message[start:end]; key != "" && (start == 0 || message[start-1] != '.') {
			names = append(names, key)
		}
		off = end + len(phrase)
	}
}

func isKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// asciiLower lowers A-Z only, so the result has the length of s even when
// s is not UTF-8 (strings.ToLower would replace such bytes).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
