package failover

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// Each refused config, written as a Caddyfile block and as the JSON of the
// handler: both must be refused with an error naming what is wrong and
// what to write instead; the Caddyfile error also names the line.
var validateCases = []struct {
	name      string
	caddyfile string // the llm_failover block's body; empty: JSON only
	json      string // the handler's JSON; empty: Caddyfile only
	want      string
}{
	{"request_log out of range", "",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001"}],"request_log":-2}`,
		"request_log: -2 is out of range: write a number of requests from 1 to 100000, or off"},
	{"provider name with a slash",
		"provider a/b {\n upstream http://127.0.0.1:9001\n}",
		`{"providers":[{"name":"a/b","upstream":"http://127.0.0.1:9001"}]}`,
		`provider name "a/b": use up to 64 letters, digits, '_', '.' or '-'`},
	{"provider name with a space",
		"provider \"my provider\" {\n upstream http://127.0.0.1:9001\n}",
		`{"providers":[{"name":"my provider","upstream":"http://127.0.0.1:9001"}]}`,
		`such as "my_provider"`},
	{"provider name ..",
		"provider .. {\n upstream http://127.0.0.1:9001\n}",
		`{"providers":[{"name":"..","upstream":"http://127.0.0.1:9001"}]}`,
		`provider name ".."`},
	{"provider name too long",
		"provider " + strings.Repeat("a", 65) + " {\n upstream http://127.0.0.1:9001\n}",
		`{"providers":[{"name":"` + strings.Repeat("a", 65) + `","upstream":"http://127.0.0.1:9001"}]}`,
		"use up to 64 letters"},
	{"auth_header with a space",
		"provider a {\n upstream http://127.0.0.1:9001\n auth_header \"X Key\"\n}",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001","auth_header":"X Key"}]}`,
		`auth_header "X Key" is not a header name: write x-api-key, bearer, or a header name such as X-Api-Key`},
	{"auth_header with a colon",
		"provider a {\n upstream http://127.0.0.1:9001\n auth_header X-Key:\n}",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001","auth_header":"X-Key:"}]}`,
		`is not a header name`},
	{"upstream port too large",
		"provider a {\n upstream http://127.0.0.1:70000\n}",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:70000"}]}`,
		"port 70000 is out of range: write a port from 1 to 65535"},
	{"upstream port 0",
		"provider a {\n upstream https://api.test:0/v1\n}",
		`{"providers":[{"name":"a","upstream":"https://api.test:0/v1"}]}`,
		"port 0 is out of range"},
	{"upstream empty port",
		"provider a {\n upstream http://127.0.0.1:\n}",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:"}]}`,
		"empty port"},
	{"request_buffer over 1GiB",
		vtProvider + "request_buffer 1TiB",
		`{"request_buffer":1099511627776}`,
		"1GiB"},
	{"request_buffer negative", "",
		`{"request_buffer":-1}`,
		"request_buffer: -1 bytes is out of range"},
	{"hold_bytes over 1GiB",
		vtProvider + "stream {\n hold_bytes 2GiB\n}",
		`{"stream":{"hold_bytes":2147483648}}`,
		"1GiB"},
	{"hold_bytes negative", "",
		`{"stream":{"hold_bytes":-5}}`,
		"hold_bytes: -5 bytes is out of range"},
	{"body_timeout negative", "",
		`{"body_timeout":-1000000000}`,
		"body_timeout: -1s is negative"},
	{"body_timeout zero", vtProvider + "body_timeout 0s", "",
		"body_timeout: want a positive duration"},
	{"max_reset negative", "",
		`{"max_reset":-1}`,
		"max_reset: -1ns is negative"},
	{"max_attempts negative", "",
		`{"max_attempts":-2}`,
		"max_attempts: -2 is negative"},
	{"tier negative", "",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001","tier":-1}]}`,
		"tier -1 is negative"},
	{"context_window negative", "",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001","context_window":-1}]}`,
		"context_window -1 is out of range"},
	{"cooldown negative", "",
		`{"cooldowns":{"rate_limit":-1000000000}}`,
		"cooldown rate_limit: -1s is negative"},
	{"dial_timeout negative", "",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001","dial_timeout":-1}]}`,
		"dial_timeout -1ns is negative"},
	{"classify status out of range", "",
		`{"rules":[{"status":200,"class":"quota"}]}`,
		"classify: status 200: write * or a status from 400 to 599"},
	{"stream hold unknown mode", vtProvider + "stream {\n hold first_byte\n}",
		`{"stream":{"hold":"first_byte"}}`,
		"first_content, first_event or off"},
	{"stream hold_bytes negative", "", `{"stream":{"hold_bytes":-1}}`, "stream hold_bytes: -1 bytes is out of range"},
	{"stream hold_wait negative", "", `{"stream":{"hold_wait":-1}}`, "stream hold_wait: -1ns is negative"},
	{"duplicate provider", "",
		`{"providers":[{"name":"a","upstream":"http://127.0.0.1:9001"},{"name":"a","upstream":"http://127.0.0.1:9002"}]}`,
		`provider "a" is declared twice`},

	// a single-value subdirective written twice: the last one would win
	{"max_attempts twice", vtProvider + "max_attempts 2\nmax_attempts 3", "",
		"max_attempts is already set on line 6: write it once"},
	{"request_buffer twice", vtProvider + "request_buffer 1MiB\nrequest_buffer 2MiB", "", "request_buffer is already set"},
	{"max_cooldown twice", vtProvider + "max_cooldown 1h\nmax_cooldown 2h", "", "max_cooldown is already set"},
	{"max_reset twice", vtProvider + "max_reset 1d\nmax_reset 2d", "", "max_reset is already set"},
	{"body_timeout twice", vtProvider + "body_timeout 1m\nbody_timeout 2m", "", "body_timeout is already set"},
	{"policy twice", vtProvider + "policy spread\npolicy priority", "", "policy is already set"},
	{"cooldown class twice", vtProvider + "cooldown quota 1h\ncooldown quota 2h", "", "cooldown quota is already set"},
	{"upstream twice", "provider a {\n upstream http://127.0.0.1:9001\n upstream http://127.0.0.1:9002\n}", "",
		"provider a: upstream is already set on line 4: write it once"},
	{"auth_header twice", "provider a {\n upstream http://127.0.0.1:9001\n auth_header bearer\n auth_header x-api-key\n}", "",
		"provider a: auth_header is already set"},
	{"tier twice", "provider a {\n upstream http://127.0.0.1:9001\n tier 1\n tier 2\n}", "", "provider a: tier is already set"},
	{"dial_timeout twice", "provider a {\n upstream http://127.0.0.1:9001\n dial_timeout 1s\n dial_timeout 2s\n}", "",
		"provider a: dial_timeout is already set"},
	{"header_timeout twice", "provider a {\n upstream http://127.0.0.1:9001\n header_timeout 1s\n header_timeout 2s\n}", "",
		"provider a: header_timeout is already set"},
	{"context_window twice", "provider a {\n upstream http://127.0.0.1:9001\n context_window 200k\n context_window 1m\n}", "",
		"provider a: context_window is already set"},
	{"provider cooldown class twice", "provider a {\n upstream http://127.0.0.1:9001\n cooldown auth 1m\n cooldown auth 2m\n}", "",
		"provider a: cooldown auth is already set"},
	{"stream hold twice", vtProvider + "stream {\n hold off\n hold first_event\n}", "", "stream: hold is already set"},
	{"stream idle_timeout twice", vtProvider + "stream {\n idle_timeout 1m\n idle_timeout off\n}", "", "stream: idle_timeout is already set"},
	{"share timeout twice", vtProvider + "share {\n timeout 1s\n timeout 2s\n}", "", "share: timeout is already set"},
}

