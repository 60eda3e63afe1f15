package repair

import "github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"

// DropFields removes the named keys from the top-level object of body
// ("context_management", "container", ...), every occurrence of each, along
// with the comma that separated each from its neighbours. It returns the new
// body and the number of members removed; body itself, with no allocation,
// when none of the names is there. Keys are compared after unescaping.
func DropFields(body []byte, names []string) ([]byte, int, error) {
	if len(names) == 0 {
		return body, 0, nil
	}
	s := jsonscan.Scanner{B: body}
	p := splicer{src: body}
	var ed elementEditor
	n := 0
	if s.Peek() != '{' {
		return body, 0, &SyntaxError{Offset: s.I, Msg: "the body is not a JSON object"}
	}
	if s.Enter('{', '}') {
		for {
			s.Space()
			start := s.I
			ed.begin(&p, start)
			k := s.Key()
			s.Value(1)
			if s.Err != nil {
				break
			}
			del := false
			for _, name := range names {
				if k.Is(body, name) {
					del = true
					n++
					break
				}
			}
			ed.end(&p, start, s.I, del)
			if !s.More('}') {
				break
			}
		}
	}
	ed.close(&p)
	s.End()
	if s.Err != nil {
		return body, 0, syntaxError(s.Err)
	}
	return p.finish(), n, nil
}
