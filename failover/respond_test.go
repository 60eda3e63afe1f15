package failover

import (
	"testing"
	"time"
)

// Times left are rounded to what a person reads, not down: a Retry-After
// of 600 is "10 minutes", 2h58m is not "2 hours".
func TestHumanLeftRounds(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for d, want := range map[time.Duration]string{
		-time.Second:                                  "no time",
		400 * time.Millisecond:                        "1 second",
		45 * time.Second:                              "45 seconds",
		599*time.Second + 500*time.Millisecond:        "10 minutes",
		time.Minute:                                   "1 minute",
		90 * time.Second:                              "2 minutes",
		59*time.Minute + 40*time.Second:               "1h",
		2*time.Hour + 58*time.Minute:                  "2h58m",
		2*time.Hour + 57*time.Minute + 50*time.Second: "2h58m",
		26 * time.Hour:                                "1d2h",
		71*time.Hour + 50*time.Minute:                 "3d",
	} {
		if got := humanLeft(now, now.Add(d)); got != want {
			t.Errorf("%v: %q, want %q", d, got, want)
		}
	}
}
