package failover

import (
	"bytes"
	"net/http"
	"strings"
	"testing"
)

// wantNoClients fails t unless the passthrough provider name keeps no
// per-client breaker: nothing counted as a client, nothing cooling, in the
// status API and in the `caddy llm` table.
func wantNoClients(t *testing.T, p *proxy, name string) {
	t.Helper()
	st := providerStatuses(t, p)[name]
	if st["clients"] != nil || st["clients_cooling"] != nil || st["state"] != "closed" {
		t.Fatalf("%s status: clients %v, clients_cooling %v, state %v; want no client, closed",
			name, st["clients"], st["clients_cooling"], st["state"])
	}
	var out bytes.Buffer
	if _, err := runLLMCommand(&out, p.AdminAddr, "", "", false, nil); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out.String(), "cooling") {
		t.Fatalf("caddy llm table says a client is cooling:\n%s", out.String())
	}
}

// requireKey answers like Anthropic does a request without a credential.
func requireKey(text string) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("Authorization") == "" && r.Header.Get("X-Api-Key") == "" {
			replyError(401, "authentication_error", "x-api-key header is required")(w, r, body)
			return
		}
		replyMessage(text)(w, r, body)
	}
}

// A model call that carries no credential has nothing for a passthrough
// provider to forward: the provider is not asked, no client breaker is
// made or cooled, and with no other provider the proxy says so itself, in
// a 401 the client does not retry.
func TestNoCredentialSkipsPassthrough(t *testing.T) {
	sub := newUpstream(t, "sub", requireKey("from sub"))
	p := startProxy(t, failoverSite(sub.providerBlock("credential passthrough")))

	for _, hdr := range [][]string{nil, {"X-Api-Key", ""}} {
		res := post(t, p.URL+"/v1/messages", simpleRequest, hdr...)
		body := readAll(t, res)
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, `"authentication_error"`) ||
			!strings.Contains(body, "no credential") || res.Header.Get("X-Should-Retry") != "false" {
			t.Fatalf("headers %v: %d %v %s; want the proxy's 401 saying no credential was sent, x-should-retry false",
				hdr, res.StatusCode, res.Header, body)
		}
		if res.Header.Get("X-LLM-Provider") != "" {
			t.Fatalf("X-LLM-Provider %q on an answer no provider gave", res.Header.Get("X-LLM-Provider"))
		}
	}
	if n := sub.Hits(); n != 0 {
		t.Fatalf("sub was sent %d requests without a credential, want 0", n)
	}
	wantNoClients(t, p, "sub")

	// a request that is not a model call passes through as it is, and
	// makes no client either
	req, _ := http.NewRequest(http.MethodHead, p.URL+"/", nil)
	res, err := freshConnClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if sub.Hits() != 1 {
		t.Fatalf("HEAD / reached sub %d times, want 1", sub.Hits())
	}
	wantNoClients(t, p, "sub")

	// a client with a credential is served as before
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "X-Api-Key", "sk-mine")); !strings.Contains(got, "from sub") {
		t.Fatalf("client with a key: %s", got)
	}
}

// With another provider behind it, a request without a credential goes
// straight there: the passthrough provider is neither asked nor cooled.
func TestNoCredentialGoesToNextProvider(t *testing.T) {
	sub := newUpstream(t, "sub", requireKey("from sub"))
	api := newUpstream(t, "api", replyMessage("from api"))
	t.Setenv("LLMF_TEST_KEY_API", "sk-api")
	p := startProxy(t, failoverSite(sub.providerBlock("credential passthrough"),
		api.providerBlock("credential env LLMF_TEST_KEY_API")))
	res := post(t, p.URL+"/v1/messages", simpleRequest)
	if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, "from api") {
		t.Fatalf("%d %s; want api's answer", res.StatusCode, body)
	}
	if got := res.Header.Get("X-LLM-Attempts"); got != "1" {
		t.Fatalf("X-LLM-Attempts %q, want 1: sub must not be tried", got)
	}
	if n := sub.Hits(); n != 0 {
		t.Fatalf("sub was sent %d requests without a credential, want 0", n)
	}
	wantNoClients(t, p, "sub")
}
