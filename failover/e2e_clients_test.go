package failover

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/caddyserver/caddy/v2"
)

// startGateway is startProxy for a proxy behind a load balancer: the
// server trusts 127.0.0.1 and ::1 as proxies, so a test on loopback plays
// a remote client by sending X-Forwarded-For. globals are more global
// options.
func startGateway(t *testing.T, siteBody string, globals ...string) *proxy {
	t.Helper()
	p, _ := startProxyWithGlobals(t, "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128\n\t}\n"+
		strings.Join(globals, ""), siteBody)
	return p
}

// remote is the X-Forwarded-For of a client on another network.
var remote = []string{"X-Forwarded-For", "203.0.113.9"}

// wantAnthropicError checks an answer is the given error in Anthropic's
// format and returns its message.
func wantAnthropicError(t *testing.T, res *http.Response, status int, errType string) string {
	t.Helper()
	body := readAll(t, res)
	var e struct {
		Type  string `json:"type"`
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if res.StatusCode != status || json.Unmarshal([]byte(body), &e) != nil || e.Type != "error" || e.Error.Type != errType {
		t.Fatalf("answer %d %s; want %d %s", res.StatusCode, body, status, errType)
	}
	return e.Error.Message
}

// A proxy that holds a credential refuses a client on another machine by
// default, without contacting a provider, and says what to configure; a
// loopback client is served.
func TestRemoteClientRefusedByDefault(t *testing.T) {
	t.Setenv("LLMF_ACCESS_KEY", "sk-provider-key")
	a := newUpstream(t, "acc_a", replyMessage("from a"))
	p := startGateway(t, failoverSite(a.providerBlock("credential env LLMF_ACCESS_KEY")))

	msg := wantAnthropicError(t, post(t, p.URL+"/v1/messages", simpleRequest, remote...), http.StatusForbidden, "permission_error")
	for _, want := range []string{"203.0.113.9", "client NAME", "allow_remote"} {
		if !strings.Contains(msg, want) {
			t.Errorf("refusal %q does not name %q", msg, want)
		}
	}
	for _, xff := range []string{"::ffff:198.51.100.7", "10.1.2.3"} {
		wantAnthropicError(t, post(t, p.URL+"/v1/messages", simpleRequest, "X-Forwarded-For", xff), http.StatusForbidden, "permission_error")
	}
	if a.Hits() != 0 {
		t.Fatalf("the provider was contacted %d times for refused clients", a.Hits())
	}

	// loopback, also as a trusted proxy reports it
	for _, hdr := range [][]string{nil, {"X-Forwarded-For", "127.0.0.1"}, {"X-Forwarded-For", "::1"}, {"X-Forwarded-For", "::ffff:127.0.0.1"}} {
		res := post(t, p.URL+"/v1/messages", simpleRequest, hdr...)
		if body := readAll(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, "from a") {
			t.Fatalf("loopback client %v: %d %s", hdr, res.StatusCode, body)
		}
	}
}

// Without trusted_proxies, a loopback peer that forwards another address
// is a front proxy on this machine (nginx, another Caddy) serving someone
// else: not a local client. A loopback peer naming only loopback
// addresses is.
func TestForwardedFromLoopbackPeerIsNotLocal(t *testing.T) {
	t.Setenv("LLMF_ACCESS_KEY", "sk-provider-key")
	a := newUpstream(t, "acc_a", replyMessage("from a"))
	p := startProxy(t, failoverSite(a.providerBlock("credential env LLMF_ACCESS_KEY")))
	for _, hdr := range [][]string{
		remote,
		{"X-Forwarded-For", "127.0.0.1, 203.0.113.9"},
		{"X-Real-IP", "198.51.100.7"},
		{"Forwarded", `for="[2001:db8::1]:4711";proto=https`},
		{"Forwarded", "for=127.0.0.1, for=unknown"},
	} {
		msg := wantAnthropicError(t, post(t, p.URL+"/v1/messages", simpleRequest, hdr...), http.StatusForbidden, "permission_error")
		if !strings.Contains(msg, "came from") {
			t.Fatalf("%v: refusal %q", hdr, msg)
		}
	}
	if a.Hits() != 0 {
		t.Fatalf("the provider was contacted %d times for forwarded clients", a.Hits())
	}
	for _, hdr := range [][]string{nil, {"X-Forwarded-For", "127.0.0.1"}, {"X-Real-IP", "::1"}, {"Forwarded", `for="[::1]:80"`}} {
		res := post(t, p.URL+"/v1/messages", simpleRequest, hdr...)
		if body := readAll(t, res); res.StatusCode != http.StatusOK {
			t.Fatalf("%v: %d %s", hdr, res.StatusCode, body)
		}
	}
}

// Behind a trusted proxy that appends to X-Forwarded-For, the client is
// the right-most address that is not a trusted proxy, with or without
// trusted_proxies_strict: what a remote client writes left of it does not
// make it local.
func TestTrustedProxyRightmostAddressDecides(t *testing.T) {
	t.Setenv("LLMF_ACCESS_KEY", "sk-provider-key")
	for _, strict := range []string{"", "\t\ttrusted_proxies_strict\n"} {
		a := newUpstream(t, "acc_a", replyMessage("from a"))
		p, _ := startProxyWithGlobals(t, "\tservers {\n\t\ttrusted_proxies static 127.0.0.1/32 ::1/128 10.0.0.0/8\n"+strict+"\t}\n",
			failoverSite(a.providerBlock("credential env LLMF_ACCESS_KEY")))
		for _, xff := range []string{"127.0.0.1, 203.0.113.9", "::1, 203.0.113.9, 10.0.0.2", "203.0.113.9, 127.0.0.1"} {
			wantAnthropicError(t, post(t, p.URL+"/v1/messages", simpleRequest, "X-Forwarded-For", xff), http.StatusForbidden, "permission_error")
		}
		if a.Hits() != 0 {
			t.Fatalf("strict=%q: the provider was contacted %d times for remote clients", strict, a.Hits())
		}
		for _, xff := range []string{"127.0.0.1", "203.0.113.9, ::ffff:127.0.0.1", "10.0.0.3, 127.0.0.1"} {
			res := post(t, p.URL+"/v1/messages", simpleRequest, "X-Forwarded-For", xff)
			if body := readAll(t, res); res.StatusCode != http.StatusOK {
				t.Fatalf("strict=%q, X-Forwarded-For %s: %d %s", strict, xff, res.StatusCode, body)
			}
		}
		if err := caddy.Stop(); err != nil {
			t.Fatal(err)
		}
		resetProviderStates()
	}
}

// allow_remote serves any client; a proxy that holds no credential
// (passthrough, or none) serves remote clients without it.
func TestRemoteClientAllowed(t *testing.T) {
	t.Setenv("LLMF_ACCESS_KEY", "sk-provider-key")
	for _, tc := range []struct{ name, cred, extra string }{
		{"allow_remote", "credential env LLMF_ACCESS_KEY", "\t\tallow_remote\n"},
		{"passthrough", "credential passthrough", ""},
		{"no credential", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := newUpstream(t, "acc_a", replyMessage("from a"))
			var lines []string
			if tc.cred != "" {
				lines = append(lines, tc.cred)
			}
			logFile := filepath.Join(t.TempDir(), "caddy.log")
			p := startGateway(t, failoverSite(a.providerBlock(lines...), tc.extra), debugLogTo(logFile))
			hdr := remote
			if tc.name == "passthrough" {
				// a passthrough provider needs the client's own credential
				hdr = append(slices.Clone(remote), "X-Api-Key", "sk-client")
			}
			res := post(t, p.URL+"/v1/messages", simpleRequest, hdr...)
			if body := readAll(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, "from a") {
				t.Fatalf("%d %s", res.StatusCode, body)
			}
			warnings := strings.Count(readFileString(t, logFile), "allow_remote: any client")
			if want := map[bool]int{true: 1, false: 0}[tc.name == "allow_remote"]; warnings != want {
				t.Fatalf("%d allow_remote warnings in the log, want %d", warnings, want)
			}
		})
	}
}

