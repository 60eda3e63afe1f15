package repair

import (
	"fmt"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
)

// SyntaxError reports a body that is not the JSON object the functions of
// this package edit. Nothing is edited when one is returned.
type SyntaxError struct {
	Offset int    // byte offset at which the problem was found
	Msg    string // what was wrong
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("repair: invalid request body at byte %d: %s", e.Offset, e.Msg)
}

// syntaxError is the scanner's error as this package reports it, nil for
// none.
func syntaxError(e *jsonscan.SyntaxError) error {
	if e == nil {
		return nil
	}
	return &SyntaxError{Offset: e.Offset, Msg: e.Msg}
}
