package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/listeners"
)

// Warnings Caddy logs when it has started a config (startcheck.go).

// startCheckConfig is a whole Caddyfile: admin on adminAddr, a JSON log
// into logFile, then the sites.
func startCheckConfig(adminAddr, logFile string, sites ...string) string {
	return fmt.Sprintf(`{
	admin %s
	auto_https off
	persist_config off
	log {
		output file %s
		format json
	}
}
%s
`, adminAddr, logFile, strings.Join(sites, "\n"))
}

// loadLogged loads a whole Caddyfile into this process's Caddy, stopped
// when the test ends, and returns the warnings it logged while loading.
func loadLogged(t *testing.T, adminAddr string, sites ...string) []map[string]any {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	if err := caddy.Load(adapt(t, startCheckConfig(adminAddr, logFile, sites...)), true); err != nil {
		t.Fatalf("loading config: %v", err)
	}
	stopAtCleanup(t)
	return warningsIn(t, logFile)
}

// warningsIn reads the warn-level entries of a JSON log file.
func warningsIn(t *testing.T, logFile string) []map[string]any {
	t.Helper()
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(string(raw), "\n") {
		var e map[string]any
		if json.Unmarshal([]byte(line), &e) == nil && e["level"] == "warn" {
			out = append(out, e)
		}
	}
	return out
}

// withMsg keeps the warnings whose message contains part.
func withMsg(warnings []map[string]any, part string) []map[string]any {
	var out []map[string]any
	for _, w := range warnings {
		if msg, _ := w["msg"].(string); strings.Contains(msg, part) {
			out = append(out, w)
		}
	}
	return out
}

const (
	hostlessWarning   = "answers requests for any host name"
	wrapCredWarning   = "wrap mode: the wrapped reverse_proxy sets a credential"
	sharedPortWarning = "another process listens on an address this Caddy listens on"
)

