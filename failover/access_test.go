package failover

import (
	"crypto/sha256"
	"net/http"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestIsLoopback(t *testing.T) {
	for want, addrs := range map[bool][]string{
		true: {"127.0.0.1", "127.8.9.10", "127.0.0.1:4181", "::1", "[::1]:4181",
			"::ffff:127.0.0.1", "[::ffff:127.0.0.1]:50000", "::ffff:7f00:1", "::1%lo",
			"@", // a Unix socket peer
		},
		false: {"10.0.0.5", "192.168.1.20:4181", "203.0.113.9", "::ffff:203.0.113.9",
			"[::ffff:192.168.1.20]:443", "2001:db8::1", "fe80::1%eth0", "::", "0.0.0.0", "",
			"localhost", // an address, never a name
			"127.0.0.1.example.com",
		},
	} {
		for _, addr := range addrs {
			if got := isLoopback(addr); got != want {
				t.Errorf("isLoopback(%q) = %v, want %v", addr, got, want)
			}
		}
	}
}

func TestTakeClientKey(t *testing.T) {
	for _, tc := range []struct {
		name, header string
		in           http.Header
		key          string
		left         http.Header // what remains to be forwarded
	}{
		{"x-api-key", "", http.Header{"X-Api-Key": {"k1"}, "Authorization": {"Bearer oauth"}}, "k1",
			http.Header{"Authorization": {"Bearer oauth"}}},
		{"bearer", "", http.Header{"Authorization": {"Bearer k2"}}, "k2", http.Header{}},
		{"bearer any case", "", http.Header{"Authorization": {"bearer  k3 "}}, "k3", http.Header{}},
		{"basic is not a key", "", http.Header{"Authorization": {"Basic abc"}}, "",
			http.Header{"Authorization": {"Basic abc"}}},
		{"none", "", http.Header{"Anthropic-Version": {"2023-06-01"}}, "", http.Header{"Anthropic-Version": {"2023-06-01"}}},
		{"custom header", "X-Llm-Key", http.Header{"X-Llm-Key": {"k4"}, "X-Api-Key": {"sk-ant"}}, "k4",
			http.Header{"X-Api-Key": {"sk-ant"}}},
		{"custom header missing", "X-Llm-Key", http.Header{"X-Api-Key": {"sk-ant"}}, "",
			http.Header{"X-Api-Key": {"sk-ant"}}},
		{"custom Authorization", "Authorization", http.Header{"Authorization": {"Bearer k5"}, "X-Api-Key": {"x"}}, "k5",
			http.Header{"X-Api-Key": {"x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := tc.in.Clone()
			key, where := takeClientKey(h, tc.header)
			if key != tc.key {
				t.Fatalf("key %q, want %q", key, tc.key)
			}
			if where == "" {
				t.Fatal("no description of where the key is expected")
			}
			if len(h) != len(tc.left) {
				t.Fatalf("left %v, want %v", h, tc.left)
			}
			for k, v := range tc.left {
				if h.Get(k) != v[0] {
					t.Fatalf("left %v, want %v", h, tc.left)
				}
			}
		})
	}
}

func TestClientMatch(t *testing.T) {
	mk := func(name, key string) *Client {
		c := &Client{Name: name}
		if key != "" {
			d := sha256.Sum256([]byte(key))
			c.digest.Store(&d)
		}
		return c
	}
	a := &Handler{Clients: []*Client{mk("alice", "alice-key"), mk("nokey", ""), mk("bob", "bob-key")}}
	for key, want := range map[string]string{"alice-key": "alice", "bob-key": "bob", "bob-key ": "", "": "", "alice": ""} {
		if got := a.match(key).label(); got != want {
			t.Errorf("match(%q) = %q, want %q", key, got, want)
		}
	}
}

func TestClientMarkDisallowed(t *testing.T) {
	var none *Client
	got := make([]bool, 3)
	if none.markDisallowed(got); got[0] || got[1] || got[2] {
		t.Fatalf("no client: %v", got)
	}
	c := &Client{Name: "c", Providers: []string{"b"}}
	if err := c.restrictTo([]*Provider{{Name: "a"}, {Name: "b"}, {Name: "c"}}); err != nil {
		t.Fatal(err)
	}
	if c.markDisallowed(got); !got[0] || got[1] || !got[2] {
		t.Fatalf("limited to b: %v", got)
	}
	bad := &Client{Name: "c", Providers: []string{"zz"}}
	if err := bad.restrictTo([]*Provider{{Name: "a"}}); err == nil || !strings.Contains(err.Error(), `no provider named "zz"; the providers are: a`) {
		t.Fatalf("unknown provider: %v", err)
	}
}

func TestCaddyfileClients(t *testing.T) {
	h := goldHandler(t, `:8080 {
	llm_failover {
		provider a {
			upstream http://127.0.0.1:9001
			credential env A_KEY
		}
		provider b {
			upstream http://127.0.0.1:9002
		}
		client alice {
			key env ALICE_PROXY_KEY
			providers b
		}
		client bob {
			key file /run/secrets/bob-proxy-key
		}
		client_key_header X-LLM-Key
		allow_remote
	}
}`)
	clients, _ := h["clients"].([]any)
	if len(clients) != 2 || h["client_key_header"] != "X-LLM-Key" || h["allow_remote"] != true {
		t.Fatalf("handler: %v", h)
	}
	alice := clients[0].(map[string]any)
	key := alice["key"].(map[string]any)
	if alice["name"] != "alice" || key["source"] != "env" || key["var"] != "ALICE_PROXY_KEY" {
		t.Fatalf("alice: %v", alice)
	}
	if ps, _ := alice["providers"].([]any); len(ps) != 1 || ps[0] != "b" {
		t.Fatalf("alice's providers: %v", alice["providers"])
	}
	bob := clients[1].(map[string]any)
	if bk := bob["key"].(map[string]any); bk["source"] != "file" || bk["path"] != "/run/secrets/bob-proxy-key" {
		t.Fatalf("bob: %v", bob)
	}
}

// The Caddyfile errors of the access subdirectives name their line.
func TestCaddyfileClientErrorLine(t *testing.T) {
	d := caddyfile.NewTestDispenser("llm_failover {\n\tclient a {\n\t\tkey env K\n\t\tproviders\n\t}\n}")
	var h Handler
	err := h.UnmarshalCaddyfile(d)
	if err == nil || !strings.Contains(err.Error(), "Testfile:4") {
		t.Fatalf("error %v, want one at Testfile:4", err)
	}
}

func FuzzClientAccess(f *testing.F) {
	for _, s := range []struct{ addr, auth, apiKey, header string }{
		{"127.0.0.1:1", "Bearer k", "", ""},
		{"[::ffff:127.0.0.1]:2", "", "k", ""},
		{"::1", "bearer", "", "X-Llm-Key"},
		{"203.0.113.9", "Basic x", "", "Authorization"},
		{"fe80::1%eth0", "Bearer  ", " ", ""},
		{"[::1", "Bearer\tk", "", ""},
	} {
		f.Add(s.addr, s.auth, s.apiKey, s.header)
	}
	f.Fuzz(func(t *testing.T, addr, auth, apiKey, header string) {
		loop := isLoopback(addr)
		if loop && addr != "@" && !strings.Contains(addr, "127.") && !strings.Contains(addr, ":") {
			t.Fatalf("isLoopback(%q): a loopback address must be 127.x or IPv6", addr)
		}
		h := http.Header{}
		if auth != "" {
			h.Set("Authorization", auth)
		}
		if apiKey != "" {
			h.Set("X-Api-Key", apiKey)
		}
		if header != "" && !validHeaderName(header) {
			return
		}
		if header != "" {
			header = http.CanonicalHeaderKey(header)
		}
		key, _ := takeClientKey(h, header)
		if key != strings.TrimSpace(key) {
			t.Fatalf("key %q is not trimmed", key)
		}
		if header == "" && key != "" && key == strings.TrimSpace(apiKey) && h.Get("X-Api-Key") != "" {
			t.Fatalf("the key came from x-api-key, which is still forwarded: %v", h)
		}
		if (header == "" || header == "Authorization") && key != "" && key == bearerToken(auth) &&
			h.Get("Authorization") != "" && h.Get("X-Api-Key") == "" {
			t.Fatalf("the key came from Authorization, which is still forwarded: %v", h)
		}
	})
}

func FuzzSameOrigin(f *testing.F) {
	for _, s := range [][2]string{{"http://127.0.0.1:4181", "127.0.0.1:4181"}, {"https://llm.example", "llm.example:443"},
		{"null", "x"}, {"http://[::1]:80", "[::1]"}, {"HTTP://A", "a:80"}, {"https://a/", "a"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, origin, host string) {
		if sameOrigin(origin, host) && !strings.Contains(origin, "://") {
			t.Fatalf("sameOrigin(%q, %q) without a scheme", origin, host)
		}
	})
}

func FuzzForwardedElsewhere(f *testing.F) {
	for _, s := range []string{"127.0.0.1", "203.0.113.9, 127.0.0.1", `for="[2001:db8::1]:4711";proto=https`, "for=unknown", "::1%lo", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, name := range []string{"X-Forwarded-For", "Forwarded", "X-Real-Ip"} {
			got := forwardedElsewhere(http.Header{name: {v}})
			if len(got) > 64 {
				t.Fatalf("%s: %q: named %q, longer than a message takes", name, v, got)
			}
		}
	})
}

// A Host names this machine only as localhost (or a subdomain of it) or a
// loopback address, in the forms a browser writes; every name a page's
// own DNS could make resolve here, and every form no browser sends, is
// not loopback.
func TestLoopbackName(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost":                   true,
		"localhost:4181":              true,
		"LOCALHOST:4181":              true,
		"localhost.:4181":             true, // the same name, fully qualified
		"app.localhost.":              true,
		"app.localhost:4181":          true,
		"127.0.0.1:4181":              true,
		"127.8.9.10":                  true,
		"[::1]:4181":                  true,
		"[::1]":                       true,
		"[0:0:0:0:0:0:0:1]:4181":      true,
		"[::ffff:127.0.0.1]:4181":     true,
		"[::ffff:7f00:1]:4181":        true, // how a browser writes the one above
		"":                            false,
		":4181":                       false,
		"attacker.example:4181":       false,
		"attacker.example.:4181":      false,
		"localhost.example":           false,
		"localhost..":                 false,
		"127.0.0.1.attacker.example":  false,
		"localhost.attacker.example.": false,
		"attacker.example@127.0.0.1":  false,
		"127.1:4181":                  false, // a browser sends 127.0.0.1 for it
		"0x7f.1:4181":                 false,
		"2130706433:4181":             false,
		"0177.0.0.1:4181":             false,
		"0.0.0.0:4181":                false,
		"[::]:4181":                   false,
		"[::1%25lo]:4181":             false, // zones: no browser sends them
		"[::1%lo]:4181":               false,
		"[fe80::1%25eth0]:4181":       false,
		"[::127.0.0.1]:4181":          false,
		"[::ffff:10.0.0.1]:4181":      false,
		"localhost:4181:4181":         false,
	} {
		if got := loopbackName(host); got != want {
			t.Errorf("loopbackName(%q) = %v, want %v", host, got, want)
		}
	}
}
