package failover

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
)

func init() {
	caddy.RegisterModule(eventRecorder{})
}

// eventRecorder is a test-only event handler: `events { on NAME
// llm_test_recorder }` keeps every event it is given in recordedEvents.
type eventRecorder struct{}

func (eventRecorder) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "events.handlers.llm_test_recorder", New: func() caddy.Module { return new(eventRecorder) }}
}

func (*eventRecorder) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next()
	return nil
}

func (eventRecorder) Handle(_ context.Context, e caddy.Event) error {
	recordedEvents.Lock()
	defer recordedEvents.Unlock()
	recordedEvents.list = append(recordedEvents.list, recordedEvent{name: e.Name(), origin: e.Origin().CaddyModule().ID, data: e.Data})
	return nil
}

type recordedEvent struct {
	name   string
	origin caddy.ModuleID
	data   map[string]any
}

var recordedEvents struct {
	sync.Mutex
	list []recordedEvent
}

// eventsOf waits up to a second for n events and returns what was
// recorded (emission is asynchronous).
func eventsOf(t *testing.T, n int) []recordedEvent {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		recordedEvents.Lock()
		got := append([]recordedEvent(nil), recordedEvents.list...)
		recordedEvents.Unlock()
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const eventGlobals = "\tevents {\n\t\ton llm_failover.cooled llm_test_recorder\n\t\ton llm_failover.recovered llm_test_recorder\n\t\ton llm_failover.exhausted llm_test_recorder\n\t}\n"

// A provider that cools is announced once, however many failures follow;
// all providers cooling is announced once; the provider answering again
// is announced once.
func TestEventsCooledExhaustedRecovered(t *testing.T) {
	clock := useFakeClock(t)
	recordedEvents.Lock()
	recordedEvents.list = nil
	recordedEvents.Unlock()
	a := newUpstream(t, "ev_a", replyError(429, "rate_limit_error", "slow down", "retry-after", "60"))
	p, _ := startProxyWithGlobals(t, eventGlobals, failoverSite(a.providerBlock()))

	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // cools ev_a: 429 to the client
	for range 3 {
		readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)) // nothing admits: exhausted, once
	}
	got := eventsOf(t, 2)
	if len(got) != 2 || got[0].name != "llm_failover.cooled" || got[1].name != "llm_failover.exhausted" {
		t.Fatalf("events = %+v, want cooled then exhausted", got)
	}
	cooled := got[0]
	if cooled.origin != "http.handlers.llm_failover" || cooled.data["provider"] != "ev_a" ||
		cooled.data["class"] != "rate_limit" || cooled.data["scope"] != "provider" {
		t.Errorf("cooled = %+v", cooled)
	}
	if until, _ := cooled.data["until"].(time.Time); !until.Equal(clock.Now().Add(60 * time.Second)) {
		t.Errorf("cooled until %v, want %v", cooled.data["until"], clock.Now().Add(60*time.Second))
	}
	if ps, _ := got[1].data["providers"].([]string); len(ps) != 1 || ps[0] != "ev_a" {
		t.Errorf("exhausted = %+v", got[1])
	}

	// the cooldown ends; the probe fails again: still cooling, no event
	clock.Advance(61 * time.Second)
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	if got := eventsOf(t, 3); len(got) != 2 {
		t.Fatalf("a failed probe was announced again: %+v", got[2:])
	}
	// the next probe succeeds: recovered, once; then exhausted can be
	// announced again
	clock.Advance(10 * time.Minute)
	a.setHandler(replyMessage("back"))
	for range 2 {
		readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	}
	got = eventsOf(t, 3)
	if len(got) != 3 || got[2].name != "llm_failover.recovered" || got[2].data["provider"] != "ev_a" {
		t.Fatalf("events = %+v, want recovered third", got)
	}
	if got := eventsOf(t, 4); len(got) != 3 {
		t.Fatalf("more events than one recovery: %+v", got[3:])
	}
}

// A cooldown and a reset by hand through the admin API are announced too.
func TestEventsAdminCooldownAndReset(t *testing.T) {
	recordedEvents.Lock()
	recordedEvents.list = nil
	recordedEvents.Unlock()
	a := newUpstream(t, "ev_b", replyMessage("ok"))
	p, _ := startProxyWithGlobals(t, eventGlobals, failoverSite(a.providerBlock()))
	if code, body := adminPost(t, p, "/llm/providers/ev_b/cooldown", `{"duration":"10m"}`); code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	adminPost(t, p, "/llm/providers/ev_b/cooldown", `{"duration":"20m"}`) // already cooling: no event
	adminPost(t, p, "/llm/providers/ev_b/reset", "")
	got := eventsOf(t, 2)
	if len(got) != 2 || got[0].name != "llm_failover.cooled" || got[0].data["class"] != "manual" ||
		got[1].name != "llm_failover.recovered" {
		t.Fatalf("events = %+v", got)
	}
	if got := eventsOf(t, 3); len(got) != 2 {
		t.Fatalf("extra events: %+v", got[2:])
	}
}

// Interface guards
var (
	_ caddyevents.Handler   = (*eventRecorder)(nil)
	_ caddyfile.Unmarshaler = (*eventRecorder)(nil)
)