// clientKeySite is a gateway with two providers and three clients, whose
// keys are in files (carol's is limited to provider b). The providers'
// keys are sk-provider-a and sk-provider-b.
func clientKeySite(t *testing.T, a, b *fakeUpstream, extra string) (site string, keyFile func(name string) string) {
	t.Helper()
	t.Setenv("LLMF_ACCESS_KEY", "sk-provider-a")
	t.Setenv("LLMF_ACCESS_KEY_B", "sk-provider-b")
	dir := t.TempDir()
	keyFile = func(name string) string { return filepath.Join(dir, name+".key") }
	for name, key := range map[string]string{"alice": "alice-secret-key-1", "bob": "bob-secret-key-1", "carol": "carol-secret-key-1"} {
		writeKeyFile(t, keyFile(name), key)
	}
	site = failoverSite(
		a.providerBlock("credential env LLMF_ACCESS_KEY"),
		b.providerBlock("credential env LLMF_ACCESS_KEY_B"),
		fmt.Sprintf("\t\tclient alice {\n\t\t\tkey file %s\n\t\t}\n", keyFile("alice")),
		fmt.Sprintf("\t\tclient bob {\n\t\t\tkey file %s\n\t\t}\n", keyFile("bob")),
		fmt.Sprintf("\t\tclient carol {\n\t\t\tkey file %s\n\t\t\tproviders %s\n\t\t}\n", keyFile("carol"), b.name),
		extra,
	)
	return site, keyFile
}

