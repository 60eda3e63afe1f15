package failover

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
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

func TestShareCaddyfileErrors(t *testing.T) {
	for _, tc := range []struct{ name, block, want string }{
		{"redis without URL", "share {\n redis\n}", "wrong argument count"},
		{"redis with two URLs", "share {\n redis redis://a redis://b\n}", "wrong argument count"},
		{"redis scheme", "share {\n redis http://127.0.0.1:6379\n}", "scheme must be redis or rediss"},
		{"redis without host", "share {\n redis redis://\n}", "no host"},
		{"password in the URL", "share {\n redis redis://:hunter2@127.0.0.1:6379\n}", "carries a password"},
		{"password without source", "share {\n redis redis://127.0.0.1\n password\n}", "password needs a credential source"},
		{"password twice", "share {\n redis redis://127.0.0.1\n password env A\n password env B\n}", "share: password is already set on line"},
		{"unknown password source", "share {\n redis redis://127.0.0.1\n password vault X\n}", "llm.credentials.vault"},
		{"bad purge_after", "share {\n purge_after soon\n}", "purge_after: want a positive duration"},
		{"zero probe_wait", "share {\n probe_wait 0s\n}", "probe_wait: want a positive duration"},
		{"bad probe_lease", "share {\n probe_lease x\n}", "probe_lease: want a positive duration"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := wantCaddyfileError(t, okProvider+tc.block, tc.want)
			if strings.Contains(tc.name, "password in the URL") && strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows the password: %v", err)
			}
		})
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
