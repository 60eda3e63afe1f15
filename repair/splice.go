package repair

// splicer builds the edited body: the source bytes between edits are
// copied verbatim, each edit replaces src[start:end]. Edits must come in
// increasing order. Nothing is allocated until the first edit.
type splicer struct {
	src    []byte
	out    []byte
	last   int  // src[:last] has been emitted
	active bool // at least one edit is in out
	size   int  // capacity to allocate at the first edit
}

func (p *splicer) replace(start, end int, repl []byte) {
	if !p.active {
		p.active = true
		if p.out == nil {
			p.out = make([]byte, 0, max(p.size, len(p.src)))
		}
	}
	p.out = append(p.out, p.src[p.last:start]...)
	p.out = append(p.out, repl...)
	p.last = end
}

// mark is a splicer state to return to.
type mark struct {
	n, last int
	active  bool
}

func (p *splicer) mark() mark { return mark{len(p.out), p.last, p.active} }

// reset forgets every edit made since m.
func (p *splicer) reset(m mark) {
	p.out = p.out[:m.n]
	p.last = m.last
	p.active = m.active
}

// finish returns the edited body, or src itself when nothing was edited.
func (p *splicer) finish() []byte {
	if !p.active {
		return p.src
	}
	return append(p.out, p.src[p.last:]...)
}

// elementEditor removes elements of one JSON array (or members of one
// object) while keeping the commas right. For each element the caller calls
// begin at its first byte, then end with its span and whether to delete it,
// and close after the last one.
//
// An element that follows a kept element is deleted together with the comma
// and whitespace before it: from the end of the previous element to its own
// end. An element with no kept element before it is deleted together with the
// separator after it: from its start to the start of the next element, or to
// its own end when it is the last. Consecutive deletions are contiguous, so
// any subset can be removed and the result is still valid JSON; whitespace
// that is not part of a removed separator stays where it was.
type elementEditor struct {
	prevEnd    int
	pending    int // start of a deletion that ends where the next element starts
	hasPending bool
	keptBefore bool
}

func (e *elementEditor) begin(p *splicer, start int) {
	if e.hasPending {
		p.replace(e.pending, start, nil)
		e.hasPending = false
	}
}

func (e *elementEditor) end(p *splicer, start, end int, del bool) {
	switch {
	case !del:
		e.keptBefore = true
	case e.keptBefore:
		p.replace(e.prevEnd, end, nil)
	default:
		e.pending, e.hasPending = start, true
	}
	e.prevEnd = end
}

func (e *elementEditor) close(p *splicer) {
	if e.hasPending {
		p.replace(e.pending, e.prevEnd, nil)
		e.hasPending = false
	}
}
