package failover

import (
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The launchd agent's command, run by a shell as launchd would run it,
// reads the env file and starts the installed caddy with the installed
// Caddyfile; the systemd unit starts the same paths. Both are the paths
// the README's install lines create.
func TestLoginServicesStartTheInstalledProxy(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "examples", "com.caddy-llm-failover.plist"))
	if err != nil {
		t.Fatal(err)
	}
	var plist struct {
		Dict struct {
			Items []struct {
				XMLName xml.Name
				Value   string   `xml:",chardata"`
				Strings []string `xml:"string"`
			} `xml:",any"`
		} `xml:"dict"`
	}
	if err := xml.Unmarshal(raw, &plist); err != nil {
		t.Fatalf("plist: %v", err)
	}
	var argv []string
	items := plist.Dict.Items
	for i := 0; i+1 < len(items); i++ {
		if items[i].XMLName.Local == "key" && items[i].Value == "ProgramArguments" {
			argv = items[i+1].Strings
		}
	}
	if len(argv) != 3 || argv[0] != "/bin/sh" {
		t.Fatalf("ProgramArguments = %q", argv)
	}

	home := t.TempDir()
	for _, dir := range []string{".local/bin", ".config/llm-failover", "Library/Logs"} {
		if err := os.MkdirAll(filepath.Join(home, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// a stand-in caddy that records how it was started
	fake := "#!/bin/sh\necho \"args: $*\"\necho \"key: $ANTHROPIC_API_KEY\"\n"
	if err := os.WriteFile(filepath.Join(home, ".local/bin/caddy"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	_ = os.WriteFile(filepath.Join(home, ".config/llm-failover/env"), []byte("ANTHROPIC_API_KEY=sk-from-env-file\n"), 0o600)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = []string{"HOME=" + home, "PATH=/usr/bin:/bin"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	log, _ := os.ReadFile(filepath.Join(home, "Library/Logs/llm-failover.log"))
	want := "args: run --config " + home + "/.config/llm-failover/Caddyfile --adapter caddyfile\nkey: sk-from-env-file\n"
	if string(log) != want {
		t.Fatalf("launchd agent ran:\n%s\nwant:\n%s", log, want)
	}

	unit, err := os.ReadFile(filepath.Join("..", "examples", "llm-failover.service"))
	if err != nil {
		t.Fatal(err)
	}
	wantLines(t, "the systemd unit", string(unit),
		"ExecStart=%h/.local/bin/caddy run --config %h/.config/llm-failover/Caddyfile",
		"EnvironmentFile=-%h/.config/llm-failover/env",
		"WantedBy=default.target")
	readme, _ := os.ReadFile(filepath.Join("..", "README.md"))
	wantLines(t, "README.md's install steps", string(readme),
		"cp caddy ~/.local/bin/caddy && cp Caddyfile.example ~/.config/llm-failover/Caddyfile",
		"cp examples/llm-failover.service ~/.config/systemd/user/",
		"cp examples/com.caddy-llm-failover.plist ~/Library/LaunchAgents/")
}

// wantLines reports each of wants that text, named what, lacks.
func wantLines(t *testing.T, what, text string, wants ...string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(text, want) {
			t.Errorf("%s: missing %q", what, want)
		}
	}
}
