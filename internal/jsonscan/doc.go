// Package jsonscan reads JSON in place, without decoding it into Go values:
// the proxy needs a few keys out of request bodies of many megabytes and out
// of every streamed event, and must edit bodies byte for byte.
//
// It has two ways of reading, with one set of rules for strings, escapes and
// keys:
//
//   - Lenient (SkipValue, Members, Elements, Lookup): skips values by their
//     structure only, as fast as the bytes can be searched, and validates
//     nothing it skips. Malformed input reads as "not found" or ends the
//     iteration early; it never panics and never reads past the slice.
//   - Strict (Scanner): validates everything it walks, exactly as
//     encoding/json does, and reports the first error with its byte offset.
//
// Keys are compared after unescaping (KeyIs), so "mod\u0065l" is "model",
// as every JSON decoder reads it. Nothing on the happy path allocates.
package jsonscan
