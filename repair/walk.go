package repair

import (
	"bytes"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
)

// mode says what a walk over the messages does with each content block.
type mode uint8

const (
	modeFindBadID  mode = iota // stop at the first tool id outside the pattern
	modeCollectIDs             // record every tool id
	modeStrip                  // delete selected thinking blocks
	modeSignatures             // record thinking signatures
)

// needsRole reports whether blocks are acted on only in assistant turns, so
// a content array that precedes "role" must wait for it.
func (m mode) needsRole() bool { return m == modeStrip || m == modeSignatures }

// block is what a walk records of one content block.
type block struct {
	typ, id, toolUseID, signature, data jsonscan.Span
}

// idRef is one tool id in the body.
type idRef struct {
	sp    jsonscan.Span
	valid bool
}

// walker walks the messages of a request body once, in order, acting on
// each content block according to mode. It lives on the caller's stack;
// only its result slices allocate.
type walker struct {
	s    jsonscan.Scanner
	mode mode
	stop bool // the walk found what it was looking for (modeFindBadID)

	ids []idRef // modeCollectIDs

	sel     Selector // modeStrip
	sp      splicer
	removed int

	sigs []ThinkingSignature // modeSignatures
}

func newWalker(body []byte, m mode) walker {
	return walker{s: jsonscan.Scanner{B: body}, mode: m, sp: splicer{src: body}}
}

// run walks the whole body. It returns the scanner's error, if any; after
// an early stop the rest of the body is not read.
func (w *walker) run() error {
	s := &w.s
	if s.Peek() != '{' {
		return &SyntaxError{Offset: s.I, Msg: "the body is not a JSON object"}
	}
	if s.Enter('{', '}') {
		for {
			k := s.Key()
			if k.Is(s.B, "messages") && s.Peek() == '[' {
				w.messages()
			} else {
				s.Value(1)
			}
			if w.stop {
				return nil
			}
			if !s.More('}') {
				break
			}
		}
	}
	s.End()
	return syntaxError(s.Err)
}

func (w *walker) messages() {
	s := &w.s
	var ed elementEditor
	edit := w.mode == modeStrip
	if !s.Enter('[', ']') {
		return
	}
	for idx := 0; ; idx++ {
		s.Space()
		start := s.I
		if edit {
			ed.begin(&w.sp, start)
		}
		m := w.sp.mark()
		del := w.message(idx)
		if s.Err != nil || w.stop {
			return
		}
		if edit {
			if del {
				w.sp.reset(m) // the whole message goes, its own edits with it
			}
			ed.end(&w.sp, start, s.I, del)
		}
		if !s.More(']') {
			break
		}
	}
	if edit {
		ed.close(&w.sp)
	}
}

// contentTally counts, over a message's content arrays, the blocks kept and
// removed, to decide whether the message itself must go.
type contentTally struct {
	kept, removed int
}

// message walks one message and reports whether it must be removed: an
// assistant message whose content array lost every block.
func (w *walker) message(idx int) bool {
	s := &w.s
	if s.Peek() != '{' {
		s.Value(2)
		return false
	}
	const (
		roleUnknown = iota
		roleAssistant
		roleOther
	)
	role := roleUnknown
	deferred := -1 // a content array met before "role", when the mode needs the role
	var tally contentTally
	if s.Enter('{', '}') {
		for {
			k := s.Key()
			switch {
			case k.Is(s.B, "role"):
				role = roleOther
				if s.Peek() == '"' {
					if s.Str().Is(s.B, "assistant") {
						role = roleAssistant
					}
				} else {
					s.Value(3)
				}
				if deferred >= 0 && s.Err == nil {
					// Walk the earlier content now that the role is known:
					// its edits still come before any later one.
					save := s.I
					s.I = deferred
					w.content(idx, role == roleAssistant, &tally)
					s.I = save
					deferred = -1
				}
			case k.Is(s.B, "content") && s.Peek() == '[':
				if role == roleUnknown && w.mode.needsRole() {
					deferred = s.I
					s.Value(3)
				} else {
					w.content(idx, role == roleAssistant, &tally)
				}
			default:
				s.Value(3)
			}
			if s.Err != nil || w.stop {
				return false
			}
			if !s.More('}') {
				break
			}
		}
	}
	// A content array with no role at all belongs to no assistant turn:
	// nothing to do with it.
	return tally.removed > 0 && tally.kept == 0
}