// writeKeyFile replaces a key file in one rename, as a secret manager does.
func writeKeyFile(t *testing.T, path, key string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// Client keys: x-api-key, bearer; a wrong or missing key is refused with
// 401 before any provider is contacted, from any address; the key is
// consumed, never forwarded; the client's name reaches the placeholder,
// the metrics and GET /llm/clients, and the key none of them.
func TestClientKeys(t *testing.T) {
	a := newUpstream(t, "ck_a", replyMessage("from a"))
	b := newUpstream(t, "ck_b", replyMessage("from b"))
	site, _ := clientKeySite(t, a, b, "")
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	p := startGateway(t, site+"\n\theader >X-LLM-Client {llm.client}", debugLogTo(logFile))

	// refused: missing, wrong, a provider's own key, another scheme
	for _, hdr := range [][]string{
		nil, remote,
		{"X-Api-Key", "alice-secret-key-2"},
		{"Authorization", "Bearer alice-secret-key-"},
		{"X-Api-Key", "sk-provider-a", "X-Forwarded-For", "203.0.113.9"},
		{"Authorization", "Basic YWxpY2U6YWxpY2Utc2VjcmV0LWtleS0x"},
	} {
		msg := wantAnthropicError(t, post(t, p.URL+"/v1/messages", simpleRequest, hdr...), http.StatusUnauthorized, "authentication_error")
		if !strings.Contains(msg, "x-api-key or Authorization: Bearer") {
			t.Errorf("401 message %q does not say where the key goes", msg)
		}
	}
	if a.Hits()+b.Hits() != 0 {
		t.Fatalf("providers contacted %d times for refused requests", a.Hits()+b.Hits())
	}

	// admitted, also from another network: the SDK sends x-api-key...
	c := sdkClient(p, option.WithAPIKey("alice-secret-key-1"), option.WithHeader("X-Forwarded-For", "203.0.113.9"))
	m, raw, err := sendMessage(c, "hi")
	if err != nil || textOf(m) != "from a" {
		t.Fatalf("alice: %v %v", m, err)
	}
	if raw.Header.Get("X-LLM-Client") != "alice" {
		t.Fatalf("{llm.client} = %q, want alice", raw.Header.Get("X-LLM-Client"))
	}
	wantAPIKeyOnly(t, a, "sk-provider-a")
	// ...and bearer
	res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer bob-secret-key-1")
	if body := readAll(t, res); res.StatusCode != http.StatusOK || res.Header.Get("X-LLM-Client") != "bob" {
		t.Fatalf("bob: %d %s %v", res.StatusCode, body, res.Header)
	}
	wantAPIKeyOnly(t, a, "sk-provider-a")

	_, metricsText := adminGet(t, p, "/metrics")
	for _, want := range []struct {
		name   string
		labels []string
		value  string
	}{
		{"caddy_llm_attempts_total", []string{`provider="ck_a"`, `outcome="success"`, `client="alice"`}, "1"},
		{"caddy_llm_attempts_total", []string{`provider="ck_a"`, `outcome="success"`, `client="bob"`}, "1"},
		{"caddy_llm_tokens_total", []string{`provider="ck_a"`, `kind="input"`, `client="alice"`}, "12"},
		{"caddy_llm_tokens_total", []string{`provider="ck_a"`, `kind="output"`, `client="bob"`}, "7"},
	} {
		if got, ok := metricValue(t, metricsText, want.name, want.labels...); !ok || got != want.value {
			t.Errorf("%s%v = %q, want %s", want.name, want.labels, got, want.value)
		}
	}

	code, clients := adminGet(t, p, "/llm/clients")
	var cr ClientsResponse
	if code != http.StatusOK || json.Unmarshal([]byte(clients), &cr) != nil || len(cr.Clients) != 3 {
		t.Fatalf("/llm/clients: %d %s", code, clients)
	}
	byName := map[string]ClientStatus{}
	for _, s := range cr.Clients {
		byName[s.Name] = s
	}
	if s := byName["alice"]; s.Requests != 1 || s.Tokens.Input != 12 || s.Tokens.Output != 7 || s.Key != "ok" || s.LastSeen == "" {
		t.Errorf("alice: %+v", s)
	}
	if s := byName["carol"]; s.Requests != 0 || s.LastSeen != "" || len(s.Providers) != 1 || s.Providers[0] != "ck_b" {
		t.Errorf("carol: %+v", s)
	}
	_, cfg := adminGet(t, p, "/config/")
	_, providers := adminGet(t, p, "/llm/providers")
	logged := readFileString(t, logFile)
	if !strings.Contains(logged, "upstream roundtrip") {
		t.Error("the debug log has no upstream roundtrip line (with the headers sent upstream) to check")
	}
	for where, text := range map[string]string{"/llm/clients": clients, "/metrics": metricsText, "/config/": cfg,
		"/llm/providers": providers, "the debug log": logged} {
		for _, key := range []string{"alice-secret-key-1", "bob-secret-key-1", "carol-secret-key-1"} {
			if strings.Contains(text, key) {
				t.Errorf("%s shows a client key", where)
			}
		}
	}
}

// A client limited to some providers never reaches the others, however
// healthy, and their cooldowns are not its concern.
func TestClientLimitedToProviders(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "lim_a", replyMessage("from a"))
	b := newUpstream(t, "lim_b", replyError(429, "rate_limit_error", "b is limited", "Retry-After", "600"))
	site, _ := clientKeySite(t, a, b, "")
	p := startGateway(t, site)

	// carol may use only b: b's refusal (ten minutes) makes her answer, a
	// is never tried
	res := post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", "carol-secret-key-1")
	if body := readAll(t, res); res.StatusCode != http.StatusTooManyRequests || res.Header.Get("X-LLM-Provider") != "lim_b" {
		t.Fatalf("carol: %d %s", res.StatusCode, body)
	}
	// b now cools: carol is told so without an attempt
	msg := wantAnthropicError(t, post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", "carol-secret-key-1"),
		http.StatusTooManyRequests, "rate_limit_error")
	if !strings.Contains(msg, "lim_b") || strings.Contains(msg, "lim_a") {
		t.Fatalf("carol's all-cooling answer %q: want b only", msg)
	}
	if a.Hits() != 0 || b.Hits() != 1 {
		t.Fatalf("a hits %d, b hits %d; want 0 and 1", a.Hits(), b.Hits())
	}
	// alice may use all: a answers
	res = post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", "alice-secret-key-1")
	if body := readAll(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, "from a") {
		t.Fatalf("alice: %d %s", res.StatusCode, body)
	}
}

