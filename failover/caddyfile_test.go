package failover

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	_ "github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// -update rewrites the golden files of testdata/adapt. The flag is defined
// only if no other test file of the package defined it first.
func init() {
	if flag.Lookup("update") == nil {
		flag.Bool("update", false, "rewrite golden files")
	}
}

func goldUpdate() bool {
	f := flag.Lookup("update")
	return f != nil && f.Value.String() == "true"
}

// goldAdapt adapts a Caddyfile and returns the JSON config, indented.
func goldAdapt(t *testing.T, filename string, text []byte) ([]byte, []caddyconfig.Warning, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("no caddyfile adapter registered")
	}
	out, warnings, err := adapter.Adapt(text, map[string]any{"filename": filename})
	if err != nil {
		return nil, warnings, err
	}
	var b bytes.Buffer
	if err := json.Indent(&b, out, "", "\t"); err != nil {
		t.Fatalf("adapter output is not JSON: %v\n%s", err, out)
	}
	b.WriteByte('\n')
	return b.Bytes(), warnings, nil
}

func TestCaddyfileAdaptGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "adapt", "*.caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) < 10 {
		t.Fatalf("found %d golden inputs in testdata/adapt, want at least 10", len(inputs))
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".caddyfile")
		t.Run(name, func(t *testing.T) {
			text, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			got, warnings, err := goldAdapt(t, in, text)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("adapt warning: %s", w.String())
			}
			golden := strings.TrimSuffix(in, ".caddyfile") + ".json"
			if goldUpdate() {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -run TestCaddyfileAdaptGolden -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("adapted %s differs from %s\n--- got\n%s\n--- want\n%s", in, golden, got, want)
			}
		})
	}
}

// goldHandler returns the llm_failover handler of an adapted config (the
// first one found).
func goldHandler(t *testing.T, text string) map[string]any {
	t.Helper()
	out, _, err := goldAdapt(t, "Caddyfile", []byte(text))
	if err != nil {
		t.Fatalf("adapt: %v", err)
	}
	var cfg any
	if err := json.Unmarshal(out, &cfg); err != nil {
		t.Fatal(err)
	}
	var found map[string]any
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if v["handler"] == "llm_failover" && found == nil {
				found = v
			}
			for _, e := range v {
				walk(e)
			}
		case []any:
			for _, e := range v {
				walk(e)
			}
		}
	}
	walk(cfg)
	if found == nil {
		t.Fatalf("no llm_failover handler in\n%s", out)
	}
	return found
}

// goldHandlerOrder lists the handler names of a server's routes in the
// order they run (subroutes flattened).
func goldHandlerOrder(routes []any) []string {
	var names []string
	for _, r := range routes {
		route, _ := r.(map[string]any)
		handles, _ := route["handle"].([]any)
		for _, h := range handles {
			hm, _ := h.(map[string]any)
			name, _ := hm["handler"].(string)
			if name == "subroute" {
				sub, _ := hm["routes"].([]any)
				names = append(names, goldHandlerOrder(sub)...)
				continue
			}
			names = append(names, name)
		}
	}
	return names
}

func TestCaddyfileOrderedBeforeReverseProxy(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"reverse_proxy written first", `:8080 {
	reverse_proxy 127.0.0.1:9009
	llm_failover {
		provider a {
			upstream http://127.0.0.1:9001
		}
	}
}`, []string{"llm_failover", "reverse_proxy"}},
		{"with host and matchers", `example.test {
	reverse_proxy /other/* 127.0.0.1:9009
	llm_failover /v1/* {
		provider a {
			upstream http://127.0.0.1:9001
		}
	}
	reverse_proxy 127.0.0.1:9010
}`, []string{"llm_failover", "reverse_proxy", "reverse_proxy"}},
		{"after header, before file_server", `:8080 {
	file_server
	reverse_proxy 127.0.0.1:9009
	llm_failover {
		provider a {
			upstream http://127.0.0.1:9001
		}
	}
	header X-Test 1
}`, []string{"headers", "llm_failover", "reverse_proxy", "file_server"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := goldAdapt(t, "Caddyfile", []byte(tc.text))
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			var cfg struct {
				Apps struct {
					HTTP struct {
						Servers map[string]struct {
							Routes []any `json:"routes"`
						} `json:"servers"`
					} `json:"http"`
				} `json:"apps"`
			}
			if err := json.Unmarshal(out, &cfg); err != nil {
				t.Fatal(err)
			}
			if len(cfg.Apps.HTTP.Servers) != 1 {
				t.Fatalf("want one server:\n%s", out)
			}
			for _, srv := range cfg.Apps.HTTP.Servers {
				got := goldHandlerOrder(srv.Routes)
				if strings.Join(got, ",") != strings.Join(tc.want, ",") {
					t.Fatalf("handler order = %v, want %v\n%s", got, tc.want, out)
				}
			}
		})
	}
}

