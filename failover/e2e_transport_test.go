package failover

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// testCA is a private certificate authority made for one test: it signs
// the upstream's server certificate and the proxy's client certificate.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	pemPath string
	pool    *x509.CertPool
}

func newTestCA(t *testing.T, dir string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "llm test private CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	ca := &testCA{cert: cert, key: key, pemPath: filepath.Join(dir, "ca.pem"), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	writePEM(t, ca.pemPath, "CERTIFICATE", der)
	return ca
}

// issue signs a leaf certificate for the DNS names given (server) or, with
// none, a client certificate; it returns it with its key, and writes both
// as PEM files named base.pem and base.key.
func (ca *testCA) issue(t *testing.T, dir, base string, dnsNames ...string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: base},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     dnsNames,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(dnsNames) == 0 {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(dir, base+".pem"), "CERTIFICATE", der)
	writePEM(t, filepath.Join(dir, base+".key"), "EC PRIVATE KEY", keyDER)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// privateUpstream is an Anthropic-speaking upstream on 127.0.0.1 whose
// certificate, signed by ca, names only llm.internal, and which accepts
// only clients with a certificate signed by ca. It counts the requests
// that got through the handshake.
func privateUpstream(t *testing.T, ca *testCA, dir string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var served atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		replyMessage("from the private upstream")(w, r, nil)
	}))
	srv.TLS = &tls.Config{
		Certificates: []tls.Certificate{ca.issue(t, dir, "server", "llm.internal")},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    ca.pool,
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &served
}

// connectProxy is a forward proxy on loopback that opens CONNECT tunnels
// and counts them; any other method is refused.
type connectProxy struct {
	*httptest.Server
	tunnels atomic.Int32
	mu      sync.Mutex
	targets []string
}

func newConnectProxy(t *testing.T) *connectProxy {
	t.Helper()
	cp := &connectProxy{}
	cp.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodConnect {
			http.Error(w, "CONNECT only", http.StatusMethodNotAllowed)
			return
		}
		upstream, err := net.DialTimeout("tcp", r.Host, 5*time.Second)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		hj, ok := w.(http.Hijacker)
		if !ok {
			upstream.Close()
			http.Error(w, "no hijack", http.StatusInternalServerError)
			return
		}
		client, buf, err := hj.Hijack()
		if err != nil {
			upstream.Close()
			return
		}
		cp.tunnels.Add(1)
		cp.mu.Lock()
		cp.targets = append(cp.targets, r.Host)
		cp.mu.Unlock()
		_, _ = client.Write([]byte("HTTP/1.1 200 Connection established\r\n\r\n"))
		go func() {
			_, _ = io.Copy(upstream, buf)
			upstream.Close()
		}()
		_, _ = io.Copy(client, upstream)
		client.Close()
	}))
	t.Cleanup(cp.Close)
	return cp
}

// A provider behind a private CA, with mutual TLS and a certificate for
// another name than the address dialled. Three providers point at it, in
// order: without `transport http` (the CA is unknown), with the CA and the
// name but no client certificate, and with all three. The first two fail
// their handshakes and are failed over; the third is served.
func TestTransportPrivateCAAndMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	ca.issue(t, dir, "client")
	srv, served := privateUpstream(t, ca, dir)

	provider := func(name string, transport ...string) string {
		block := "\t\tprovider " + name + " {\n\t\t\tupstream " + srv.URL + "\n"
		if transport != nil {
			block += "\t\t\ttransport http {\n" + indentLines(transport, "\t\t\t\t") + "\t\t\t}\n"
		}
		return block + "\t\t}\n"
	}
	trust := "tls_trust_pool file " + ca.pemPath
	clientAuth := "tls_client_auth " + filepath.Join(dir, "client.pem") + " " + filepath.Join(dir, "client.key")
	p := startProxy(t, failoverSite(
		provider("tp_untrusted"),
		provider("tp_no_client_cert", trust, "tls_server_name llm.internal"),
		provider("tp_trusted", trust, clientAuth, "tls_server_name llm.internal"),
	))
	msg, raw, err := sendMessage(sdkClient(p), "hi")
	if err != nil {
		t.Fatal(err)
	}
	if textOf(msg) != "from the private upstream" || served.Load() != 1 || raw.Header.Get("X-LLM-Attempts") != "3" {
		t.Fatalf("answer %q served=%d attempts=%s; want the third provider to answer on the third attempt",
			textOf(msg), served.Load(), raw.Header.Get("X-LLM-Attempts"))
	}
	for _, name := range []string{"tp_untrusted", "tp_no_client_cert"} {
		if s := snapshot(t, name); s.State != breaker.Open || s.LastClass != classify.Unreachable {
			t.Fatalf("%s: %+v; want open, unreachable (its handshake failed)", name, s)
		}
	}
	if s := snapshot(t, "tp_trusted"); s.State != breaker.Closed {
		t.Fatalf("tp_trusted: %+v", s)
	}
}