// A key rotated in its file is in force without a reload; the old one is
// refused. A key file that disappears admits nobody.
func TestClientKeyRotation(t *testing.T) {
	a := newUpstream(t, "rot_a", replyMessage("from a"))
	b := newUpstream(t, "rot_b", replyMessage("from b"))
	site, keyFile := clientKeySite(t, a, b, "")
	p := startGateway(t, site)
	status := func(key string) int {
		res := post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", key)
		readAll(t, res)
		return res.StatusCode
	}
	if got := status("alice-secret-key-1"); got != http.StatusOK {
		t.Fatalf("alice before rotation: %d", got)
	}
	writeKeyFile(t, keyFile("alice"), "alice-secret-key-2")
	waitFor(t, "the rotated key", 10*time.Second, func() bool { return status("alice-secret-key-2") == http.StatusOK })
	if got := status("alice-secret-key-1"); got != http.StatusUnauthorized {
		t.Fatalf("alice's old key after rotation: %d, want 401", got)
	}
	if err := os.Remove(keyFile("bob")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's key to be revoked", 10*time.Second, func() bool { return status("bob-secret-key-1") == http.StatusUnauthorized })
	_, clients := adminGet(t, p, "/llm/clients")
	if !strings.Contains(clients, `"name":"bob","key":"unavailable"`) {
		t.Fatalf("/llm/clients after bob's key file was removed: %s", clients)
	}
}

// With client_key_header, the client key travels in its own header and
// the client's own credential goes on to a passthrough provider: Claude
// Code with a subscription on a shared gateway. Here the real SDK sends
// both, as Claude Code does with ANTHROPIC_CUSTOM_HEADERS.
func TestClientKeyHeaderWithPassthrough(t *testing.T) {
	t.Setenv("LLMF_GW_ALICE", "alice-gateway-key")
	sub := newUpstream(t, "kh_sub", replyMessage("from the subscription"))
	p := startGateway(t, failoverSite(
		sub.providerBlock("credential passthrough"),
		"\t\tclient alice {\n\t\t\tkey env LLMF_GW_ALICE\n\t\t}\n",
		"\t\tclient_key_header X-LLM-Key\n",
	))
	c := sdkClient(p, option.WithAPIKey(""), option.WithAuthToken("sk-ant-oat01-alice-subscription"),
		option.WithHeader("X-LLM-Key", "alice-gateway-key"), option.WithHeader("X-Forwarded-For", "203.0.113.9"))
	m, err := c.Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(m) != "from the subscription" {
		t.Fatalf("%v %v", m, err)
	}
	h := sub.lastHeader()
	if h.Get("Authorization") != "Bearer sk-ant-oat01-alice-subscription" || h.Get("X-Llm-Key") != "" {
		t.Fatalf("subscription got Authorization %q, X-LLM-Key %q; want the client's token and no gateway key",
			h.Get("Authorization"), h.Get("X-Llm-Key"))
	}

	// the client's own credential is not a gateway key
	bad := sdkClient(p, option.WithAPIKey(""), option.WithAuthToken("alice-gateway-key"))
	_, err = bad.Messages.New(context.Background(), userMessage("hi"))
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusUnauthorized ||
		!strings.Contains(apiErr.Error(), "X-Llm-Key header") {
		t.Fatalf("without X-LLM-Key: %v; want 401 naming the header", err)
	}
	if sub.Hits() != 1 {
		t.Fatalf("subscription hits %d, want 1", sub.Hits())
	}
}

// What a credential source reports (here a helper's stderr, quoting a
// token) goes to the log and the status, never into the client's answer.
func TestCredentialErrorNotInAnswer(t *testing.T) {
	dir := t.TempDir()
	helper := writeExecutable(t, dir, "vault-helper",
		"#!/bin/sh\necho 'vault: login failed for token hvs.CAESIJsecretsecret (user admin@corp)' >&2\nexit 2\n")
	// a is unreachable, b has no credential: the proxy writes the answer
	a := newUpstream(t, "leak_a", replyMessage("from a"))
	a.Close()
	b := newUpstream(t, "leak_b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock(), b.providerBlock("credential command "+helper)))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	msg := wantAnthropicError(t, res, http.StatusBadGateway, "api_error")
	headers := fmt.Sprint(res.Header)
	for _, secret := range []string{"hvs.", "admin@corp", helper, dir} {
		if strings.Contains(msg, secret) || strings.Contains(headers, secret) {
			t.Errorf("the answer (%q, headers %s) carries %q", msg, headers, secret)
		}
	}
	if !strings.Contains(msg, "leak_b") || !strings.Contains(msg, "credential unavailable; see the proxy log") {
		t.Errorf("the answer %q: want the provider's name and the kind of failure", msg)
	}
	if b.Hits() != 0 {
		t.Fatalf("provider contacted %d times without a credential", b.Hits())
	}
	// the operator's status still says what went wrong
	if s := snapshot(t, "leak_b"); !strings.Contains(s.LastError, "exit status 2") {
		t.Fatalf("b's last error %q: want the helper's failure", s.LastError)
	}
}

// The shipped Caddyfiles listen on loopback only: nothing answers on this
// machine's other addresses.
func TestExamplesListenOnLoopbackOnly(t *testing.T) {
	var others []string
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && !ipn.IP.IsLinkLocalUnicast() {
			others = append(others, ipn.IP.String())
		}
	}
	if len(others) == 0 {
		t.Skip("this machine has no non-loopback address to try")
	}
	t.Setenv("ANTHROPIC_API_KEY", "")
	t.Setenv("ZAI_API_KEY", "")
	for _, example := range []string{"Caddyfile.example", "examples/demo.Caddyfile"} {
		t.Run(example, func(t *testing.T) {
			addr := loadExample(t, example)["4181"]
			_, port, _ := net.SplitHostPort(addr)
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				t.Fatalf("the proxy does not listen on loopback: %v", err)
			}
			conn.Close()
			for _, ip := range others {
				if conn, err := net.DialTimeout("tcp", net.JoinHostPort(ip, port), 5*time.Second); err == nil {
					conn.Close()
					t.Errorf("the proxy answers on %s", ip)
				}
			}
		})
	}
}

