package failover

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

const claudeSettings = `{
  "permissions": {
    "allow": ["Bash(go test:*)"],
    "deny": []
  },
  "model": "opus",
  "env": {
    "DISABLE_TELEMETRY": "1",
    "ANTHROPIC_BASE_URL": "http://old.example:1"
  },
  "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "echo <done> & bye"}]}]}
}
`

func decodeJSONFile(t *testing.T, path string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, raw)
	}
	return m
}

// `caddy llm claude` sets env.ANTHROPIC_BASE_URL, keeps every other key
// and value, backs the file up, and --undo puts it back byte for byte.
func TestClaudeCommandMergesAndUndoes(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "settings.json")
	if err := os.WriteFile(path, []byte(claudeSettings), 0o640); err != nil {
		t.Fatal(err)
	}
	before := decodeJSONFile(t, path)

	var out bytes.Buffer
	code, err := runClaudeCommand(&out, claudeOptions{settings: path, url: "http://127.0.0.1:4181"})
	if err != nil || code != 0 {
		t.Fatalf("%d %v", code, err)
	}
	if !strings.Contains(out.String(), "env.ANTHROPIC_BASE_URL: http://old.example:1 -> http://127.0.0.1:4181") {
		t.Fatalf("output %q does not say what changed", out.String())
	}
	if !strings.Contains(out.String(), "needs its own credential") || !strings.Contains(out.String(), "ANTHROPIC_API_KEY") ||
		!strings.Contains(out.String(), "/login") {
		t.Fatalf("output %q does not say Claude Code still needs a login or ANTHROPIC_API_KEY", out.String())
	}
	after := decodeJSONFile(t, path)
	if got := after["env"].(map[string]any)["ANTHROPIC_BASE_URL"]; got != "http://127.0.0.1:4181" {
		t.Fatalf("ANTHROPIC_BASE_URL = %v", got)
	}
	before["env"].(map[string]any)["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:4181"
	if !reflect.DeepEqual(before, after) {
		t.Fatalf("other keys changed:\nbefore %v\nafter  %v", before, after)
	}
	if raw, _ := os.ReadFile(path); !bytes.Contains(raw, []byte(`"echo <done> & bye"`)) {
		t.Fatalf("HTML characters escaped:\n%s", raw)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o640 {
		t.Fatalf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	if backup, _ := os.ReadFile(path + backupSuffix); string(backup) != claudeSettings {
		t.Fatalf("backup = %q", backup)
	}

	out.Reset()
	if code, err := runClaudeCommand(&out, claudeOptions{settings: path, url: "http://127.0.0.1:4181"}); err != nil || code != 0 ||
		!strings.Contains(out.String(), "nothing changed") {
		t.Fatalf("second run: %d %v %q", code, err, out.String())
	}
	if backup, _ := os.ReadFile(path + backupSuffix); string(backup) != claudeSettings {
		t.Fatal("a run that changed nothing replaced the backup")
	}

	out.Reset()
	if code, err := runClaudeCommand(&out, claudeOptions{settings: path, undo: true}); err != nil || code != 0 {
		t.Fatalf("undo: %d %v", code, err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != claudeSettings {
		t.Fatalf("after undo:\n%s", raw)
	}
	if _, err := os.Stat(path + backupSuffix); !os.IsNotExist(err) {
		t.Fatalf("backup left behind: %v", err)
	}
	if _, err := runClaudeCommand(&out, claudeOptions{settings: path, undo: true}); err == nil ||
		!strings.Contains(err.Error(), "nothing to undo") {
		t.Fatalf("undo without a backup: %v", err)
	}
}

// Without a settings file the command creates one, and --undo removes it.
func TestClaudeCommandCreatesSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".claude", "settings.json")
	var out bytes.Buffer
	if code, err := runClaudeCommand(&out, claudeOptions{settings: path, url: "http://127.0.0.1:4181"}); err != nil || code != 0 {
		t.Fatalf("%d %v", code, err)
	}
	m := decodeJSONFile(t, path)
	if !reflect.DeepEqual(m, map[string]any{"env": map[string]any{"ANTHROPIC_BASE_URL": "http://127.0.0.1:4181"}}) {
		t.Fatalf("settings %v", m)
	}
	if !strings.Contains(out.String(), "(unset) -> http://127.0.0.1:4181") {
		t.Fatalf("output %q", out.String())
	}
	if _, err := runClaudeCommand(&out, claudeOptions{settings: path, undo: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("undo left the created file: %v", err)
	}
}

// A settings file that is not JSON is left alone with a clear error.
func TestClaudeCommandRefusesBrokenSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "settings.json")
	_ = os.WriteFile(path, []byte(`{"env": `), 0o600)
	_, err := runClaudeCommand(new(bytes.Buffer), claudeOptions{settings: path, url: "http://127.0.0.1:4181"})
	if err == nil || !strings.Contains(err.Error(), "is not a JSON object") {
		t.Fatalf("err = %v", err)
	}
	if raw, _ := os.ReadFile(path); string(raw) != `{"env": ` {
		t.Fatal("broken file was changed")
	}
}

// Without --url the URL is the running Caddy's llm_failover site.
func TestClaudeCommandFindsTheSite(t *testing.T) {
	a := newUpstream(t, "a", replyMessage("a"))
	p := startProxy(t, failoverSite(a.providerBlock()))
	path := filepath.Join(t.TempDir(), "settings.json")
	if code, err := runClaudeCommand(new(bytes.Buffer), claudeOptions{settings: path, address: p.AdminAddr}); err != nil || code != 0 {
		t.Fatalf("%d %v", code, err)
	}
	if got := decodeJSONFile(t, path)["env"].(map[string]any)["ANTHROPIC_BASE_URL"]; got != p.URL {
		t.Fatalf("ANTHROPIC_BASE_URL = %v, want %s", got, p.URL)
	}
}

func TestSiteURL(t *testing.T) {
	for _, tc := range []struct {
		listen, host string
		tls          bool
		want         string
	}{
		{":4181", "127.0.0.1", false, "http://127.0.0.1:4181"},
		{"tcp/127.0.0.1:4181", "", false, "http://127.0.0.1:4181"},
		{"tcp/[::1]:4181", "", false, "http://[::1]:4181"},
		{":443", "llm.example.com", true, "https://llm.example.com"},
		{":80", "", false, "http://127.0.0.1"},
	} {
		if got, err := siteURL(tc.listen, tc.host, tc.tls); err != nil || got != tc.want {
			t.Errorf("siteURL(%q, %q) = %q %v, want %q", tc.listen, tc.host, got, err, tc.want)
		}
	}
}

// Whatever the settings document, a merge that succeeds keeps every other
// key and value and sets only env.ANTHROPIC_BASE_URL; one that fails
// returns nothing to write.
func FuzzMergeBaseURL(f *testing.F) {
	for _, seed := range []string{
		claudeSettings, "", "{}", "null", `{"env":null}`, `{"env":{}}`, `{"env":[]}`, `[]`, `"x"`,
		`{"env":{"ANTHROPIC_BASE_URL":"http://127.0.0.1:4181"}}`, `{"a":1,"a":2}`, `{"<&>":"\u2028"}`,
		`{"env":{"X":"1"},"permissions":{"allow":["Bash(*)"]},"n":1e400}`, `{ "model" : "opus" } `,
	} {
		f.Add([]byte(seed))
	}
	const url = "http://127.0.0.1:4181"
	f.Fuzz(func(t *testing.T, raw []byte) {
		updated, _, changed, err := mergeBaseURL(raw, url)
		if err != nil {
			if updated != nil {
				t.Fatalf("error %v with a document to write", err)
			}
			return
		}
		if !changed {
			return
		}
		var before, after map[string]any
		decode := func(b []byte, v any) error {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber() // numbers as written: 1e400 is kept, not decoded
			return d.Decode(v)
		}
		if len(bytes.TrimSpace(raw)) > 0 {
			if err := decode(raw, &before); err != nil {
				t.Fatalf("merged a document that does not decode: %v", err)
			}
		}
		if err := decode(updated, &after); err != nil {
			t.Fatalf("wrote invalid JSON: %v\n%s", err, updated)
		}
		env, _ := after["env"].(map[string]any)
		if env["ANTHROPIC_BASE_URL"] != url {
			t.Fatalf("env = %v", after["env"])
		}
		if before == nil {
			before = map[string]any{}
		}
		beforeEnv, _ := before["env"].(map[string]any)
		if beforeEnv == nil {
			beforeEnv = map[string]any{}
		}
		beforeEnv["ANTHROPIC_BASE_URL"] = url
		before["env"] = beforeEnv
		if !reflect.DeepEqual(before, after) {
			t.Fatalf("keys changed:\nbefore %v\nafter  %v", before, after)
		}
	})
}

// A symlinked settings file (dotfile managers) is written through the
// link; a second run keeps the first backup, so --undo restores the
// original.
func TestClaudeCommandSymlinkAndFirstBackup(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "dotfiles", "claude-settings.json")
	if err := os.MkdirAll(filepath.Dir(real), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, []byte(claudeSettings), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "settings.json")
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	for _, url := range []string{"http://127.0.0.1:4181", "http://127.0.0.1:4182"} {
		if code, err := runClaudeCommand(new(bytes.Buffer), claudeOptions{settings: path, url: url}); err != nil || code != 0 {
			t.Fatalf("%s: %d %v", url, code, err)
		}
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symlink was replaced by a regular file (%v)", err)
	}
	if got := decodeJSONFile(t, real)["env"].(map[string]any)["ANTHROPIC_BASE_URL"]; got != "http://127.0.0.1:4182" {
		t.Fatalf("the link's target has ANTHROPIC_BASE_URL %v", got)
	}
	if code, err := runClaudeCommand(new(bytes.Buffer), claudeOptions{settings: path, undo: true}); err != nil || code != 0 {
		t.Fatalf("undo: %d %v", code, err)
	}
	if raw, _ := os.ReadFile(real); string(raw) != claudeSettings {
		t.Fatalf("undo did not restore the original:\n%s", raw)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("undo replaced the symlink (%v)", err)
	}
}

// Without --url, a site the admin endpoint names that is not on this
// machine is refused: whatever answers on the admin address must not send
// Claude Code's credential elsewhere.
func TestClaudeCommandRefusesRemoteSiteFromAdmin(t *testing.T) {
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"srv0":{"listen":[":443"],"tls_connection_policies":[{}],`+
			`"routes":[{"match":[{"host":["llm-proxy.attacker.example"]}],"handle":[{"handler":"llm_failover"}]}]}}`)
	}))
	defer admin.Close()
	path := filepath.Join(t.TempDir(), "settings.json")
	_, err := runClaudeCommand(new(bytes.Buffer), claudeOptions{settings: path, address: strings.TrimPrefix(admin.URL, "http://")})
	if err == nil || !strings.Contains(err.Error(), "--url") {
		t.Fatalf("err %v, want a refusal naming --url", err)
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("the settings file was written")
	}
	// named with --url, it is the user's choice
	if code, err := runClaudeCommand(new(bytes.Buffer), claudeOptions{settings: path, url: "https://llm-proxy.example"}); err != nil || code != 0 {
		t.Fatalf("--url: %d %v", code, err)
	}
}