// A provider reached through a forward proxy: the proxy opens one tunnel
// to the provider's address, and the answer comes through it.
func TestTransportForwardProxy(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	ca.issue(t, dir, "client")
	srv, served := privateUpstream(t, ca, dir)
	fwd := newConnectProxy(t)

	site := failoverSite("\t\tprovider tp_proxied {\n\t\t\tupstream " + srv.URL + "\n" +
		"\t\t\tdial_timeout 3s\n" +
		"\t\t\ttransport http {\n" +
		"\t\t\t\tforward_proxy_url " + fwd.URL + "\n" +
		"\t\t\t\ttls_trust_pool file " + ca.pemPath + "\n" +
		"\t\t\t\ttls_client_auth " + filepath.Join(dir, "client.pem") + " " + filepath.Join(dir, "client.key") + "\n" +
		"\t\t\t\ttls_server_name llm.internal\n" +
		"\t\t\t}\n\t\t}\n")
	p := startProxy(t, site)
	for i := 0; i < 2; i++ {
		msg, _, err := sendMessage(sdkClient(p), "hi")
		if err != nil || textOf(msg) != "from the private upstream" {
			t.Errorf("request %d through the forward proxy: %v %q", i, err, textOf(msg))
		}
	}
	fwd.mu.Lock()
	targets := append([]string(nil), fwd.targets...)
	fwd.mu.Unlock()
	// the connection is kept alive: two requests, one tunnel
	if fwd.tunnels.Load() != 1 || served.Load() != 2 || len(targets) != 1 || targets[0] != srv.Listener.Addr().String() {
		t.Fatalf("tunnels=%d targets=%v served=%d; want 1 tunnel to %s and 2 requests served",
			fwd.tunnels.Load(), targets, served.Load(), srv.Listener.Addr())
	}
}

// tls_insecure_skip_verify works and says at start that it is insecure.
func TestTransportInsecureSkipVerifyWarns(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, dir)
	ca.issue(t, dir, "client")
	srv, served := privateUpstream(t, ca, dir)
	logFile := filepath.Join(dir, "log.json")
	site := failoverSite("\t\tprovider tp_insecure {\n\t\t\tupstream " + srv.URL + "\n" +
		"\t\t\ttransport http {\n" +
		"\t\t\t\ttls_insecure_skip_verify\n" +
		"\t\t\t\ttls_client_auth " + filepath.Join(dir, "client.pem") + " " + filepath.Join(dir, "client.key") + "\n" +
		"\t\t\t}\n\t\t}\n")
	p, _ := startProxyWithGlobals(t, debugLogTo(logFile), site)
	msg, _, err := sendMessage(sdkClient(p), "hi")
	if err != nil || textOf(msg) != "from the private upstream" || served.Load() != 1 {
		t.Fatalf("%v %q served=%d", err, textOf(msg), served.Load())
	}
	warned := false
	for _, line := range strings.Split(readFileString(t, logFile), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["level"] == "warn" && m["provider"] == "tp_insecure" &&
			strings.Contains(m["msg"].(string), "tls_insecure_skip_verify") {
			warned = true
		}
	}
	if !warned {
		t.Fatalf("no warning naming tls_insecure_skip_verify and the provider in:\n%s", readFileString(t, logFile))
	}
}

// The JSON config holds Caddy's own transport JSON under `transport`, and
// a provider without one adapts as before; the provider's timeouts are
// the transport's, and a JSON config that sets one twice is refused.
func TestTransportJSONShape(t *testing.T) {
	cfg := adapt(t, ":8080 {\n\tllm_failover {\n\t\tprovider a {\n\t\t\tupstream https://llm.example\n"+
		"\t\t\theader_timeout 2m\n"+
		"\t\t\ttransport http {\n\t\t\t\ttls_server_name gw.internal\n\t\t\t\tversions 1.1\n\t\t\t}\n\t\t}\n\t}\n}\n")
	if !strings.Contains(string(cfg), `"transport":{"tls":{"server_name":"gw.internal"},"versions":["1.1"]}`) {
		t.Fatalf("adapted config lacks the transport JSON:\n%s", cfg)
	}

	var p Provider
	if err := json.Unmarshal([]byte(`{"name":"a","upstream":"https://llm.example","header_timeout":"2m",
		"transport":{"tls":{"server_name":"gw.internal"},"dial_timeout":"1s"}}`), &p); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatalf("valid transport refused: %v", err)
	}
	var err error
	if p.upstreamURL, err = parseUpstream(p.Upstream); err != nil {
		t.Fatal(err)
	}
	tr, err := providerTransport(&p)
	if err != nil {
		t.Fatal(err)
	}
	if time.Duration(tr.ResponseHeaderTimeout) != 2*time.Minute || time.Duration(tr.DialTimeout) != time.Second ||
		tr.TLS == nil || tr.TLS.ServerName != "gw.internal" {
		t.Fatalf("merged transport: header %v dial %v tls %+v", time.Duration(tr.ResponseHeaderTimeout), time.Duration(tr.DialTimeout), tr.TLS)
	}
	if p.Transport.ResponseHeaderTimeout != 0 {
		t.Fatal("building the transport changed the config")
	}
	p.DialTimeout = 5_000_000_000
	if err := p.Validate(); err == nil || !strings.Contains(err.Error(), "both dial_timeout and transport http's dial_timeout") {
		t.Fatalf("dial timeout set twice: %v", err)
	}
}
