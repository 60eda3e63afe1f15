//go:build !linux

package listeners

import "errors"

// Listening reads Linux's socket diagnostics; elsewhere it reports
// errors.ErrUnsupported, and nothing is checked.
func Listening() ([]Listener, error) { return nil, errors.ErrUnsupported }
