package repair

import (
	"cmp"
	"slices"
)

// BlockRef names one content block: messages[Message].content[Content],
// indexes as in the request body (and in the API's error messages).
type BlockRef struct {
	Message, Content int
}

// Selector chooses the thinking blocks StripThinking removes. The zero
// Selector chooses none.
type Selector struct {
	all  bool
	refs []BlockRef // sorted, without duplicates
}

// SelectAll chooses every thinking and redacted_thinking block of every
// assistant message.
func SelectAll() Selector { return Selector{all: true} }

// SelectBlocks chooses the named blocks (those of them that are thinking or
// redacted_thinking blocks of assistant messages). It keeps its own copy of
// refs.
func SelectBlocks(refs ...BlockRef) Selector {
	if len(refs) == 0 {
		return Selector{}
	}
	r := slices.Clone(refs)
	slices.SortFunc(r, compareRefs)
	return Selector{refs: slices.Compact(r)}
}

func compareRefs(a, b BlockRef) int {
	if c := cmp.Compare(a.Message, b.Message); c != 0 {
		return c
	}
	return cmp.Compare(a.Content, b.Content)
}

// Empty reports whether s chooses nothing.
func (s Selector) Empty() bool { return !s.all && len(s.refs) == 0 }

// All reports whether s chooses every thinking block.
func (s Selector) All() bool { return s.all }

// Blocks returns the blocks s names (nil for SelectAll). The slice is
// shared: do not modify it.
func (s Selector) Blocks() []BlockRef { return s.refs }

// Selects reports whether s chooses the block at (message, content),
// provided that block is a thinking block of an assistant message.
func (s Selector) Selects(message, content int) bool {
	if s.all {
		return true
	}
	_, found := slices.BinarySearchFunc(s.refs, BlockRef{message, content}, compareRefs)
	return found
}

// Union chooses what s or o chooses.
func (s Selector) Union(o Selector) Selector {
	if s.all || o.all {
		return SelectAll()
	}
	return SelectBlocks(append(slices.Clone(s.refs), o.refs...)...)
}

// StripThinking removes the thinking and redacted_thinking blocks that
// which selects from assistant messages, and returns the new body and the
// number of blocks removed. Blocks of other types, and blocks in messages
// whose role is not "assistant", are never removed, whatever which names.
//
// An assistant message that loses every block of its content is removed
// too: the API refuses an empty content array in any message but a final
// assistant one. Removing it may leave two user messages next to each
// other. That is left as it is: the Messages API combines consecutive
// turns of the same role into one, and the removed message held nothing
// but thinking, which the API does not use from earlier turns anyway (and
// a tool_result of the next user turn cannot refer to it, as it had no
// tool_use). Removing the only message leaves "messages": [], which the API
// refuses with a 400 of its own.
//
// A caveat for the proxy: with thinking enabled, the API wants the final
// assistant message of a tool-use loop to start with a thinking block. If
// the stripped block was that one, the retry fails with a message
// ParseRefusal reports as RefusalThinkingRequired; retrying with the
// "thinking" field dropped (DropFields) is the remaining repair.
//
// Indexes in which refer to body as passed in (as those of an error
// message or of Foreign do); removing a message shifts the indexes of the
// ones after it in the result.
//
// When which is empty, or nothing it names is there, body itself is
// returned and nothing is allocated.
func StripThinking(body []byte, which Selector) ([]byte, int, error) {
	if which.Empty() {
		return body, 0, nil
	}
	w := newWalker(body, modeStrip)
	w.sel = which
	if err := w.run(); err != nil {
		return body, 0, err
	}
	return w.sp.finish(), w.removed, nil
}

// ThinkingSignature is the signature of one thinking block of an assistant
// message. For a redacted_thinking block it is the block's "data", which is
// just as bound to the provider that produced it.
type ThinkingSignature struct {
	Message, Content int
	Redacted         bool   // a redacted_thinking block
	Signature        []byte // unescaped; aliases the body unless it held escapes
}

// Ref returns the block the signature belongs to.
func (t ThinkingSignature) Ref() BlockRef { return BlockRef{t.Message, t.Content} }

// ThinkingSignatures returns the signatures of the thinking and
// redacted_thinking blocks of the assistant messages, in body order, so a
// proxy can remember which provider signed which (see SignatureBook).
// Blocks without a signature are left out.
func ThinkingSignatures(body []byte) ([]ThinkingSignature, error) {
	w := newWalker(body, modeSignatures)
	if err := w.run(); err != nil {
		return nil, err
	}
	return w.sigs, nil
}