// A site with no host in its address answers any Host: a page of
// attacker.example whose name resolves to 127.0.0.1 (DNS rebinding)
// reaches the handler as a page of the site itself, and the check for
// other sites' pages lets it through. Caddy warns at start, naming the
// server; a site that names its host turns the page away and gets no
// warning, nor does a handler that spends no credential of the proxy's
// without a client key.
func TestHostlessSiteWarns(t *testing.T) {
	t.Setenv("LLMF_START_KEY", "sk-start")
	up := newUpstream(t, "rb", replyMessage("served"))
	provider := failoverSite(up.providerBlock("credential env LLMF_START_KEY"))
	port := freePort(t)
	hostless := fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n%s\n}", port, provider)

	warned := withMsg(loadLogged(t, freeAddr(t), hostless), hostlessWarning)
	if len(warned) != 1 {
		t.Fatalf("%d hostless-site warnings; want 1", len(warned))
	}
	if w := warned[0]; w["server"] != "srv0" || fmt.Sprint(w["listen"]) != fmt.Sprintf("[127.0.0.1:%d]", port) ||
		!strings.Contains(w["msg"].(string), "http://127.0.0.1:PORT") || !strings.Contains(w["msg"].(string), "DNS rebinding") {
		t.Errorf("warning %v; want it to name server srv0, its listen address and what to write", w)
	}
	// what the warning is about: a rebinding page reaches the site;
	// llm_failover itself refuses it
	if res := rebindingRequest(t, port); res != http.StatusForbidden || up.Hits() != 0 {
		t.Fatalf("rebinding request to a hostless site: %d, %d upstream hits; want 403 and none", res, up.Hits())
	}
	res := post(t, fmt.Sprintf("http://127.0.0.1:%d/v1/messages", port), simpleRequest)
	if readAll(t, res); res.StatusCode != http.StatusOK || up.Hits() != 1 {
		t.Fatalf("a client on this machine: %d, %d upstream hits", res.StatusCode, up.Hits())
	}

	// a port of its own: a request right after a reload on the same port can
	// meet the old listener closing
	port = freePort(t)
	named := fmt.Sprintf("http://127.0.0.1:%d, http://localhost:%d {\n\tbind 127.0.0.1\n%s\n}", port, port, provider)
	if warned := withMsg(loadLogged(t, freeAddr(t), named), hostlessWarning); len(warned) != 0 {
		t.Fatalf("a site naming its host: %v; want no warning", warned)
	}
	if res := rebindingRequest(t, port); up.Hits() != 1 {
		t.Fatalf("rebinding request to a site naming its host: %d, reached the upstream", res)
	}

	for name, body := range map[string]string{
		"client keys": failoverSite(up.providerBlock("credential env LLMF_START_KEY"),
			"\t\tclient alice {\n\t\t\tkey env LLMF_START_KEY\n\t\t}\n"),
		"passthrough":                    failoverSite(up.providerBlock("credential passthrough")),
		"allow_remote":                   failoverSite(up.providerBlock("credential env LLMF_START_KEY"), "\t\tallow_remote\n"),
		"wrap mode without a credential": "\tllm_failover\n\treverse_proxy " + up.URL + " {\n\t\tlb_policy llm_failover\n\t}",
	} {
		site := fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n%s\n}", port, body)
		if warned := withMsg(loadLogged(t, freeAddr(t), site), hostlessWarning); len(warned) != 0 {
			t.Errorf("%s: %v; want no warning", name, warned)
		}
	}

	// two such sites: one warning each, whatever number of handlers the
	// config has (each handler would otherwise run the checks again)
	twoSites := []string{
		fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n\thandle /a/* {\n%s\n\t}\n%s\n}", freePort(t), provider, provider),
		fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n%s\n}", freePort(t), provider),
	}
	warned = withMsg(loadLogged(t, freeAddr(t), twoSites...), hostlessWarning)
	if len(warned) != 2 || warned[0]["server"] == warned[1]["server"] {
		t.Fatalf("two hostless sites, three handlers: %v; want one warning per server", warned)
	}

	// wrap mode whose reverse_proxy sets the credential spends it for a
	// rebinding page just the same
	wrap := fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n\tllm_failover\n\treverse_proxy %s {\n\t\tlb_policy llm_failover\n"+
		"\t\theader_up x-api-key {env.LLMF_START_KEY}\n\t}\n}", port, up.URL)
	if warned := withMsg(loadLogged(t, freeAddr(t), wrap), hostlessWarning); len(warned) != 1 {
		t.Fatalf("wrap mode with a credential on a hostless site: %d warnings; want 1", len(warned))
	}
}

// rebindingRequest is what a page of attacker.example sends once its name
// resolves to 127.0.0.1: its own host and origin, same-origin to the
// browser. It returns the status.
func rebindingRequest(t *testing.T, port int) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:"+strconv.Itoa(port)+"/v1/messages", strings.NewReader(simpleRequest))
	req.Host = "attacker.example:" + strconv.Itoa(port)
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Origin", "http://attacker.example:"+strconv.Itoa(port))
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	res, err := freshConnClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, res.Body)
	res.Body.Close()
	return res.StatusCode
}

// Wrap mode whose reverse_proxy sets a credential with header_up spends
// it for any client that reaches the site: Caddy warns at start, naming
// the server and the header, unless client keys say who may, allow_remote
// says anyone may (which warns on its own), or the site listens on
// loopback only.
func TestWrapModeCredentialWarns(t *testing.T) {
	up := newUpstream(t, "wr", replyMessage("served"))
	site := func(extra, headerUp string) string {
		return fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\tllm_failover {\n%s\t}\n\treverse_proxy %s {\n"+
			"\t\tlb_policy llm_failover\n%s\t}\n}", freePort(t), extra, up.URL, headerUp)
	}
	t.Setenv("LLMF_WRAP_KEY", "sk-wrap")
	apiKey := "\t\theader_up x-api-key {env.LLMF_WRAP_KEY}\n"

	// listening on loopback only: no client elsewhere can reach it
	if warned := withMsg(loadLogged(t, freeAddr(t), site("", apiKey)), wrapCredWarning); len(warned) != 0 {
		t.Fatalf("a site on loopback only: %v; want no warning", warned)
	}

	// tests listen on loopback only: stand in for a server other machines reach
	reachesOtherMachines = func([]string) bool { return true }
	t.Cleanup(func() { reachesOtherMachines = listensBeyondLoopback })

	warned := withMsg(loadLogged(t, freeAddr(t), site("", apiKey)), wrapCredWarning)
	if len(warned) != 1 {
		t.Fatalf("%d wrap-mode credential warnings; want 1", len(warned))
	}
	if w := warned[0]; w["server"] != "srv0" || w["header"] != "X-Api-Key" || !strings.Contains(w["msg"].(string), "client NAME") ||
		!strings.Contains(w["msg"].(string), "bind 127.0.0.1") {
		t.Errorf("warning %v; want it to name the server, the header and what to do", w)
	}
	authorization := "\t\theader_up Authorization \"Bearer {env.LLMF_WRAP_KEY}\"\n"
	if warned := withMsg(loadLogged(t, freeAddr(t), site("", authorization)), wrapCredWarning); len(warned) != 1 || warned[0]["header"] != "Authorization" {
		t.Fatalf("Authorization set with header_up: %v; want one warning naming it", warned)
	}

	for name, s := range map[string]string{
		"client keys":        site("\t\tclient alice {\n\t\t\tkey env LLMF_WRAP_KEY\n\t\t}\n", apiKey),
		"allow_remote":       site("\t\tallow_remote\n", apiKey),
		"no credential":      site("", "\t\theader_up X-Request-Source gateway\n"),
		"the client's own":   site("", "\t\theader_up Authorization {http.request.header.X-Upstream-Auth}\n"),
		"no llm_failover":    fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n\treverse_proxy %s {\n\t\tlb_policy llm_failover\n%s\t}\n}", freePort(t), up.URL, apiKey),
		"another lb_policy":  strings.Replace(site("", apiKey), "lb_policy llm_failover", "lb_policy first", 1),
		"provider mode only": fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\n}", freePort(t), failoverSite(up.providerBlock("credential env LLMF_WRAP_KEY"))),
	} {
		if warned := withMsg(loadLogged(t, freeAddr(t), s), wrapCredWarning); len(warned) != 0 {
			t.Errorf("%s: %v; want no warning", name, warned)
		}
	}
}

func TestListensBeyondLoopback(t *testing.T) {
	for _, tc := range []struct {
		listen []string
		want   bool
	}{
		{[]string{":4181"}, true},
		{[]string{"0.0.0.0:4181"}, true},
		{[]string{"[::]:4181"}, true},
		{[]string{"127.0.0.1:4181", "192.0.2.7:4181"}, true},
		{[]string{"gateway.example:4181"}, true},
		{nil, true},
		{[]string{"127.0.0.1:4181", "[::1]:4181"}, false},
		{[]string{"localhost:4181"}, false},
		{[]string{"unix//run/llm.sock"}, false},
		{[]string{"tcp/127.0.0.2:4181"}, false},
	} {
		if got := listensBeyondLoopback(tc.listen); got != tc.want {
			t.Errorf("listensBeyondLoopback(%q) = %v; want %v", tc.listen, got, tc.want)
		}
	}
}

// Another Caddy already on the admin and site addresses: both bind them
// (SO_REUSEPORT), and the second warns for each, naming the other process.
func TestSharedPortWarns(t *testing.T) {
	skipWithoutSockDiag(t)
	adminAddr, siteURL := freeAddr(t), freeURL(t)
	child := startChild(t, fmt.Sprintf("{\n\tadmin %s\n\tauto_https off\n\tpersist_config off\n}\n%s {\n\tbind 127.0.0.1\n\trespond /healthz-probe ok\n}\n",
		adminAddr, siteURL), siteURL)

	t.Setenv("LLMF_START_KEY", "sk-start")
	site := siteURL + " {\n\tbind 127.0.0.1\n" + failoverSite("\t\tprovider a {\n\t\t\tupstream http://127.0.0.1:1\n\t\t\tcredential env LLMF_START_KEY\n\t\t}\n") + "\n}"
	warned := withMsg(loadLogged(t, adminAddr, site), sharedPortWarning)
	byAddress := make(map[string]map[string]any)
	for _, w := range warned {
		byAddress[fmt.Sprint(w["address"])] = w
	}
	siteAddr := strings.TrimPrefix(siteURL, "http://")
	if len(warned) != 2 || byAddress[adminAddr] == nil || byAddress[siteAddr] == nil {
		t.Fatalf("warnings %v; want one for the admin address %s and one for the site %s", warned, adminAddr, siteAddr)
	}
	other := fmt.Sprintf("pid %d (", child.Process.Pid)
	for addr, w := range byAddress {
		if !strings.HasPrefix(fmt.Sprint(w["other"]), other) {
			t.Errorf("%s: other %v; want the child, %s...)", addr, w["other"], other)
		}
	}
	if l := fmt.Sprint(byAddress[siteAddr]["listener"]); !strings.Contains(l, "site, server srv0") {
		t.Errorf("site listener named %q", l)
	}
	if l := fmt.Sprint(byAddress[adminAddr]["listener"]); !strings.Contains(l, "admin endpoint") {
		t.Errorf("admin listener named %q", l)
	}
}

// A reload keeps this Caddy's own listeners open while the new config
// starts on the same addresses: they are its own, so no port warning,
// though the checks do run (the reload adds a site that warns otherwise).
func TestReloadDoesNotWarnOfItsOwnPorts(t *testing.T) {
	skipWithoutSockDiag(t)
	t.Setenv("LLMF_START_KEY", "sk-start")
	adminAddr, siteURL := freeAddr(t), freeURL(t)
	body := failoverSite("\t\tprovider a {\n\t\t\tupstream http://127.0.0.1:1\n\t\t\tcredential env LLMF_START_KEY\n\t\t}\n")
	site := siteURL + " {\n\tbind 127.0.0.1\n" + body + "\n}"
	if warned := withMsg(loadLogged(t, adminAddr, site), sharedPortWarning); len(warned) != 0 {
		t.Fatalf("first load: %v; want no port warning", warned)
	}

	logFile := filepath.Join(t.TempDir(), "reload.log")
	hostless := fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n%s\n}", freePort(t), body)
	cfg := adapt(t, startCheckConfig(adminAddr, logFile, site, hostless))
	res, err := http.Post("http://"+adminAddr+"/load", "application/json", bytes.NewReader(cfg))
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := io.ReadAll(res.Body); res.StatusCode != http.StatusOK {
		t.Fatalf("POST /load: %d %s", res.StatusCode, b)
	}
	res.Body.Close()
	warnings := warningsIn(t, logFile)
	if len(withMsg(warnings, hostlessWarning)) != 1 {
		t.Fatalf("reload: warnings %v; want the hostless site's, which shows the checks ran", warnings)
	}
	if warned := withMsg(warnings, sharedPortWarning); len(warned) != 0 {
		t.Fatalf("reload: %v; want no port warning for this Caddy's own listeners", warned)
	}
}

// skipWithoutSockDiag skips a test of the port check where it cannot run:
// off Linux, or where the kernel's socket diagnostics are not reachable.
func skipWithoutSockDiag(t *testing.T) {
	t.Helper()
	if _, err := listeners.Listening(); err != nil {
		t.Skipf("the port check cannot run here (%s): %v", runtime.GOOS, err)
	}
}
