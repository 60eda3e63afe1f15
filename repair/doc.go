// Package repair edits an Anthropic Messages API request body so that a
// provider accepts history another provider produced.
//
// After a failover, the next turn of a conversation carries content the
// previous provider minted: tool ids such as "functions.Bash:0" that fail
// Anthropic's pattern ^[a-zA-Z0-9_-]+$, thinking blocks whose signature only
// the signing provider can verify, top-level fields, anthropic-beta values or
// query parameters one provider knows and another refuses. The functions here
// rewrite exactly the bytes that must change and copy everything else
// verbatim:
//
//   - SanitizeToolIDs rewrites tool ids outside the pattern, deterministically.
//   - StripThinking removes thinking and redacted_thinking blocks chosen by a
//     Selector (all of them, the ones an error message names, or the ones a
//     SignatureBook knows another provider signed).
//   - DropFields removes top-level keys.
//   - ThinkingSignatures lists the signatures of assistant thinking blocks.
//   - ParseRefusal reads a 400 error message and says which repair it asks for.
//   - DropBetas and DropQuery edit the anthropic-beta header and the query.
//
// # Why byte offsets
//
// The body is never decoded into Go values and re-encoded. Thinking
// signatures are checked byte for byte, prompt caching keys on the exact
// prefix, and encoding/json would escape <, > and & and reorder keys. The
// strict scanner of internal/jsonscan walks the top-level object, the
// "messages" array, each message's "role" and "content", and each content
// block's "type", "id", "tool_use_id", "signature" and "data" values,
// recording byte spans; the edits are then spliced into one new buffer. The scanner validates the JSON
// it walks (strings, escapes, numbers, literals, nesting up to 10000 levels,
// as encoding/json does), so a malformed body yields a *SyntaxError instead
// of a half-edited one. Keys and values are compared after JSON unescaping,
// so "mess\u0061ges" is "messages".
//
// Every function returns its input slice itself, without allocating, when
// there is nothing to change; callers can test that with the returned count.
// The returned body never aliases the input when something changed.
//
// This package has no Caddy dependency and uses the standard library only.
package repair