// The handler's own values, read back from the adapted JSON.
func TestCaddyfileValues(t *testing.T) {
	h := goldHandler(t, `:8080 {
	llm_failover {
		provider zai {
			upstream https://api.z.ai/api/anthropic
			credential env ZAI_API_KEY
			auth_header bearer
			model claude-*haiku* glm-4.5-air
			model claude-* glm-4.6
			cooldown quota 1d
			dial_timeout 90s
			header_timeout 2m
		}
		provider sub {
			upstream https://api.anthropic.com
			credential passthrough
		}
		cooldown rate_limit 2m
		max_cooldown 1h
		max_attempts 2
		request_buffer 64KiB
		classify 400 "Credit Balance" quota
		classify * * server_error
		stream {
			hold off
			hold_bytes 32MiB
			hold_wait 1500ms
			idle_timeout off
		}
	}
}`)
	raw, _ := json.Marshal(h)
	var got Handler
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("adapted handler does not decode into Handler: %v\n%s", err, raw)
	}
	const s = 1e9
	checks := []struct {
		what      string
		got, want any
	}{
		{"providers", len(got.Providers), 2},
		{"provider 0 name", got.Providers[0].Name, "zai"},
		{"provider 0 upstream", got.Providers[0].Upstream, "https://api.z.ai/api/anthropic"},
		{"provider 0 credential", string(got.Providers[0].CredentialRaw), `{"source":"env","var":"ZAI_API_KEY"}`},
		{"provider 0 auth_header", got.Providers[0].AuthHeader, "bearer"},
		{"provider 0 models", len(got.Providers[0].Models), 2},
		{"provider 0 model 0", got.Providers[0].Models[0], ModelRule{Pattern: "claude-*haiku*", Model: "glm-4.5-air"}},
		{"provider 0 model 1", got.Providers[0].Models[1], ModelRule{Pattern: "claude-*", Model: "glm-4.6"}},
		{"provider 0 cooldown quota", int64(got.Providers[0].Cooldowns[classify.Quota]), int64(24 * 3600 * s)},
		{"provider 0 dial_timeout", int64(got.Providers[0].DialTimeout), int64(90 * s)},
		{"provider 0 header_timeout", int64(got.Providers[0].HeaderTimeout), int64(120 * s)},
		{"provider 1 name", got.Providers[1].Name, "sub"},
		{"provider 1 credential", string(got.Providers[1].CredentialRaw), `{"source":"passthrough"}`},
		{"provider 1 auth_header", got.Providers[1].AuthHeader, ""},
		{"cooldown rate_limit", int64(got.Cooldowns[classify.RateLimit]), int64(120 * s)},
		{"cooldowns", len(got.Cooldowns), 1},
		{"max_cooldown", int64(got.MaxCooldown), int64(3600 * s)},
		{"max_attempts", got.MaxAttempts, 2},
		{"request_buffer", got.RequestBuffer, int64(64 << 10)},
		{"rules", len(got.Rules), 2},
		{"rule 0", got.Rules[0], Rule{Status: 400, BodyContains: "Credit Balance", Class: classify.Quota}},
		{"rule 1", got.Rules[1], Rule{Class: classify.ServerError}},
		{"stream hold", got.Stream.Hold, HoldOff},
		{"stream hold_bytes", got.Stream.HoldBytes, int64(32 << 20)},
		{"stream hold_wait", int64(got.Stream.HoldWait), int64(1.5 * s)},
		{"stream idle_timeout", int64(got.Stream.IdleTimeout), int64(-1)},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}
}

// okProvider is a provider block that parses, for the cases about what
// follows it.
const okProvider = "provider a {\n\t\t\tupstream http://127.0.0.1:9001\n\t\t}\n"

// wantCaddyfileError adapts a site whose llm_failover directive holds
// block and fails t unless that fails with an error containing want,
// which it returns.
func wantCaddyfileError(t *testing.T, block, want string) error {
	t.Helper()
	return wantSiteError(t, ":8080 {\n\tllm_failover {\n\t\t"+block+"\n\t}\n}\n", want)
}

