package failover

import (
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
)

// One warning per provider whose credential cannot work here, naming the
// provider and what to set; none for a credential that can.
func TestWarnUnusableCredential(t *testing.T) {
	t.Setenv("LLMF_TEST_SET_VAR", "sk-set")
	t.Setenv("PATH", t.TempDir()) // no `security` program
	missing := filepath.Join(t.TempDir(), "nope")
	core, logs := observer.New(zap.WarnLevel)
	logger := zap.New(core)
	for _, tc := range []struct {
		name string
		src  credsource.Source
		want string
	}{
		{"unset", &credsource.Env{Var: "LLMF_TEST_UNSET_VAR"}, "environment variable LLMF_TEST_UNSET_VAR is not set"},
		{"set", &credsource.Env{Var: "LLMF_TEST_SET_VAR"}, ""},
		{"nofile", &credsource.File{Path: missing}, missing + " does not exist"},
		{"keychain", &credsource.Keychain{Service: "x"}, "security program was not found"},
		{"claude-keychain", &credsource.Claude{Keychain: &credsource.ClaudeKeychain{}}, "security program was not found"},
		{"claude-file", &credsource.Claude{File: missing}, "Claude Code credentials file " + missing + " does not exist"},
		{"passthrough", &credsource.Passthrough{}, ""},
	} {
		before := logs.Len()
		err := warnUnusableCredential(logger, &Provider{Name: tc.name, source: tc.src})
		if tc.want == "" {
			if err != nil || logs.Len() != before {
				t.Errorf("%s: %v, %d warnings; want none", tc.name, err, logs.Len()-before)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) || logs.Len() != before+1 {
			t.Errorf("%s: %v; want one warning with %q", tc.name, err, tc.want)
			continue
		}
		fields := logs.All()[before].ContextMap()
		if fields["provider"] != tc.name || !strings.Contains(fields["problem"].(string), tc.want) {
			t.Errorf("%s: warning fields %v", tc.name, fields)
		}
	}
}
