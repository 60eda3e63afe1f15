package failover

import (
	"net/http"
	"strings"
	"testing"
)

// An Authorization header that names a scheme and no token carries no
// credential, however a client spells it: it is no client of a
// passthrough provider (no breaker, no cooldown), and beside an x-api-key
// it does not make every such client one client.
func TestEmptyBearerIsNoCredential(t *testing.T) {
	sub := newUpstream(t, "sub", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("X-Api-Key") == "sk-good" {
			replyMessage("from sub")(w, r, body)
			return
		}
		replyError(401, "authentication_error", "invalid x-api-key")(w, r, body)
	})
	p := startProxy(t, failoverSite(sub.providerBlock("credential passthrough")))

	for _, auth := range []string{"Bearer ", "Bearer", "bearer   ", "   ", "\t"} {
		res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", auth)
		body := readAll(t, res)
		if res.StatusCode != http.StatusUnauthorized || !strings.Contains(body, "no credential") {
			t.Fatalf("Authorization %q: %d %s; want the proxy's 401 saying no credential was sent", auth, res.StatusCode, body)
		}
	}
	if n := sub.Hits(); n != 0 {
		t.Fatalf("sub was sent %d requests whose Authorization carried no token, want 0", n)
	}
	wantNoClients(t, p, "sub")

	// beside an x-api-key, an empty Bearer is not the client: a client
	// whose key is refused does not bench one whose key is good
	res := post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer ", "X-Api-Key", "sk-bad")
	if body := readAll(t, res); res.StatusCode == http.StatusOK || sub.Hits() != 1 {
		t.Fatalf("sk-bad: %d %s after %d requests to sub; want it refused by sub", res.StatusCode, body, sub.Hits())
	}
	res = post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer ", "X-Api-Key", "sk-good")
	if body := readAll(t, res); res.StatusCode != http.StatusOK || !strings.Contains(body, "from sub") {
		t.Fatalf("sk-good after sk-bad was refused: %d %s; want sub's answer", res.StatusCode, body)
	}
}
