package failover

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// wireRequest writes a request as it comes, on its own connection, and
// returns the status and body of the answer.
func wireRequest(t *testing.T, addr, requestLine string, header ...string) (int, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	b.WriteString(requestLine + "\r\n")
	for i := 0; i+1 < len(header); i += 2 {
		fmt.Fprintf(&b, "%s: %s\r\n", header[i], header[i+1])
	}
	fmt.Fprintf(&b, "Content-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(simpleRequest), simpleRequest)
	if _, err := io.WriteString(conn, b.String()); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", requestLine, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// Forms of Host a DNS-rebinding page might hide behind, and clients that
// are not browsers sending odd ones, on the wire as written: a page's
// request is served only under localhost or a loopback address; a client
// that is not a browser is served whatever it writes.
func TestRebindingHostForms(t *testing.T) {
	t.Setenv("LLMF_REBIND_KEY", "sk-rebind")
	up := newUpstream(t, "rebind_forms", replyMessage("fine"))
	p := newProxy(t)
	addr := strings.TrimPrefix(p.URL, "http://")
	port := strings.TrimPrefix(addr, "127.0.0.1:")
	p.load(fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n}\nhttp://:%s {\n\tbind 127.0.0.1\n%s\n}\n", p.AdminAddr, port,
		failoverSite(up.providerBlock("credential env LLMF_REBIND_KEY"))))
	stopAtCleanup(t)
	page := func(origin string) []string {
		return []string{"Origin", origin, "Sec-Fetch-Site", "same-origin"}
	}
	with := func(host string, h ...string) []string { return append([]string{"Host", host}, h...) }
	cases := []struct {
		name, line string
		header     []string
		want       int
	}{
		{"HTTP/1.0 client without Host", "POST /v1/messages HTTP/1.0", nil, 200},
		{"HTTP/1.0 page without Host", "POST /v1/messages HTTP/1.0", []string{"Origin", "http://attacker.example:" + port}, 403},
		{"absolute-form naming the page's host", "POST http://attacker.example:" + port + "/v1/messages HTTP/1.1",
			with("127.0.0.1:"+port, page("http://attacker.example:"+port)...), 403},
		{"absolute-form, Host naming the page's", "POST http://attacker.example:" + port + "/v1/messages HTTP/1.1",
			with("attacker.example:"+port, page("http://attacker.example:"+port)...), 403},
		{"page at 127.1", "POST /v1/messages HTTP/1.1", with("127.1:"+port, page("http://127.1:"+port)...), 403},
		{"page at 0x7f.1", "POST /v1/messages HTTP/1.1", with("0x7f.1:"+port, page("http://0x7f.1:"+port)...), 403},
		{"page under a trailing dot", "POST /v1/messages HTTP/1.1", with("attacker.example.:"+port, page("http://attacker.example.:"+port)...), 403},
		{"page under a zone", "POST /v1/messages HTTP/1.1", with("[fe80::1%25eth0]:"+port, page("http://[fe80::1%25eth0]:"+port)...), 403},
		{"page at [::ffff:7f00:1]", "POST /v1/messages HTTP/1.1", with("[::ffff:7f00:1]:"+port, page("http://[::ffff:7f00:1]:"+port)...), 200},
		{"page at LOCALHOST", "POST /v1/messages HTTP/1.1", with("LOCALHOST:"+port, page("http://localhost:"+port)...), 200},
		{"page at localhost.", "POST /v1/messages HTTP/1.1", with("localhost.:"+port, page("http://localhost.:"+port)...), 200},
		{"client at 0x7f.1", "POST /v1/messages HTTP/1.1", with("0x7f.1:" + port), 200},
		{"client under any name", "POST /v1/messages HTTP/1.1", with("attacker.example:" + port), 200},
	}
	hits := 0
	for _, c := range cases {
		status, body := wireRequest(t, addr, c.line, c.header...)
		if status != c.want {
			t.Errorf("%s: %d %s, want %d", c.name, status, body, c.want)
		}
		if status == 200 {
			hits++
		}
		if up.Hits() != hits {
			t.Fatalf("%s: upstream hits %d, want %d", c.name, up.Hits(), hits)
		}
	}
}
