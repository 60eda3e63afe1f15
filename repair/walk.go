package repair

import "bytes"

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
	typ, id, toolUseID, signature, data span
}

// idRef is one tool id in the body.
type idRef struct {
	sp    span
	valid bool
}

// walker walks the messages of a request body once, in order, acting on
// each content block according to mode. It lives on the caller's stack;
// only its result slices allocate.
type walker struct {
	s    scanner
	mode mode
	stop bool // the walk found what it was looking for (modeFindBadID)

	ids []idRef // modeCollectIDs

	sel     Selector // modeStrip
	sp      splicer
	removed int

	sigs []ThinkingSignature // modeSignatures
}

func newWalker(body []byte, m mode) walker {
	return walker{s: scanner{b: body}, mode: m, sp: splicer{src: body}}
}

// run walks the whole body. It returns the scanner's error, if any; after
// an early stop the rest of the body is not read.
func (w *walker) run() error {
	s := &w.s
	if s.peek() != '{' {
		return &SyntaxError{Offset: s.i, Msg: "the body is not a JSON object"}
	}
	if s.enter('{', '}') {
		for {
			k := s.key()
			if k.is(s.b, "messages") && s.peek() == '[' {
				w.messages()
			} else {
				s.value(1)
			}
			if w.stop {
				return nil
			}
			if !s.more('}') {
				break
			}
		}
	}
	s.end()
	return s.err
}

func (w *walker) messages() {
	s := &w.s
	var ed elementEditor
	edit := w.mode == modeStrip
	if !s.enter('[', ']') {
		return
	}
	for idx := 0; ; idx++ {
		s.ws()
		start := s.i
		if edit {
			ed.begin(&w.sp, start)
		}
		m := w.sp.mark()
		del := w.message(idx)
		if s.err != nil || w.stop {
			return
		}
		if edit {
			if del {
				w.sp.reset(m) // the whole message goes, its own edits with it
			}
			ed.end(&w.sp, start, s.i, del)
		}
		if !s.more(']') {
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
	if s.peek() != '{' {
		s.value(2)
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
	if s.enter('{', '}') {
		for {
			k := s.key()
			switch {
			case k.is(s.b, "role"):
				role = roleOther
				if s.peek() == '"' {
					if s.str().is(s.b, "assistant") {
						role = roleAssistant
					}
				} else {
					s.value(3)
				}
				if deferred >= 0 && s.err == nil {
					// Walk the earlier content now that the role is known:
					// its edits still come before any later one.
					save := s.i
					s.i = deferred
					w.content(idx, role == roleAssistant, &tally)
					s.i = save
					deferred = -1
				}
			case k.is(s.b, "content") && s.peek() == '[':
				if role == roleUnknown && w.mode.needsRole() {
					deferred = s.i
					s.value(3)
				} else {
					w.content(idx, role == roleAssistant, &tally)
				}
			default:
				s.value(3)
			}
			if s.err != nil || w.stop {
				return false
			}
			if !s.more('}') {
				break
			}
		}
	}
	// A content array with no role at all belongs to no assistant turn:
	// nothing to do with it.
	return tally.removed > 0 && tally.kept == 0
}

// content walks one content array at s.i.
func (w *walker) content(msg int, assistant bool, tally *contentTally) {
	s := &w.s
	strip := w.mode == modeStrip && assistant
	var ed elementEditor
	if !s.enter('[', ']') {
		return
	}
	for idx := 0; ; idx++ {
		s.ws()
		start := s.i
		if strip {
			ed.begin(&w.sp, start)
		}
		var b block
		if s.peek() == '{' {
			w.block(&b)
		} else {
			s.value(4)
		}
		if s.err != nil {
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
			if strip && isThinking(b.typ.text(s.b)) && w.sel.Selects(msg, idx) {
				del = true
				w.removed++
			}
		case modeSignatures:
			if assistant {
				w.signature(&b, msg, idx)
			}
		}
		if strip {
			ed.end(&w.sp, start, s.i, del)
		}
		if del {
			tally.removed++
		} else {
			tally.kept++
		}
		if !s.more(']') {
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
	if !s.enter('{', '}') {
		return
	}
	for {
		k := s.key()
		var dst *span
		switch {
		case k.is(s.b, "type"):
			dst = &b.typ
		case k.is(s.b, "id"):
			dst = &b.id
		case k.is(s.b, "tool_use_id"):
			dst = &b.toolUseID
		case k.is(s.b, "signature"):
			dst = &b.signature
		case k.is(s.b, "data"):
			dst = &b.data
		}
		if dst != nil && s.peek() == '"' {
			*dst = s.str()
		} else {
			if dst != nil {
				*dst = span{}
			}
			s.value(5)
		}
		if !s.more('}') {
			return
		}
	}
}

// toolIDs checks the tool id a block carries: "id" of a tool_use (or a
// server_tool_use, mcp_tool_use, ...), "tool_use_id" of a tool_result (or
// any *_tool_result).
func (w *walker) toolIDs(b *block) {
	if !b.typ.ok {
		return
	}
	typ := b.typ.text(w.s.b)
	var sp span
	switch {
	case isToolUse(typ):
		sp = b.id
	case isToolResult(typ):
		sp = b.toolUseID
	default:
		return
	}
	if !sp.ok {
		return
	}
	valid := validID(sp.text(w.s.b))
	if w.mode == modeFindBadID {
		if !valid {
			w.stop = true
		}
		return
	}
	w.ids = append(w.ids, idRef{sp: sp, valid: valid})
}

func (w *walker) signature(b *block, msg, idx int) {
	if !b.typ.ok {
		return
	}
	var sp span
	redacted := false
	switch typ := b.typ.text(w.s.b); string(typ) {
	case "thinking":
		sp = b.signature
	case "redacted_thinking":
		sp, redacted = b.data, true
	default:
		return
	}
	if !sp.ok {
		return
	}
	w.sigs = append(w.sigs, ThinkingSignature{
		Message: msg, Content: idx, Redacted: redacted, Signature: sp.text(w.s.b),
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