func wantSiteError(t *testing.T, text, want string) error {
	t.Helper()
	out, _, err := goldAdapt(t, "Caddyfile", []byte(text))
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error %v, want one containing %q\n%s\n%s", err, want, text, out)
	}
	return err
}

// inProvider is a provider block with an upstream and lines, for the cases
// about a provider's other subdirectives.
func inProvider(lines string) string {
	return "provider a {\n upstream http://x.test\n " + lines + "\n}"
}

func TestCaddyfileErrors(t *testing.T) {
	cases := []struct {
		name, block, want string
	}{
		// The directive and its providers.
		{"unknown subdirective", okProvider + "bogus 1", `unrecognized llm_failover subdirective "bogus"`},
		{"arguments on the directive", "", "wrong argument count"}, // see the special case below
		{"provider without name", "provider {\n upstream http://127.0.0.1:1\n}", "provider needs a name"},
		{"provider without name nor block", "provider", "provider needs a name"},
		{"provider with two names", "provider a b {\n upstream http://127.0.0.1:1\n}", "wrong argument count"},
		{"duplicate provider", okProvider + okProvider, `provider "a" is declared twice`},
		{"missing upstream", "provider a {\n credential env X\n}", "provider a: upstream is required"},
		{"provider without block", "provider a", "provider a: upstream is required"},
		{"upstream without URL", "provider a {\n upstream\n}", "wrong argument count"},
		{"upstream with two URLs", "provider a {\n upstream http://a http://b\n}", "wrong argument count"},
		{"bad URL scheme", "provider a {\n upstream ftp://example.com\n}", "scheme must be http or https"},
		{"URL without scheme", "provider a {\n upstream api.anthropic.com\n}", "scheme must be http or https"},
		{"URL without host", "provider a {\n upstream https://\n}", "no host"},
		{"URL with query", "provider a {\n upstream https://x.test/?a=1\n}", "query or fragment"},
		{"unknown provider subdirective", inProvider("retries 3"), `provider a: unrecognized subdirective "retries"`},
		{"unknown credential source", inProvider("credential vault X"), `unknown credential source "vault"; the sources are: claude, command, env, file, keychain, passthrough`},
		{"credential without source", inProvider("credential"), "credential needs a source"},
		{"credential twice", inProvider("credential env X\n credential env Y"), "credential may appear only once"},
		{"env credential without variable", inProvider("credential env"), "env needs the name of an environment variable: env ANTHROPIC_API_KEY"},
		{"env credential with two variables", inProvider("credential env A B"), `env takes one variable name, got "B" too`},
		{"file credential without path", inProvider("credential file"), "file needs the path of the file"},
		{"command credential without program", inProvider("credential command"), "command needs the program"},
		{"passthrough with an argument", inProvider("credential passthrough X"), "wrong argument count"},
		{"auth_header without value", inProvider("auth_header"), "wrong argument count"},
		{"model with one argument", inProvider("model claude-*"), "model takes a pattern and a model name"},
		{"model with three arguments", inProvider("model a b c"), "model takes a pattern and a model name"},
		// Limits and prices.
		{"limit without per", okProvider + "limit tokens 5 each 1h", "limit tokens 2000000 per 5h"},
		{"limit of unknown kind", okProvider + "limit watts 5 per 1h", `unknown kind "watts"`},
		{"limit window too short", okProvider + "limit requests 5 per 30s", "must be from 1m to 31d"},
		{"limit window too long", okProvider + "limit requests 5 per 32d", "from 1m to 31d"},
		{"limit of no tokens", okProvider + "limit tokens 0 per 1h", "whole number from 1"},
		{"spend not dollars", okProvider + "limit spend $x per 1d", "amount of dollars"},
		{"client limit", okProvider + "client c {\n key env K\n limit requests -1 per 1h\n}", "client c: limit requests"},
		{"price without output", inProvider("price claude-* input 3 cache_read 1"), "input and output are required"},
		{"price of unknown field", inProvider("price claude-* input 3 output 15 batch 1"), `unknown field "batch"`},
		{"negative price", inProvider("price claude-* input -3 output 15"), "is not a price"},
		{"fail_closed without redis", okProvider + "share {\n fail_closed\n}", "fail_closed is for redis"},
		// Cooldowns, timeouts and the other limits.
		{"bad class", okProvider + "cooldown ratelimit 1m", `cooldown: unknown class "ratelimit"`},
		{"bad class in provider", inProvider("cooldown slow 1m"), `unknown class "slow"`},
		{"class none is not a class", okProvider + "cooldown none 1m", `unknown class "none"`},
		{"cooldown with one argument", okProvider + "cooldown 1m", "cooldown takes a class and a duration"},
		{"bad duration", okProvider + "cooldown rate_limit soon", `cooldown rate_limit: bad duration "soon"`},
		{"negative cooldown", okProvider + "cooldown rate_limit -1m", `bad duration "-1m"`},
		{"bad max_cooldown", okProvider + "max_cooldown forever", `max_cooldown: want a positive duration such as 90s or 2m, got "forever"`},
		{"zero max_cooldown", okProvider + "max_cooldown 0s", `max_cooldown: want a positive duration`},
		{"request_log zero", okProvider + "request_log 0", `request_log: "0": write a number of requests from 1 to 100000, or off`},
		{"request_log too large", okProvider + "request_log 1000000", `from 1 to 100000`},
		{"request_log twice", okProvider + "request_log 5\nrequest_log off", "request_log is already set"},
		{"request_log without value", okProvider + "request_log", "wrong argument count"},
		{"bad dial_timeout", inProvider("dial_timeout 0"), `dial_timeout: want a positive duration`},
		{"bad header_timeout", inProvider("header_timeout 5x"), `header_timeout: want a positive duration`},
		{"max_attempts 0", okProvider + "max_attempts 0", `max_attempts: want a whole number of at least 1, got "0"`},
		{"max_attempts negative", okProvider + "max_attempts -2", `max_attempts: want a whole number of at least 1, got "-2"`},
		{"max_attempts not a number", okProvider + "max_attempts three", `got "three"`},
		{"max_attempts twice on a line", okProvider + "max_attempts 2 3", "wrong argument count"},
		{"max_attempts without value", okProvider + "max_attempts", "wrong argument count"},
		{"bad size", okProvider + "request_buffer lots", `request_buffer: want a size such as 64KiB or 32MiB, got "lots"`},
		{"zero size", okProvider + "request_buffer 0", `request_buffer: want a size`},
		{"negative size", okProvider + "request_buffer -1MiB", `request_buffer: want a size`},
		// classify: rules that name an error's class.
		{"classify with two arguments", okProvider + "classify 400 quota", "classify takes a status, a body substring and a class"},
		{"classify with four arguments", okProvider + `classify 400 "credit" balance quota`, "classify takes a status, a body substring and a class"},
		{"classify without arguments", okProvider + "classify", "classify takes a status, a body substring and a class"},
		{"classify bad status", okProvider + "classify 200 * quota", `classify: status must be * or 400-599, got "200"`},
		{"classify status not a number", okProvider + "classify 4xx * quota", `classify: status must be * or 400-599, got "4xx"`},
		{"classify bad class", okProvider + "classify 429 * slow", `classify: unknown class "slow"`},
		// stream: how responses are held until they prove healthy.
		{"stream twice", okProvider + "stream {\n hold off\n}\nstream {\n hold off\n}", "stream may appear only once"},
		{"stream with an argument", okProvider + "stream off", "wrong argument count"},
		{"bad hold mode", okProvider + "stream {\n hold always\n}", `stream hold: want first_content, first_event or off, got "always"`},
		{"bad hold_bytes", okProvider + "stream {\n hold_bytes big\n}", `hold_bytes: want a size`},
		{"bad hold_wait", okProvider + "stream {\n hold_wait off\n}", `hold_wait: want a positive duration`},
		{"bad idle_timeout", okProvider + "stream {\n idle_timeout never\n}", `idle_timeout: want a positive duration or off, got "never"`},
		{"zero idle_timeout", okProvider + "stream {\n idle_timeout 0s\n}", `idle_timeout: want a positive duration or off`},
		{"unknown stream subdirective", okProvider + "stream {\n buffer 1\n}", `unrecognized stream subdirective "buffer"`},
		// client, client_key_header, allow_remote: who may use the proxy.
		{"client without name", okProvider + "client {\n key env K\n}", "client needs a name"},
		{"client with two names", okProvider + "client a b {\n key env K\n}", "wrong argument count"},
		{"client without key", okProvider + "client a {\n providers a\n}", "client a: a key is required"},
		{"client without block", okProvider + "client a", "client a: a key is required"},
		{"key without source", okProvider + "client a {\n key\n}", "client a: key needs a source"},
		{"key twice", okProvider + "client a {\n key env K\n key env L\n}", "client a: key may appear only once"},
		{"passthrough key", okProvider + "client a {\n key passthrough\n}", "passthrough cannot hold a client key"},
		{"unknown key source", okProvider + "client a {\n key vault K\n}", `unknown credential source "vault"; the sources are: `},
		{"client with an unknown provider", okProvider + "client a {\n key env K\n providers a zz\n}", `client a: no provider named "zz"; the providers are: a`},
		{"providers without names", okProvider + "client a {\n key env K\n providers\n}", "providers takes at least one provider name"},
		{"unknown client subdirective", okProvider + "client a {\n key env K\n quota 5\n}", `client a: unrecognized subdirective "quota"`},
		{"duplicate client", okProvider + "client a {\n key env K\n}\nclient a {\n key env L\n}", `client "a" is declared twice`},
		{"client_key_header without value", okProvider + "client_key_header", "wrong argument count"},
		{"client_key_header bad name", okProvider + `client_key_header "X LLM Key"`, "not a valid header name"},
		{"allow_remote with an argument", okProvider + "allow_remote yes", "wrong argument count"},
		// share: the state instances keep in common.
		{"redis without URL", okProvider + "share {\n redis\n}", "wrong argument count"},
		{"redis with two URLs", okProvider + "share {\n redis redis://a redis://b\n}", "wrong argument count"},
		{"redis scheme", okProvider + "share {\n redis http://127.0.0.1:6379\n}", "scheme must be redis or rediss"},
		// transport http: Caddy's own parser, and one place per timeout.
		{"transport not http", "provider a {\n upstream https://x\n transport fastcgi\n}", "provider a: transport: only Caddy's http transport"},
		{"transport without kind", "provider a {\n upstream https://x\n transport\n}", "provider a: transport: only Caddy's http transport"},
		{"transport twice", "provider a {\n upstream https://x\n transport http\n transport http\n}", "provider a: transport is already set"},
		{"transport option Caddy refuses", "provider a {\n upstream https://x\n transport http {\n dial_timeout soon\n }\n}", "provider a: transport http: "},
		{"dial_timeout twice", "provider a {\n upstream https://x\n dial_timeout 3s\n transport http {\n dial_timeout 4s\n }\n}",
			"provider a: both dial_timeout and transport http's dial_timeout are set"},
		{"header_timeout twice", "provider a {\n upstream https://x\n transport http {\n response_header_timeout 1m\n }\n header_timeout 2m\n}",
			"provider a: both header_timeout and transport http's response_header_timeout are set"},
		{"tls on plain http", "provider a {\n upstream http://127.0.0.1:1\n transport http {\n tls_server_name x\n }\n}",
			"upstream http://127.0.0.1:1 is plain http but transport http sets TLS options: write https://"},
		{"redis without host", okProvider + "share {\n redis redis://\n}", "no host"},
		{"password in the URL", okProvider + "share {\n redis redis://:hunter2@127.0.0.1:6379\n}", "carries a password"},
		{"password without source", okProvider + "share {\n redis redis://127.0.0.1\n password\n}", "password needs a credential source"},
		{"password twice", okProvider + "share {\n redis redis://127.0.0.1\n password env A\n password env B\n}", "share: password is already set on line"},
		{"unknown password source", okProvider + "share {\n redis redis://127.0.0.1\n password vault X\n}", `unknown credential source "vault"; the sources are: `},
		{"bad purge_after", okProvider + "share {\n purge_after soon\n}", "purge_after: want a positive duration"},
		{"zero probe_wait", okProvider + "share {\n probe_wait 0s\n}", "probe_wait: want a positive duration"},
		{"bad probe_lease", okProvider + "share {\n probe_lease x\n}", "probe_lease: want a positive duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "arguments on the directive" {
				wantSiteError(t, ":8080 {\n\tllm_failover extra {\n\t\t"+okProvider+"\t}\n}\n", tc.want)
				return
			}
			err := wantCaddyfileError(t, tc.block, tc.want)
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("the error shows a password: %v", err)
			}
		})
	}
}

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
		"request_log off\nrequest_log 100001",
		"}\n}\n{",
		"provider a {\n\tcredential env\n\tcredential passthrough {\n\t\tx\n\t}\n}",
		"\"unterminated",
		"`backtick",
		"provider a {\n\tupstream http://[::1]:80/p?x#y\n}",
		"provider a {\n\tupstream https://x\n\ttransport http {\n\t\ttls_trust_pool file ca.pem\n\t\ttls_client_auth c.pem c.key\n\t\tnetwork_proxy url http://127.0.0.1:3128\n\t}\n}",
		"provider a {\n\tupstream http://x\n\tdial_timeout 1s\n\ttransport http {\n\t\tdial_timeout 2s\n\t\tversions h2c 2\n\t\tkeepalive off\n\t}\n}",
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
