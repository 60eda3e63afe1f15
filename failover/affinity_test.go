package failover

import (
	"fmt"
	"testing"
	"time"
)

func TestAffinityTableBounds(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	tab := newAffinityTable(100, time.Hour)
	for i := range 250 {
		tab.record(tab.key("client", fmt.Sprint("session-", i)), "a", now)
	}
	if n := tab.len(); n != 100 {
		t.Fatalf("%d conversations kept, want the 100 most recent", n)
	}
	if _, ok := tab.lookup(tab.key("client", "session-0"), now); ok {
		t.Fatal("the least recently used conversation was kept")
	}
	if p, ok := tab.lookup(tab.key("client", "session-249"), now); !ok || p != "a" {
		t.Fatal("the most recent conversation was dropped")
	}
	// the same session id from another client is another conversation
	if _, ok := tab.lookup(tab.key("other", "session-249"), now); ok {
		t.Fatal("a session id crossed clients")
	}
	// moving a conversation
	k := tab.key("client", "session-249")
	tab.record(k, "b", now)
	if p, _ := tab.lookup(k, now); p != "b" {
		t.Fatalf("moved conversation on %q", p)
	}
	// idle ones are forgotten on lookup, and swept as new ones arrive
	if _, ok := tab.lookup(k, now.Add(time.Hour)); ok {
		t.Fatal("an idle conversation was kept")
	}
	later := now.Add(2 * time.Hour)
	for i := range 20 {
		tab.record(tab.key("client", fmt.Sprint("new-", i)), "a", later)
	}
	if n := tab.len(); n != 20 {
		t.Fatalf("%d conversations after idle sweep", n)
	}
}