// content walks one content array at s.I.
func (w *walker) content(msg int, assistant bool, tally *contentTally) {
	s := &w.s
	strip := w.mode == modeStrip && assistant
	var ed elementEditor
	if !s.Enter('[', ']') {
		return
	}
	for idx := 0; ; idx++ {
		s.Space()
		start := s.I
		if strip {
			ed.begin(&w.sp, start)
		}
		var b block
		if s.Peek() == '{' {
			w.block(&b)
		} else {
			s.Value(4)
		}
		if s.Err != nil {
			return
		}
		del := false
		switch w.mode {
		case modeFindBadID, modeCollectIDs:
			w.toolIDs(&b)
			if w.stop {
				return
			}
		case modeStrip:
			if strip && isThinking(b.typ.Text(s.B)) && w.sel.Selects(msg, idx) {
				del = true
				w.removed++
			}
		case modeSignatures:
			if assistant {
				w.signature(&b, msg, idx)
			}
		}
		if strip {
			ed.end(&w.sp, start, s.I, del)
		}
		if del {
			tally.removed++
		} else {
			tally.kept++
		}
		if !s.More(']') {
			break
		}
	}
	if strip {
		ed.close(&w.sp)
	}
}

// block walks one content block object, recording the spans of the string
// values it may act on. A key given twice keeps its last value, as JSON
// decoders do.
func (w *walker) block(b *block) {
	s := &w.s
	if !s.Enter('{', '}') {
		return
	}
	for {
		k := s.Key()
		var dst *jsonscan.Span
		switch {
		case k.Is(s.B, "type"):
			dst = &b.typ
		case k.Is(s.B, "id"):
			dst = &b.id
		case k.Is(s.B, "tool_use_id"):
			dst = &b.toolUseID
		case k.Is(s.B, "signature"):
			dst = &b.signature
		case k.Is(s.B, "data"):
			dst = &b.data
		}
		if dst != nil && s.Peek() == '"' {
			*dst = s.Str()
		} else {
			if dst != nil {
				*dst = jsonscan.Span{}
			}
			s.Value(5)
		}
		if !s.More('}') {
			return
		}
	}
}

// toolIDs checks the tool id a block carries: "id" of a tool_use (or a
// server_tool_use, mcp_tool_use, ...), "tool_use_id" of a tool_result (or
// any *_tool_result).
func (w *walker) toolIDs(b *block) {
	if !b.typ.OK {
		return
	}
	typ := b.typ.Text(w.s.B)
	var sp jsonscan.Span
	switch {
	case isToolUse(typ):
		sp = b.id
	case isToolResult(typ):
		sp = b.toolUseID
	default:
		return
	}
	if !sp.OK {
		return
	}
	valid := validID(sp.Text(w.s.B))
	if w.mode == modeFindBadID {
		if !valid {
			w.stop = true
		}
		return
	}
	w.ids = append(w.ids, idRef{sp: sp, valid: valid})
}

func (w *walker) signature(b *block, msg, idx int) {
	if !b.typ.OK {
		return
	}
	var sp jsonscan.Span
	redacted := false
	switch typ := b.typ.Text(w.s.B); string(typ) {
	case "thinking":
		sp = b.signature
	case "redacted_thinking":
		sp, redacted = b.data, true
	default:
		return
	}
	if !sp.OK {
		return
	}
	w.sigs = append(w.sigs, ThinkingSignature{
		Message: msg, Content: idx, Redacted: redacted, Signature: sp.Text(w.s.B),
	})
}

func isThinking(typ []byte) bool {
	return string(typ) == "thinking" || string(typ) == "redacted_thinking"
}

func isToolUse(typ []byte) bool {
	return string(typ) == "tool_use" || bytes.HasSuffix(typ, []byte("_tool_use"))
}

func isToolResult(typ []byte) bool {
	return string(typ) == "tool_result" || bytes.HasSuffix(typ, []byte("_tool_result"))
}
