package failover

import "testing"

func TestParseTokenCount(t *testing.T) {
	for in, want := range map[string]int64{"200k": 200000, "1m": 1000000, "200000": 200000, "1.5M": 1500000, "128K": 128000} {
		if got, err := parseTokenCount(in); err != nil || got != want {
			t.Errorf("parseTokenCount(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "k", "0", "-1k", "1e6", "0x10", "1.5", "inf", "NaN", "2000000000000"} {
		if _, err := parseTokenCount(in); err == nil {
			t.Errorf("parseTokenCount(%q) succeeded", in)
		}
	}
}

func FuzzParseTokenCount(f *testing.F) {
	for _, s := range []string{"200k", "1m", "200000", "1.5m", "", "1e3", "-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseTokenCount(s)
		if err != nil {
			return
		}
		if n < 1 || n > 1e12 {
			t.Fatalf("parseTokenCount(%q) = %d out of range", s, n)
		}
	})
}
