package failover

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/caddy-llm-failover/caddy-llm-failover/credsource"
)

func FuzzCaddyfile(f *testing.F) {
	for _, s := range []string{
		"provider a {\n\tupstream http://127.0.0.1:9001\n}",
		"provider zai {\n\tupstream https://api.z.ai/api/anthropic\n\tcredential env ZAI_API_KEY\n\tauth_header bearer\n\tmodel claude-*haiku* glm-4.5-air\n\tmodel claude-* glm-4.6\n\tcooldown quota 2h\n\tdial_timeout 3s\n\theader_timeout 2m\n}",
		"provider s {\n\tupstream https://api.anthropic.com\n\tcredential passthrough\n}\ncooldown rate_limit 2m\nmax_cooldown 1h\nmax_attempts 3\nrequest_buffer 32MiB",
		"classify 400 \"credit balance\" quota\nclassify * * server_error",
		"stream {\n\thold off\n\thold_bytes 64KiB\n\thold_wait 5s\n\tidle_timeout off\n}",
		"stream {\n\thold first_event\n\tidle_timeout 2m\n}\nstream {\n}",
		"provider {\n}",
		"provider a {\n\tupstream ftp://x\n}",
		"max_attempts 0",
		"}\n}\n{",
		"provider a {\n\tcredential env\n\tcredential passthrough {\n\t\tx\n\t}\n}",
		"\"unterminated",
		"`backtick",
		"provider a {\n\tupstream http://[::1]:80/p?x#y\n}",
		"{$HOME} {env.PATH} {http.request.host}",
		"provider a/b {\n\tupstream http://127.0.0.1:70000\n\tauth_header \"X Key\"\n}\nmax_attempts 2\nmax_attempts 3",
		"request_buffer 1TiB\nbody_timeout 1m\nmax_reset 8d\nstream {\n\thold off\n\thold off\n}",
		"",
	} {
		f.Add(s)
	}
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		f.Fatal("no caddyfile adapter")
	}
	f.Fuzz(func(t *testing.T, block string) {
		// import reads files and snippets from disk: keep fuzzing hermetic
		if strings.Contains(strings.ToLower(block), "import") {
			t.Skip()
		}
		text := ":8080 {\n\tllm_failover {\n" + block + "\n\t}\n}\n"
		out, _, err := adapter.Adapt([]byte(text), nil)
		if err == nil && len(out) == 0 {
			t.Fatal("adapt succeeded with no output")
		}
	})
}
