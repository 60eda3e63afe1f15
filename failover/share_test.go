package failover

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
)

// The share block's Redis options, read back from the adapted JSON.
func TestShareCaddyfileRedis(t *testing.T) {
	h := goldHandler(t, `:8080 {
	llm_failover {
		provider a {
			upstream http://127.0.0.1:9001
		}
		share {
			redis rediss://cache.internal:6380/2
			password env REDIS_PASSWORD
			prefix team_llm
			purge_after 12h
			probe_lease 20s
			probe_wait 5ms
		}
	}
}`)
	raw, _ := json.Marshal(h["share"])
	var got ShareConfig
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.Redis != "rediss://cache.internal:6380/2" || string(got.PasswordRaw) != `{"source":"env","var":"REDIS_PASSWORD"}` ||
		got.Prefix != "team_llm" || time.Duration(got.PurgeAfter) != 12*time.Hour ||
		time.Duration(got.ProbeLease) != 20*time.Second || time.Duration(got.ProbeWait) != 5*time.Millisecond {
		t.Fatalf("share = %s", raw)
	}
	if err := got.validate(); err != nil {
		t.Fatal(err)
	}
}

// JSON config gets the same checks at provision.
func TestShareConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  ShareConfig
		want string
	}{
		{ShareConfig{Redis: "redis://u:secret@127.0.0.1:6379"}, "carries a password"},
		{ShareConfig{Redis: "tcp://127.0.0.1:6379"}, "scheme must be redis or rediss"},
		{ShareConfig{PasswordRaw: json.RawMessage(`{"source":"env","var":"X"}`)}, "no redis URL"},
		{ShareConfig{ProbeWait: -1}, "probe_wait must not be negative"},
	} {
		err := tc.cfg.validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "secret") {
			t.Errorf("%+v: error %v, want one containing %q", tc.cfg, err, tc.want)
		}
	}
}

// Shared state names a client by credsource.Fingerprint: every
// fingerprint passes isFingerprint, or no client's decision is adopted.
func TestIsFingerprintMatchesCredsource(t *testing.T) {
	for _, secret := range []string{"sk-ant-api03-x", "Bearer alice", "x"} {
		if fp := credsource.Fingerprint(secret); !isFingerprint(fp) {
			t.Fatalf("isFingerprint(%q) is false for credsource's fingerprint", fp)
		}
	}
	for _, s := range []string{"", "#", "not a fingerprint", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0"} {
		if isFingerprint(s) {
			t.Fatalf("isFingerprint(%q)", s)
		}
	}
}
