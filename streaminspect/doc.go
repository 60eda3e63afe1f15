// Package streaminspect reads LLM streaming responses (Server-Sent Events)
// as they pass through the failover proxy.
//
// A proxy that fails a request over to another provider can only do so
// while nothing has been sent to the client yet. This package answers the
// two questions the proxy asks of a streamed body:
//
//   - While the response is held back: has the upstream really started
//     (first content), failed (an error event such as Anthropic's
//     overloaded_error sent with a 200 status), or ended without content?
//     See [Inspector].
//   - After the response was committed to the client: did the stream end
//     properly, did it carry an error, and how many tokens did it use?
//     See [Watcher].
//
// Both are built on [Parser], an incremental, allocation-conscious parser
// of the WHATWG event-stream format, and understand the Anthropic Messages
// and OpenAI Chat Completions streaming formats.
//
// The package only reads bytes it is given: it never writes to the client
// and never blocks. Feed it decoded (uncompressed) bytes. Nothing here is
// safe for concurrent use; each response gets its own values, which are
// meant to be reused via Reset.
package streaminspect