const vtProvider = "provider a {\n\t\t\tupstream http://127.0.0.1:9001\n\t\t}\n"

func TestValidateCaddyfile(t *testing.T) {
	for _, tc := range validateCases {
		if tc.caddyfile == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			text := ":8080 {\n\tllm_failover {\n\t\t" + tc.caddyfile + "\n\t}\n}\n"
			out, _, err := goldAdapt(t, "Caddyfile", []byte(text))
			if err == nil {
				t.Fatalf("adapt succeeded; want an error containing %q\n%s\n%s", tc.want, text, out)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q\n%s", err, tc.want, text)
			}
			if !strings.Contains(err.Error(), "Caddyfile:") {
				t.Fatalf("error %q does not name the line", err)
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	for _, tc := range validateCases {
		if tc.json == "" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			var h Handler
			if err := json.Unmarshal([]byte(tc.json), &h); err != nil {
				t.Fatal(err)
			}
			err := h.Validate()
			if err == nil {
				t.Fatalf("Validate accepted %s; want an error containing %q", tc.json, tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

// caddy validate (caddy.Validate) refuses a JSON config through the
// handler's Validate, and accepts the bounds themselves.
func TestValidateJSONConfigThroughCaddy(t *testing.T) {
	config := func(handler string) *caddy.Config {
		raw := `{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{"listen":["127.0.0.1:0"],"routes":[{"handle":[` +
			`{"handler":"llm_failover",` + strings.TrimPrefix(handler, "{") + `]}]}}}}}`
		var cfg caddy.Config
		if err := json.Unmarshal([]byte(raw), &cfg); err != nil {
			t.Fatalf("%v\n%s", err, raw)
		}
		return &cfg
	}
	err := caddy.Validate(config(`{"providers":[{"name":"a/b","upstream":"http://127.0.0.1:9001"}]}`))
	if err == nil || !strings.Contains(err.Error(), `provider name "a/b"`) {
		t.Fatalf("caddy.Validate: %v; want the provider name refused", err)
	}
	err = caddy.Validate(config(`{"providers":[{"name":"a.b-c_1","upstream":"http://127.0.0.1:65535","auth_header":"X-Api-Key"}],` +
		`"request_buffer":1073741824,"max_reset":691200000000000,"body_timeout":60000000000}`))
	if err != nil {
		t.Fatalf("caddy.Validate refused a config at the bounds: %v", err)
	}
	resetProviderStates()
}

func TestValidateAcceptsDefaults(t *testing.T) {
	if err := (&Handler{}).Validate(); err != nil {
		t.Fatalf("the zero handler (all defaults): %v", err)
	}
	for _, v := range []string{"x-api-key", "bearer", "Bearer", "X-Goog-Api-Key", "api-key", "X_Token!"} {
		if err := validAuthHeader(v); err != nil {
			t.Errorf("auth_header %q: %v", v, err)
		}
	}
}

// The bounds' own subdirectives reach the JSON config.
func TestCaddyfileBoundsValues(t *testing.T) {
	h := goldHandler(t, `:8080 {
	llm_failover {
		provider a {
			upstream http://127.0.0.1:65535
			auth_header X-Goog-Api-Key
		}
		request_buffer 1GiB
		body_timeout 90s
		max_reset 3d
	}
}`)
	raw, _ := json.Marshal(h)
	var got Handler
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	if got.RequestBuffer != 1<<30 || got.BodyTimeout != caddy.Duration(90e9) || got.MaxReset != caddy.Duration(3*24*3600e9) {
		t.Fatalf("request_buffer %d, body_timeout %v, max_reset %v", got.RequestBuffer, got.BodyTimeout, got.MaxReset)
	}
	if err := got.Validate(); err != nil {
		t.Fatalf("the adapted config does not validate: %v", err)
	}
}