// The team-gateway example, as the README shows it, passes `caddy
// validate`: adapted and provisioned, TLS site and client keys included.
func TestTeamGatewayExampleValidates(t *testing.T) {
	text, err := os.ReadFile(filepath.Join("..", "examples", "team-gateway.Caddyfile"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), "```caddy\n"+string(text)+"```\n") {
		t.Error("README.md does not show examples/team-gateway.Caddyfile as it is")
	}
	// the internal CA goes to a temporary storage, not the user's
	withStorage := strings.Replace(string(text), "{\n", "{\n\tstorage file_system "+t.TempDir()+"\n", 1)
	var cfg caddy.Config
	if err := json.Unmarshal(adapt(t, withStorage), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("caddy validate: %v", err)
	}
}

// `caddy validate` with a client key file that is not there yet (it will
// be by the time the proxy runs): a warning that says what will happen at
// run time, no error-level line.
func TestValidateMissingClientKeyWarns(t *testing.T) {
	dir := t.TempDir()
	logFile := filepath.Join(dir, "caddy.log")
	text := fmt.Sprintf(`{
	admin off
	storage file_system %s
	log {
		output file %s
		format json
		level DEBUG
	}
}
http://127.0.0.1:%d {
	llm_failover {
		provider a {
			upstream http://127.0.0.1:1
			credential env LLMF_VALIDATE_KEY
		}
		client alice {
			key file %s
		}
	}
}
`, dir, logFile, freePort(t), filepath.Join(dir, "not-yet", "alice.key"))
	var cfg caddy.Config
	if err := json.Unmarshal(adapt(t, text), &cfg); err != nil {
		t.Fatal(err)
	}
	if err := caddy.Validate(&cfg); err != nil {
		t.Fatalf("caddy validate: %v", err)
	}
	time.Sleep(1500 * time.Millisecond) // past the first background re-read, had the handler not stopped
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var warned bool
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var e struct{ Level, Msg string }
		if json.Unmarshal([]byte(line), &e) != nil {
			continue
		}
		if e.Level == "error" {
			t.Errorf("validate logged an error: %s", line)
		}
		if e.Level == "warn" && strings.Contains(e.Msg, "client key not readable now") && strings.Contains(e.Msg, "refused with 401") &&
			strings.Contains(line, `"client":"alice"`) {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning naming alice and what happens at run time:\n%s", raw)
	}
}
