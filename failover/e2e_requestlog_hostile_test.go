package failover

import (
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"
)

// A known client chooses the path of a request the proxy refuses: the
// refused entry keeps at most maxLoggedString bytes of it, valid UTF-8,
// however long and whatever bytes it holds; and a refusal before the
// client is known (a wrong key, a foreign web page) adds no entry, so a
// stranger's flood leaves the log as it was.
func TestRequestLogRefusedHostile(t *testing.T) {
	a := newUpstream(t, "rh_a", replyMessage("ok"))
	p := startProxy(t, limitsSite(t, a.providerBlock(), "", ""))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, asClient("alice-key")...))

	long := "/v1/" + strings.Repeat("%ff%e2%82", 500) + "/../messages"
	res := post(t, p.URL+long, simpleRequest, asClient("bob-key")...)
	if body := readAll(t, res); res.StatusCode != http.StatusBadRequest {
		t.Fatalf("dot segments: %d %s", res.StatusCode, body)
	}
	for range 50 {
		readAll(t, post(t, p.URL+"/v1/x/../messages", simpleRequest, asClient("wrong-key")...))
		readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, append(asClient("alice-key"), "Origin", "https://evil.example")...))
	}
	e := requestLogEntries(t, p, "?limit=100")
	if len(e) != 2 || e[0].Refused != refusedPath || e[0].Client != "bob" || e[1].Client != "alice" || e[1].Status != 200 {
		t.Fatalf("log %+v; want bob's refused path over alice's answer, and nothing of the strangers", e)
	}
	if path := e[0].Path; len(path) > maxLoggedString+len("…") || !utf8.ValidString(path) {
		t.Fatalf("refused path logged as %d bytes %q", len(path), path)
	}
}
