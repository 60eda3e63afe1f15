package failover

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

// Events emitted through Caddy's events app, once per change, so that
// `events { on llm_failover.cooled exec ... }` can notify someone:
//
//	llm_failover.cooled     a breaker opened: provider, scope (provider, or
//	                        client for a passthrough client's own), class, until
//	llm_failover.recovered  a breaker that had cooled closed again: provider, scope
//	llm_failover.exhausted  a request found no provider that admitted it:
//	                        providers (those cooling), until (the soonest end);
//	                        again only after some provider answered
//
// Caddy runs event handlers synchronously, and an `exec` handler can take
// any time: events are handed to one goroutine per handler through a
// bounded queue, and dropped (with a warning) when it is full, so a
// request never waits on a subscriber.
const (
	eventCooled    = "llm_failover.cooled"
	eventRecovered = "llm_failover.recovered"
	eventExhausted = "llm_failover.exhausted"

	eventQueue    = 64              // events waiting for their handlers
	eventStopWait = 2 * time.Second // a reload waits this long at most for a handler under way
)

type pendingEvent struct {
	name string
	data map[string]any
}

// handlerEvents is a handler's way to Caddy's events app.
type handlerEvents struct {
	queue     chan pendingEvent
	stop      chan struct{} // closed by Cleanup
	stopped   chan struct{} // closed when the goroutine is done
	exhausted atomic.Bool   // announced, and no provider answered since
	dropped   atomic.Uint64
}

// provisionEvents starts the goroutine that emits the handler's events;
// it ends when the config is unloaded.
func (h *Handler) provisionEvents(ctx caddy.Context) error {
	appIface, err := ctx.App("events")
	if err != nil {
		return err
	}
	app := appIface.(*caddyevents.App)
	ev := &handlerEvents{queue: make(chan pendingEvent, eventQueue), stop: make(chan struct{}), stopped: make(chan struct{})}
	h.events = ev
	go func() {
		defer close(ev.stopped)
		for {
			select {
			case e := <-ev.queue:
				select {
				case <-ev.stop:
					return // unloading: what is left is dropped
				default:
				}
				app.Emit(ctx, e.name, e.data)
			case <-ev.stop:
				return
			}
		}
	}()
	return nil
}

// stopEvents ends the emitting goroutine before the config's logs close
// (Emit logs each event), waiting a little for an event being handled.
func (h *Handler) stopEvents() {
	if h.events == nil {
		return
	}
	close(h.events.stop)
	select {
	case <-h.events.stopped:
	case <-time.After(eventStopWait):
	}
}

// emit queues an event without waiting.
func (h *Handler) emit(name string, data map[string]any) {
	if h.events == nil {
		return
	}
	select {
	case h.events.queue <- pendingEvent{name: name, data: data}:
	default:
		h.events.dropped.Add(1)
		if c := h.logger.Check(zapcore.WarnLevel, "event handlers are behind; event dropped"); c != nil {
			c.Write(zap.String("event", name), zap.Uint64("dropped", h.events.dropped.Load()))
		}
	}
}

// scopeOf says which requests b governs: all of the provider's, or one
// client's (a passthrough provider's per-client breaker).
func scopeOf(p *Provider, b *providerBreaker) string {
	if b == p.state.breakers.shared() {
		return "provider"
	}
	family := ""
	p.state.breakers.eachFamily(func(f string, fb *providerBreaker) {
		if fb == b {
			family = f
		}
	})
	if family != "" {
		return family // a model family's scope
	}
	return "client"
}

// noteCooled announces that b opened, unless it was already announced as
// cooling.
func (h *Handler) noteCooled(p *Provider, b *providerBreaker, class Class, until time.Time) {
	if until.IsZero() || !b.announced.CompareAndSwap(false, true) {
		return
	}
	h.emit(eventCooled, map[string]any{"provider": p.Name, "scope": scopeOf(p, b), "class": string(class), "until": until})
}

// noteRecovered announces that b closed, if it was announced as cooling.
func (h *Handler) noteRecovered(p *Provider, b *providerBreaker) {
	if !b.announced.CompareAndSwap(true, false) {
		return
	}
	h.emit(eventRecovered, map[string]any{"provider": p.Name, "scope": scopeOf(p, b)})
}

// noteAnswered ends an exhaustion: the next one is announced again. One
// atomic load on the usual path.
func (h *Handler) noteAnswered() {
	if h.events != nil && h.events.exhausted.Load() {
		h.events.exhausted.Store(false)
	}
}

// noteExhausted announces that no provider admitted a request, once until
// some provider answers again.
func (h *Handler) noteExhausted(skips []skipped) {
	if h.events == nil || !h.events.exhausted.CompareAndSwap(false, true) {
		return
	}
	names := make([]string, 0, len(skips))
	var soonest time.Time
	for _, s := range skips {
		names = append(names, s.name)
		if soonest.IsZero() || s.retryAt.Before(soonest) {
			soonest = s.retryAt
		}
	}
	h.emit(eventExhausted, map[string]any{"providers": slices.Clip(names), "until": soonest})
}

// noteManual announces what a reset or a cooldown by hand changed, for
// every breaker of p.
func (p *Provider) noteManual(now time.Time) {
	h := p.owner
	if h == nil {
		return
	}
	each := func(b *providerBreaker) {
		s := b.Snapshot(now)
		if s.State == breaker.Closed {
			h.noteRecovered(p, b)
		} else if s.State == breaker.Open {
			h.noteCooled(p, b, s.LastClass, s.Until)
		}
	}
	each(p.state.breakers.shared())
	p.state.breakers.eachClient(now, func(_ string, b *providerBreaker) { each(b) })
}
