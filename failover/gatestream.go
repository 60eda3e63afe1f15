package failover

import (
	"bytes"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// A committed event stream: forwarded in whole events, watched for its
// terminal event, usage and an upstream error event.

// maxEventTail bounds the unfinished event a committed stream keeps back
// (see writeEventsLocked). A longer event is forwarded as it comes.
const maxEventTail = 1 << 20

// writeCommitted passes upstream bytes of a committed response to the
// client. The caller holds wmu, not mu.
func (g *gate) writeCommitted(p []byte) (int, error) {
	if !g.isStream {
		if g.usageBody != nil {
			g.keepForUsage(p)
		}
		return g.w.Write(p)
	}
	progress := g.watch.Progress()
	g.watchStream(p)
	if g.encoding != "" {
		g.touch()           // compressed: any byte is a sign of life
		return g.w.Write(p) // no events to find
	}
	if g.watch.Progress() != progress {
		// the idle watch counts events as the client does: pings alone
		// are silence, so a stream that only pings is ended before the
		// client gives up on it
		g.touch()
	}
	if err := g.writeEvents(p); err != nil {
		return 0, err
	}
	return len(p), nil
}

// writeEvents forwards a committed stream's complete events and keeps an
// unfinished one back (tail) until its end arrives, so that a stream that
// breaks mid-event can still be closed with an error event every parser
// reads whole. Upstreams flush event by event, so the tail is usually
// empty and p goes out as it came. An event over maxEventTail goes out
// unfinished (midEvent). The caller holds wmu.
func (g *gate) writeEvents(p []byte) error {
	if g.tail == nil || g.tail.Len() == 0 {
		end := streaminspect.LastBoundary(p)
		if end == len(p) {
			g.midEvent = false
			_, err := g.w.Write(p)
			return err
		}
		if end > 0 {
			g.midEvent = false
			if _, err := g.w.Write(p[:end]); err != nil {
				return err
			}
			p = p[end:]
		}
		if g.midEvent {
			_, err := g.w.Write(p)
			return err
		}
		if g.tail == nil {
			g.tail = heldPool.Get().(*bytes.Buffer)
		}
		g.tail.Write(p)
		return g.trimTail()
	}
	g.tail.Write(p)
	end := streaminspect.LastBoundary(g.tail.Bytes())
	if end > 0 {
		if _, err := g.w.Write(g.tail.Bytes()[:end]); err != nil {
			return err
		}
		rest := g.tail.Bytes()[end:]
		g.tail.Reset()
		g.tail.Write(rest) // copy handles the overlap
	}
	return g.trimTail()
}

// trimTail forwards a kept-back event that grew past maxEventTail.
func (g *gate) trimTail() error {
	if g.tail.Len() <= maxEventTail {
		return nil
	}
	_, err := g.w.Write(g.tail.Bytes())
	g.tail.Reset()
	g.midEvent = true
	return err
}

// endEvents ends a committed stream's output: a kept-back tail is sent
// when the stream ended well (it is the stream's own last bytes) and
// dropped when the stream broke, and it reports whether the client's
// stream stands at an event boundary for a closing event. The caller
// holds wmu.
func (g *gate) endEvents(broke bool) (atBoundary bool) {
	if g.tail != nil {
		if g.tail.Len() > 0 && !broke {
			_, _ = g.w.Write(g.tail.Bytes())
		}
		releaseHeld(g.tail)
		g.tail = nil
	}
	return !g.midEvent
}

// watchStream follows a committed stream for its terminal event, usage and
// an upstream error event. The error feeds the breaker before the client
// sees it, so the next request already skips the provider. The caller
// holds wmu.
func (g *gate) watchStream(p []byte) {
	if g.encoding != "" {
		return // a compressed stream is passed through without a decoder
	}
	g.watch.Feed(p)
	if g.owner != nil && !g.reportedErr {
		if ei, failed := g.watch.Failed(); failed {
			g.reportedErr = true
			g.owner.streamFailed(ei)
		}
	}
}
