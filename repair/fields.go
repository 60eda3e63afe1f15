package repair

// DropFields removes the named keys from the top-level object of body
// ("context_management", "container", ...), every occurrence of each, along
// with the comma that separated each from its neighbours. It returns the new
// body and the number of members removed; body itself, with no allocation,
// when none of the names is there. Keys are compared after unescaping.
func DropFields(body []byte, names []string) ([]byte, int, error) {
	if len(names) == 0 {
		return body, 0, nil
	}
	s := scanner{b: body}
	p := splicer{src: body}
	var ed elementEditor
	n := 0
	if s.peek() != '{' {
		return body, 0, &SyntaxError{Offset: s.i, Msg: "the body is not a JSON object"}
	}
	if s.enter('{', '}') {
		for {
			s.ws()
			start := s.i
			ed.begin(&p, start)
			k := s.key()
			s.value(1)
			if s.err != nil {
				break
			}
			del := false
			for _, name := range names {
				if k.is(body, name) {
					del = true
					n++
					break
				}
			}
			ed.end(&p, start, s.i, del)
			if !s.more('}') {
				break
			}
		}
	}
	ed.close(&p)
	s.end()
	if s.err != nil {
		return body, 0, s.err
	}
	return p.finish(), n, nil
}
