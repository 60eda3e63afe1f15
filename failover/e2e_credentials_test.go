package failover

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// End-to-end tests of the credential sources: a real Caddy, fake providers
// and a fake OAuth token endpoint on loopback, the official SDK as client.

// What a client sends of its own. sdkClient sends credClientAPIKey as
// x-api-key; credClientOptions adds the bearer token and betas.
const (
	credClientAPIKey = "sk-client-key-must-not-leak"
	credClientBearer = "sk-ant-oat01-client-token-must-not-leak"
	credClientBetas  = "oauth-2025-04-20,interleaved-thinking-2025-05-14"
)

// credClientOptions makes the SDK send a client OAuth token and betas as
// Claude Code does, on top of sdkClient's x-api-key.
func credClientOptions(betas string) []option.RequestOption {
	return []option.RequestOption{
		option.WithAuthToken(credClientBearer),
		option.WithHeader("anthropic-beta", betas),
	}
}

// credTokenEndpoint is a fake OAuth token endpoint: a fakeUpstream that
// answers with handle, counts its hits and keeps each refresh request.
type credTokenEndpoint struct{ *fakeUpstream }

func newCredTokenEndpoint(t *testing.T, handle http.HandlerFunc) *credTokenEndpoint {
	t.Helper()
	return &credTokenEndpoint{newUpstream(t, "token endpoint", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		handle(w, r)
	})}
}

// request is the JSON body of the i-th refresh request, nil if there is
// none.
func (e *credTokenEndpoint) request(i int) map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	if i >= len(e.bodies) {
		return nil
	}
	var req map[string]any
	_ = json.Unmarshal(e.bodies[i], &req)
	return req
}

// issueToken answers a refresh with a new token pair, after delay.
func issueToken(access, refresh string, expiresIn int, delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			time.Sleep(delay)
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"token_type": "Bearer", "access_token": access, "refresh_token": refresh,
			"expires_in": expiresIn, "scope": "user:inference user:profile",
		})
	}
}

// refuseRefresh answers a refresh with an OAuth error.
func refuseRefresh(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, `{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}`)
	}
}

// writeClaudeCredentials writes a Claude Code credentials file, with keys
// this plugin does not know about, and returns its content.
func writeClaudeCredentials(t *testing.T, path, access, refresh string, expiresAt time.Time, perm os.FileMode) []byte {
	t.Helper()
	doc := map[string]any{
		"claudeAiOauth": map[string]any{
			"accessToken":      access,
			"refreshToken":     refresh,
			"expiresAt":        expiresAt.UnixMilli(),
			"scopes":           []string{"user:inference", "user:profile"},
			"subscriptionType": "max",
			"rateLimitTier":    "default_claude_max_20x",
		},
		"mcpOAuth":          map[string]any{"linear|4f2a": map[string]any{"serverName": "linear", "expiresAt": 0}},
		"futureTopLevelKey": []any{1, "two", true},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return b
}

// claudeCredentialLines configures `credential claude` for providerBlock.
func claudeCredentialLines(file, tokenURL string) []string {
	return []string{
		"credential claude {",
		"\tfile " + file,
		"\ttoken_url " + tokenURL,
		"\trefresh_before 5m",
		"}",
	}
}

// askAsClaudeCode sends one message with the client credentials and betas
// Claude Code sends, and wants the answer want.
func askAsClaudeCode(t *testing.T, p *proxy, want string) {
	t.Helper()
	msg, err := sdkClient(p, credClientOptions(credClientBetas)...).Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != want {
		t.Fatalf("%v %v; want %q", msg, err, want)
	}
}

// wantAPIKeyOnly fails t unless u's last request carried key as x-api-key
// and no Authorization.
func wantAPIKeyOnly(t *testing.T, u *fakeUpstream, key string) {
	t.Helper()
	if h := u.lastHeader(); h.Get("X-Api-Key") != key || h.Get("Authorization") != "" {
		t.Fatalf("%s got x-api-key %q, Authorization %q", u.name, h.Get("X-Api-Key"), h.Get("Authorization"))
	}
}

// claudeSub is a subscription provider, sub, signed in through a Claude
// Code credentials file that a fake token endpoint refreshes, and backup,
// a provider with an API key from the environment.
type claudeSub struct {
	tokens      *credTokenEndpoint
	creds       string // the credentials file
	sub, backup *fakeUpstream
}

// newClaudeSub writes the credentials file with the access and refresh
// tokens, expiring at expiresAt, and starts sub (named subName, answering
// with reply) and backup (named backupName, answering "from <backupName>").
func newClaudeSub(t *testing.T, tokens *credTokenEndpoint, access, refresh string, expiresAt time.Time,
	subName string, reply func(w http.ResponseWriter, r *http.Request, body []byte), backupName string) *claudeSub {
	t.Helper()
	t.Setenv("LLMF_CRED_BACKUP_KEY", "sk-backup")
	c := &claudeSub{tokens: tokens, creds: filepath.Join(t.TempDir(), ".credentials.json")}
	writeClaudeCredentials(t, c.creds, access, refresh, expiresAt, 0o600)
	c.sub = newUpstream(t, subName, reply)
	c.backup = newUpstream(t, backupName, replyMessage("from "+backupName))
	return c
}

func (c *claudeSub) subBlock() string {
	return c.sub.providerBlock(claudeCredentialLines(c.creds, c.tokens.URL)...)
}

func (c *claudeSub) backupBlock() string {
	return c.backup.providerBlock("credential env LLMF_CRED_BACKUP_KEY")
}

// site tries sub first, then backup.
func (c *claudeSub) site() string { return failoverSite(c.subBlock(), c.backupBlock()) }

// wantSubAlone fails t unless sub is closed and backup was never
// contacted.
func (c *claudeSub) wantSubAlone(t *testing.T) {
	t.Helper()
	if n := c.backup.Hits(); n != 0 {
		t.Fatalf("backup contacted %d times", n)
	}
	if s := snapshot(t, c.sub.name); s.State != breaker.Closed {
		t.Fatalf("%s: %+v, want closed", c.sub.name, s)
	}
}

// revokedToken is the stored token newRevokedClaudeSub's sub refuses.
const revokedToken = "sk-ant-oat01-revoked-early"

// newRevokedClaudeSub is a claudeSub whose sub refuses the stored token as
// revoked (401) and answers "from <subName>" to newToken, the token the
// token endpoint renews it to.
func newRevokedClaudeSub(t *testing.T, newToken, subName, backupName string) *claudeSub {
	t.Helper()
	return newClaudeSub(t, newCredTokenEndpoint(t, issueToken(newToken, "sk-ant-ort01-r2", 28800, 0)),
		revokedToken, "sk-ant-ort01-r1", time.Now().Add(time.Hour),
		subName, func(w http.ResponseWriter, r *http.Request, body []byte) {
			if r.Header.Get("Authorization") != "Bearer "+newToken {
				replyError(401, "authentication_error", "OAuth token has been revoked")(w, r, body)
				return
			}
			replyMessage("from "+subName)(w, r, body)
		}, backupName)
}

// writeExecutable writes a shell script.
func writeExecutable(t *testing.T, dir, name, script string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeSecretFile replaces path with content through a rename, as
// Kubernetes and editors do (a new inode).
func writeSecretFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// fakeSecurity puts a fake macOS `security` first on PATH that prints
// value for `find-generic-password -s service -w` and records its calls.
func fakeSecurity(t *testing.T, service, value string) (callsFile string) {
	t.Helper()
	dir := t.TempDir()
	callsFile = filepath.Join(dir, "security.calls")
	writeExecutable(t, dir, "security", fmt.Sprintf(`#!/bin/sh
echo "$*" >> %q
if [ "$1" = find-generic-password ] && [ "$2" = -s ] && [ "$3" = %q ] && [ "$4" = -w ]; then
	echo %q
	exit 0
fi
echo "security: SecKeychainSearchCopyNext: The specified item could not be found in the keychain." >&2
exit 44
`, callsFile, service, value))
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	return callsFile
}

func headersOf(u *fakeUpstream) []http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]http.Header(nil), u.headers...)
}

// betaSet is the set of values in the anthropic-beta header(s).
func betaSet(h http.Header) map[string]bool {
	set := map[string]bool{}
	for _, v := range h.Values("Anthropic-Beta") {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				set[item] = true
			}
		}
	}
	return set
}

// headerMentions reports which of the secrets appear in any header value.
func headerMentions(h http.Header, secrets ...string) []string {
	var found []string
	for _, s := range secrets {
		for _, vs := range h {
			for _, v := range vs {
				if strings.Contains(v, s) {
					found = append(found, s)
				}
			}
		}
	}
	return found
}

// startProxyWithGlobals is startProxy with extra global options (such as
// a log block) added to the harness's own. It returns the Caddyfile it
// loaded.
func startProxyWithGlobals(t *testing.T, globals, siteBody string) (*proxy, string) {
	t.Helper()
	p := newProxy(t)
	text := p.caddyfile(siteBody)
	if !strings.HasPrefix(text, "{\n") {
		t.Fatalf("the harness's Caddyfile does not open with a global options block:\n%s", text)
	}
	text = "{\n" + globals + text[len("{\n"):]
	p.load(text)
	stopAtCleanup(t)
	return p, text
}

// debugLogTo is a global log option that writes every entry, debug
// included, as JSON to path.
func debugLogTo(path string) string {
	return "\tlog {\n\t\toutput file " + path + "\n\t\tformat json\n\t\tlevel DEBUG\n\t}\n"
}

func readFileString(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// 1. A token about to expire is refreshed before the request is sent; the
// new token goes upstream as a bearer token with the OAuth beta merged
// into the client's betas, and is written back keeping every other key.
func TestCredClaudeRefreshesNearExpiry(t *testing.T) {
	useFakeClock(t)
	const (
		oldToken   = "sk-ant-oat01-old-access-token"
		oldRefresh = "sk-ant-ort01-old-refresh-token"
		newToken   = "sk-ant-oat01-new-access-token"
		newRefresh = "sk-ant-ort01-new-refresh-token"
	)
	tokens := newCredTokenEndpoint(t, issueToken(newToken, newRefresh, 28800, 0))
	creds := filepath.Join(t.TempDir(), ".credentials.json")
	before := writeClaudeCredentials(t, creds, oldToken, oldRefresh, time.Now().Add(2*time.Minute), 0o644)
	sub := newUpstream(t, "sub", replyMessage("from sub"))
	p := startProxy(t, failoverSite(sub.providerBlock(claudeCredentialLines(creds, tokens.URL)...)))

	client := sdkClient(p, option.WithHeader("anthropic-beta", "interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"))
	msg, err := client.Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != "from sub" {
		t.Fatalf("got %v, %v; want sub's answer", msg, err)
	}
	if tokens.Hits() != 1 {
		t.Fatalf("token endpoint hits = %d, want 1", tokens.Hits())
	}
	req := tokens.request(0)
	if req["grant_type"] != "refresh_token" || req["refresh_token"] != oldRefresh || req["client_id"] == "" {
		t.Fatalf("refresh request = %v", req)
	}
	h := sub.lastHeader()
	if got := h.Get("Authorization"); got != "Bearer "+newToken {
		t.Fatalf("upstream Authorization = %q, want the refreshed token", got)
	}
	if v := h.Values("X-Api-Key"); len(v) != 0 {
		t.Fatalf("upstream got x-api-key %q alongside the OAuth token", v)
	}
	betas := betaSet(h)
	for _, want := range []string{"oauth-2025-04-20", "interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"} {
		if !betas[want] {
			t.Fatalf("anthropic-beta %q lacks %s", h.Values("Anthropic-Beta"), want)
		}
	}

	// the refreshed token was written back: unknown keys kept, mode 0600
	info, err := os.Stat(creds)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Fatalf("rewritten credentials file has mode %v, want 0600", info.Mode().Perm())
	}
	var was, now map[string]json.RawMessage
	_ = json.Unmarshal(before, &was)
	if err := json.Unmarshal([]byte(readFileString(t, creds)), &now); err != nil {
		t.Fatalf("rewritten file is not JSON: %v", err)
	}
	for _, k := range []string{"mcpOAuth", "futureTopLevelKey"} {
		if !bytes.Equal(was[k], now[k]) {
			t.Fatalf("key %s: was %s, now %s", k, was[k], now[k])
		}
	}
	var oauth struct {
		AccessToken      string   `json:"accessToken"`
		RefreshToken     string   `json:"refreshToken"`
		ExpiresAt        int64    `json:"expiresAt"`
		Scopes           []string `json:"scopes"`
		SubscriptionType string   `json:"subscriptionType"`
		RateLimitTier    string   `json:"rateLimitTier"`
	}
	if err := json.Unmarshal(now["claudeAiOauth"], &oauth); err != nil {
		t.Fatal(err)
	}
	if oauth.AccessToken != newToken || oauth.RefreshToken != newRefresh ||
		oauth.SubscriptionType != "max" || oauth.RateLimitTier != "default_claude_max_20x" || len(oauth.Scopes) != 2 {
		t.Fatalf("rewritten claudeAiOauth = %s", now["claudeAiOauth"])
	}
	if exp := time.UnixMilli(oauth.ExpiresAt); exp.Before(time.Now().Add(7*time.Hour)) || exp.After(time.Now().Add(9*time.Hour)) {
		t.Fatalf("rewritten expiresAt %v, want about 8h from now", exp)
	}

	// the fresh token is used as is: no second refresh
	if _, err := client.Messages.New(context.Background(), userMessage("again")); err != nil {
		t.Fatal(err)
	}
	if tokens.Hits() != 1 || sub.lastHeader().Get("Authorization") != "Bearer "+newToken {
		t.Fatalf("second request: %d token hits, Authorization %q", tokens.Hits(), sub.lastHeader().Get("Authorization"))
	}
}

// An hour before expiry nothing is refreshed and the file is left alone.
func TestCredClaudeNoRefreshAnHourBeforeExpiry(t *testing.T) {
	useFakeClock(t)
	tokens := newCredTokenEndpoint(t, issueToken("sk-ant-oat01-unwanted", "sk-ant-ort01-unwanted", 28800, 0))
	creds := filepath.Join(t.TempDir(), ".credentials.json")
	const refreshToken = "sk-ant-ort01-an-hour-left"
	before := writeClaudeCredentials(t, creds, "sk-ant-oat01-still-good", refreshToken, time.Now().Add(time.Hour), 0o644)
	sub := newUpstream(t, "sub", replyMessage("from sub"))
	p := startProxy(t, failoverSite(sub.providerBlock(claudeCredentialLines(creds, tokens.URL)...)))
	client := sdkClient(p)
	for i := range 3 {
		if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from sub" {
			t.Fatalf("request %d: %v %v", i, msg, err)
		}
		if got := sub.lastHeader().Get("Authorization"); got != "Bearer sk-ant-oat01-still-good" {
			t.Fatalf("request %d: Authorization %q", i, got)
		}
	}
	// only this source's refresh counts: a loopback port is shared with
	// every process on the machine, and a stray request is not a refresh
	for i := range tokens.Hits() {
		if req := tokens.request(i); req["refresh_token"] == refreshToken {
			t.Fatalf("token endpoint asked for a refresh an hour before expiry: %v", req)
		} else {
			t.Logf("a request that is not this source's refresh: %v", req)
		}
	}
	if after := readFileString(t, creds); after != string(before) {
		t.Fatalf("credentials file rewritten without a refresh:\n%s", after)
	}
}

// Twenty requests arriving together near expiry share one refresh.
func TestCredClaudeConcurrentRequestsRefreshOnce(t *testing.T) {
	useFakeClock(t)
	const newToken = "sk-ant-oat01-shared-new-token"
	tokens := newCredTokenEndpoint(t, issueToken(newToken, "sk-ant-ort01-r2", 28800, 300*time.Millisecond))
	creds := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeCredentials(t, creds, "sk-ant-oat01-expiring", "sk-ant-ort01-r1", time.Now().Add(time.Minute), 0o600)
	sub := newUpstream(t, "sub", replyMessage("from sub"))
	p := startProxy(t, failoverSite(sub.providerBlock(claudeCredentialLines(creds, tokens.URL)...)))
	client := sdkClient(p)

	const n = 20
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			msg, err := client.Messages.New(context.Background(), userMessage(fmt.Sprint("hi ", i)))
			if err == nil && textOf(msg) != "from sub" {
				err = fmt.Errorf("answer %q", textOf(msg))
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("request failed: %v", err)
		}
	}
	if tokens.Hits() != 1 {
		t.Fatalf("token endpoint hits = %d for %d concurrent requests, want 1", tokens.Hits(), n)
	}
	hs := headersOf(sub)
	if len(hs) != n {
		t.Fatalf("upstream hits = %d, want %d", len(hs), n)
	}
	for i, h := range hs {
		if got := h.Get("Authorization"); got != "Bearer "+newToken {
			t.Fatalf("upstream request %d: Authorization %q, want the refreshed token", i, got)
		}
	}
}

// 2a. A failed refresh while the token is still valid keeps the token in
// use, and the failing endpoint is not called for every request.
func TestCredClaudeRefreshFailureKeepsValidToken(t *testing.T) {
	useFakeClock(t)
	c := newClaudeSub(t, newCredTokenEndpoint(t, refuseRefresh(http.StatusBadRequest)),
		"sk-ant-oat01-valid-two-more-minutes", "sk-ant-ort01-revoked", time.Now().Add(2*time.Minute),
		"sub", replyMessage("from sub"), "backup")
	tokens, sub := c.tokens, c.sub
	p := startProxy(t, c.site())
	client := sdkClient(p)
	for i := range 2 {
		msg, err := client.Messages.New(context.Background(), userMessage("hi"))
		if err != nil || textOf(msg) != "from sub" {
			t.Fatalf("request %d: %v %v; want sub's answer with the still valid token", i, msg, err)
		}
		if got := sub.lastHeader().Get("Authorization"); got != "Bearer sk-ant-oat01-valid-two-more-minutes" {
			t.Fatalf("request %d: Authorization %q", i, got)
		}
	}
	if tokens.Hits() != 1 {
		t.Fatalf("token endpoint hits = %d, want 1 (a failed refresh waits 30s before the next)", tokens.Hits())
	}
	c.wantSubAlone(t)
}

// 2b. A failed refresh of an expired token cools the provider as auth,
// without a request to it, and the request fails over.
func TestCredClaudeRefreshFailureWithExpiredTokenFailsOver(t *testing.T) {
	useFakeClock(t)
	const expired = "sk-ant-oat01-expired-token"
	c := newClaudeSub(t, newCredTokenEndpoint(t, refuseRefresh(http.StatusInternalServerError)),
		expired, "sk-ant-ort01-r", time.Now().Add(-time.Minute), "sub", replyMessage("from sub"), "backup")
	tokens, sub := c.tokens, c.sub
	p := startProxy(t, c.site())
	msg, raw, err := sendMessage(sdkClient(p), "hi")
	if err != nil || textOf(msg) != "from backup" {
		t.Fatalf("got %v %v; want backup's answer", msg, err)
	}
	if raw.Header.Get("X-LLM-Provider") != "backup" || raw.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("X-LLM-Provider %q X-LLM-Attempts %q, want backup and 1 (sub was never sent a request)",
			raw.Header.Get("X-LLM-Provider"), raw.Header.Get("X-LLM-Attempts"))
	}
	if sub.Hits() != 0 {
		t.Fatalf("sub was sent %d requests with an expired token", sub.Hits())
	}
	if tokens.Hits() != 1 {
		t.Fatalf("token endpoint hits = %d, want 1", tokens.Hits())
	}
	s := snapshot(t, "sub")
	if s.State != breaker.Open || s.LastClass != classify.Auth {
		t.Fatalf("sub: %+v, want open auth", s)
	}
	if !strings.Contains(s.LastError, "expired") || strings.Contains(s.LastError, expired) {
		t.Fatalf("sub's last error %q: want it to say expired, without the token", s.LastError)
	}
}

// 3a. A 401 forces a refresh and the same provider is tried once more with
// the new token.
func TestCredClaude401RefreshesAndRetries(t *testing.T) {
	for _, withBackup := range []bool{true, false} {
		t.Run(fmt.Sprintf("backup=%v", withBackup), func(t *testing.T) {
			useFakeClock(t)
			const oldToken, newToken = revokedToken, "sk-ant-oat01-after-401"
			c := newRevokedClaudeSub(t, newToken, "sub", "backup")
			tokens, sub := c.tokens, c.sub
			site := failoverSite(c.subBlock())
			if withBackup {
				site = c.site()
			}
			p := startProxy(t, site)

			msg, raw, err := sendMessage(sdkClient(p), "hi")
			hs := headersOf(sub)
			if len(hs) != 2 || hs[0].Get("Authorization") != "Bearer "+oldToken || hs[1].Get("Authorization") != "Bearer "+newToken {
				var auths []string
				for _, h := range hs {
					auths = append(auths, h.Get("Authorization"))
				}
				t.Errorf("sub received Authorization %q, want the old token then the new one", auths)
			}
			if tokens.Hits() != 1 {
				t.Errorf("token endpoint hits = %d, want 1", tokens.Hits())
			}
			if err != nil || textOf(msg) != "from sub" {
				t.Fatalf("got %v %v; want sub's answer after the retry", msg, err)
			}
			if raw.StatusCode != 200 || raw.Header.Get("X-LLM-Provider") != "sub" || raw.Header.Get("X-LLM-Attempts") != "2" {
				t.Fatalf("status %d X-LLM-Provider %q X-LLM-Attempts %q, want 200 sub 2",
					raw.StatusCode, raw.Header.Get("X-LLM-Provider"), raw.Header.Get("X-LLM-Attempts"))
			}
			c.wantSubAlone(t)
		})
	}
}

// 3b. A refreshed token refused again fails the request over: one refresh,
// two requests to the provider, no loop.
func TestCredClaudeRefreshedTokenRefusedAgainFailsOver(t *testing.T) {
	useFakeClock(t)
	c := newClaudeSub(t, newCredTokenEndpoint(t, issueToken("sk-ant-oat01-also-refused", "sk-ant-ort01-r2", 28800, 0)),
		"sk-ant-oat01-refused", "sk-ant-ort01-r1", time.Now().Add(time.Hour),
		"sub", replyError(401, "authentication_error", "invalid bearer token"), "backup")
	tokens, sub, backup := c.tokens, c.sub, c.backup
	p := startProxy(t, c.site())
	client := sdkClient(p)

	msg, raw, err := sendMessage(client, "hi")
	if sub.Hits() != 2 || tokens.Hits() != 1 {
		t.Errorf("sub hits %d, token endpoint hits %d; want 2 and 1", sub.Hits(), tokens.Hits())
	}
	if err != nil || textOf(msg) != "from backup" {
		var apiErr *anthropic.Error
		if errors.As(err, &apiErr) {
			t.Fatalf("client got %d from %s after %s attempts; want backup's answer (backup hits %d)",
				apiErr.StatusCode, apiErr.Response.Header.Get("X-LLM-Provider"), apiErr.Response.Header.Get("X-LLM-Attempts"), backup.Hits())
		}
		t.Fatalf("got %v %v; want backup's answer", msg, err)
	}
	if raw.Header.Get("X-LLM-Provider") != "backup" || raw.Header.Get("X-LLM-Attempts") != "3" {
		t.Fatalf("X-LLM-Provider %q X-LLM-Attempts %q, want backup 3", raw.Header.Get("X-LLM-Provider"), raw.Header.Get("X-LLM-Attempts"))
	}
	if s := snapshot(t, "sub"); s.State != breaker.Open || s.LastClass != classify.Auth {
		t.Fatalf("sub: %+v, want open auth", s)
	}
	// the next request skips sub: no request, no refresh
	if msg, err := client.Messages.New(context.Background(), userMessage("again")); err != nil || textOf(msg) != "from backup" {
		t.Fatalf("second request: %v %v", msg, err)
	}
	if sub.Hits() != 2 || tokens.Hits() != 1 || backup.Hits() != 2 {
		t.Fatalf("after a second request: sub %d, token endpoint %d, backup %d; want 2, 1, 2",
			sub.Hits(), tokens.Hits(), backup.Hits())
	}
}

// 4a. A rotated credential file is used by the next request, without a
// reload.
func TestCredFileRotationIsPickedUp(t *testing.T) {
	useFakeClock(t)
	keyFile := filepath.Join(t.TempDir(), "api-key")
	writeSecretFile(t, keyFile, "sk-file-key-number-1\n")
	a := newUpstream(t, "a", replyMessage("from a"))
	p := startProxy(t, failoverSite(a.providerBlock("credential file "+keyFile)))
	client := sdkClient(p)
	for i, key := range []string{"sk-file-key-number-1", "sk-file-key-number-2", "sk-file-key-number-three"} {
		switch i {
		case 1: // same length, new inode (rename)
			writeSecretFile(t, keyFile, key+"\n")
		case 2: // in place, another length
			if err := os.WriteFile(keyFile, []byte(key), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from a" {
			t.Fatalf("request %d: %v %v", i, msg, err)
		}
		if got := a.lastHeader().Get("X-Api-Key"); got != key {
			t.Fatalf("request %d: x-api-key %q, want %q", i, got, key)
		}
	}
}

// 4b. An auth cooldown ends as soon as the file yields another credential:
// no time passes, yet the rotated key goes to the refusing provider.
func TestCredFileRotationEndsAuthCooldown(t *testing.T) {
	clock := useFakeClock(t)
	t.Setenv("LLMF_CRED_BACKUP_KEY", "sk-backup")
	keyFile := filepath.Join(t.TempDir(), "api-key")
	writeSecretFile(t, keyFile, "sk-file-key-revoked")
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("X-Api-Key") != "sk-file-key-rotated" {
			replyError(401, "authentication_error", "invalid x-api-key")(w, r, body)
			return
		}
		replyMessage("from a")(w, r, body)
	})
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock("credential file "+keyFile), b.providerBlock("credential env LLMF_CRED_BACKUP_KEY")))
	client := sdkClient(p)
	start := clock.Now()

	if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from b" {
		t.Fatalf("first: %v %v; want b's answer", msg, err)
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.Auth || !s.Until.Equal(start.Add(30*time.Minute)) {
		t.Fatalf("a: %+v, want open auth for 30m", s)
	}
	// same file: a keeps cooling
	if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from b" {
		t.Fatalf("second: %v %v; want b's answer", msg, err)
	}
	if a.Hits() != 1 {
		t.Fatalf("a hits = %d while cooling with the same key, want 1", a.Hits())
	}

	writeSecretFile(t, keyFile, "sk-file-key-rotated")
	msg, raw, err := sendMessage(client, "hi")
	if err != nil || textOf(msg) != "from a" {
		t.Fatalf("after rotation: %v %v; want a's answer at once", msg, err)
	}
	if a.Hits() != 2 || a.lastHeader().Get("X-Api-Key") != "sk-file-key-rotated" || raw.Header.Get("X-LLM-Attempts") != "1" {
		t.Fatalf("a hits %d, x-api-key %q, attempts %q", a.Hits(), a.lastHeader().Get("X-Api-Key"), raw.Header.Get("X-LLM-Attempts"))
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("a after the rotated key worked: %+v, want closed", s)
	}
	if !clock.Now().Equal(start) {
		t.Fatal("the clock moved")
	}
}

// 4c. A credential that was missing and appears is a new credential too:
// the auth cooldown it caused ends at once.
func TestCredFileAppearingEndsAuthCooldown(t *testing.T) {
	useFakeClock(t)
	t.Setenv("LLMF_CRED_BACKUP_KEY", "sk-backup")
	keyFile := filepath.Join(t.TempDir(), "api-key") // not there yet
	a := newUpstream(t, "a", replyMessage("from a"))
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock("credential file "+keyFile), b.providerBlock("credential env LLMF_CRED_BACKUP_KEY")))
	client := sdkClient(p)
	if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from b" {
		t.Fatalf("first: %v %v; want b's answer", msg, err)
	}
	if s := snapshot(t, "a"); s.State != breaker.Open || s.LastClass != classify.Auth || !strings.Contains(s.LastError, keyFile) {
		t.Fatalf("a: %+v, want open auth naming the file", s)
	}
	writeSecretFile(t, keyFile, "sk-file-key-arrived")
	msg, err := client.Messages.New(context.Background(), userMessage("hi"))
	if err != nil || textOf(msg) != "from a" || a.lastHeader().Get("X-Api-Key") != "sk-file-key-arrived" {
		answer := ""
		if msg != nil {
			answer = textOf(msg)
		}
		t.Fatalf("after the file appeared: answer %q, err %v, a hits %d; want a's answer at once (a: %+v)",
			answer, err, a.Hits(), snapshot(t, "a"))
	}
}

// 5. A helper program's output is the credential; a failing helper cools
// the provider as auth with its exit status and stderr, and fails over.
func TestCredCommand(t *testing.T) {
	useFakeClock(t)
	t.Setenv("LLMF_CRED_BACKUP_KEY", "sk-backup")
	dir := t.TempDir()
	good := writeExecutable(t, dir, "good-helper", "#!/bin/sh\necho '  sk-command-output-1234  '\n")
	bad := writeExecutable(t, dir, "bad-helper", "#!/bin/sh\necho sk-command-stdout-must-not-show\necho 'vault is sealed' >&2\nexit 3\n")

	t.Run("value", func(t *testing.T) {
		a := newUpstream(t, "a", replyMessage("from a"))
		p := startProxy(t, failoverSite(a.providerBlock("credential command "+good)))
		askAsClaudeCode(t, p, "from a")
		wantAPIKeyOnly(t, a, "sk-command-output-1234")
	})
	t.Run("failure", func(t *testing.T) {
		a := newUpstream(t, "a", replyMessage("from a"))
		b := newUpstream(t, "b", replyMessage("from b"))
		p := startProxy(t, failoverSite(a.providerBlock("credential command "+bad), b.providerBlock("credential env LLMF_CRED_BACKUP_KEY")))
		msg, err := sdkClient(p).Messages.New(context.Background(), userMessage("hi"))
		if err != nil || textOf(msg) != "from b" {
			t.Fatalf("%v %v; want b's answer", msg, err)
		}
		if a.Hits() != 0 {
			t.Fatalf("a contacted %d times without a credential", a.Hits())
		}
		s := snapshot(t, "a")
		if s.State != breaker.Open || s.LastClass != classify.Auth {
			t.Fatalf("a: %+v, want open auth", s)
		}
		if !strings.Contains(s.LastError, "exit status 3") || !strings.Contains(s.LastError, "vault is sealed") {
			t.Fatalf("a's last error %q: want the exit status and stderr", s.LastError)
		}
		if strings.Contains(s.LastError, "sk-command-stdout-must-not-show") {
			t.Fatalf("a's last error quotes the helper's stdout: %q", s.LastError)
		}
	})
}

// 6. A Keychain item, read with `security`, is sent as x-api-key.
func TestCredKeychain(t *testing.T) {
	useFakeClock(t)
	calls := fakeSecurity(t, "llmf-test-service", "sk-keychain-value-5678")
	a := newUpstream(t, "a", replyMessage("from a"))
	p := startProxy(t, failoverSite(a.providerBlock("credential keychain llmf-test-service")))
	askAsClaudeCode(t, p, "from a")
	wantAPIKeyOnly(t, a, "sk-keychain-value-5678")
	if got := readFileString(t, calls); !strings.Contains(got, "find-generic-password -s llmf-test-service -w") {
		t.Fatalf("security was called as %q", got)
	}
}

// credAllSources sets up one fake provider per credential source (and one
// without a credential), in a chain, and returns the providers in order
// and the secret each source yields (passthrough: none).
type credChain struct {
	ups     []*fakeUpstream
	secrets map[string]string // provider name -> its secret
	blocks  []string
	tokens  *credTokenEndpoint
	keyFile string
	names   []string // env var, file paths, service: what the config may hold
}

const (
	chainEnvSecret      = "sk-env-secret-9f8e7d6c5b4a"
	chainFileSecret     = "sk-file-secret-1a2b3c4d5e6f"
	chainFileSecret2    = "sk-file-secret-rotated-777"
	chainClaudeOld      = "sk-ant-oat01-claude-old-secret"
	chainClaudeRefresh  = "sk-ant-ort01-claude-refresh-secret-1"
	chainClaudeNew      = "sk-ant-oat01-claude-new-secret"
	chainClaudeRefresh2 = "sk-ant-ort01-claude-refresh-secret-2"
	chainKeychainSecret = "sk-keychain-secret-0a0b0c0d"
	chainCommandSecret  = "sk-command-secret-1f2e3d4c"
)

// newCredChain builds providers none, env, file, claude, keychain,
// command, passthrough; each answers with handler(name). With
// claudeNearExpiry the claude token is refreshed on first use.
func newCredChain(t *testing.T, claudeNearExpiry bool, handler func(name string) func(w http.ResponseWriter, r *http.Request, body []byte)) *credChain {
	t.Helper()
	c := &credChain{secrets: map[string]string{}}
	dir := t.TempDir()
	t.Setenv("LLMF_CRED_SECRET_ENV", chainEnvSecret)
	c.keyFile = filepath.Join(dir, "api-key")
	writeSecretFile(t, c.keyFile, chainFileSecret+"\n")
	creds := filepath.Join(dir, ".credentials.json")
	exp := time.Now().Add(time.Hour)
	if claudeNearExpiry {
		exp = time.Now().Add(2 * time.Minute)
	}
	writeClaudeCredentials(t, creds, chainClaudeOld, chainClaudeRefresh, exp, 0o600)
	c.tokens = newCredTokenEndpoint(t, issueToken(chainClaudeNew, chainClaudeRefresh2, 28800, 0))
	fakeSecurity(t, "llmf-test-service", chainKeychainSecret)
	helper := writeExecutable(t, dir, "key-helper", "#!/bin/sh\necho "+chainCommandSecret+"\n")
	c.names = []string{"LLMF_CRED_SECRET_ENV", c.keyFile, creds, "llmf-test-service", helper}

	claudeSecret := chainClaudeOld
	if claudeNearExpiry {
		claudeSecret = chainClaudeNew
	}
	for _, s := range []struct {
		name   string
		lines  []string
		secret string
	}{
		{"none", nil, ""},
		{"env", []string{"credential env LLMF_CRED_SECRET_ENV"}, chainEnvSecret},
		{"file", []string{"credential file " + c.keyFile}, chainFileSecret},
		{"claude", claudeCredentialLines(creds, c.tokens.URL), claudeSecret},
		{"keychain", []string{"credential keychain llmf-test-service"}, chainKeychainSecret},
		{"command", []string{"credential command " + helper}, chainCommandSecret},
		{"passthrough", []string{"credential passthrough"}, ""},
	} {
		u := newUpstream(t, s.name, handler(s.name))
		c.ups = append(c.ups, u)
		c.secrets[s.name] = s.secret
		c.blocks = append(c.blocks, u.providerBlock(s.lines...))
	}
	return c
}

func (c *credChain) upstream(name string) *fakeUpstream {
	for _, u := range c.ups {
		if u.name == name {
			return u
		}
	}
	panic(name)
}

// 7. The client's Authorization and x-api-key reach only the passthrough
// provider; every other provider gets its own credential and nothing of
// the client's.
func TestCredClientCredentialReachesOnlyPassthrough(t *testing.T) {
	useFakeClock(t)
	c := newCredChain(t, false, func(name string) func(w http.ResponseWriter, r *http.Request, body []byte) {
		if name == "passthrough" {
			return replyMessage("from passthrough")
		}
		return replyError(500, "api_error", "Internal server error")
	})
	p := startProxy(t, failoverSite(c.blocks...))
	msg, raw, err := sendMessage(sdkClient(p, credClientOptions(credClientBetas)...), "hi")
	if err != nil || textOf(msg) != "from passthrough" {
		t.Fatalf("%v %v", msg, err)
	}
	if got := raw.Header.Get("X-LLM-Attempts"); got != itoa(len(c.ups)) {
		t.Fatalf("X-LLM-Attempts %q, want every provider tried", got)
	}
	for _, u := range c.ups {
		if u.Hits() != 1 {
			t.Fatalf("%s hits = %d, want 1", u.name, u.Hits())
		}
		h := u.lastHeader()
		secret := c.secrets[u.name]
		betas := betaSet(h)
		switch u.name {
		case "passthrough":
			if h.Get("X-Api-Key") != credClientAPIKey || h.Get("Authorization") != "Bearer "+credClientBearer {
				t.Fatalf("passthrough got x-api-key %q Authorization %q, want the client's own", h.Get("X-Api-Key"), h.Get("Authorization"))
			}
			if !betas["oauth-2025-04-20"] || !betas["interleaved-thinking-2025-05-14"] {
				t.Fatalf("passthrough got anthropic-beta %q, want the client's", h.Values("Anthropic-Beta"))
			}
			continue
		case "none":
			if v := h.Values("X-Api-Key"); len(v) != 0 || h.Get("Authorization") != "" {
				t.Fatalf("provider without a credential got x-api-key %q Authorization %q", v, h.Get("Authorization"))
			}
		case "claude":
			if h.Get("Authorization") != "Bearer "+secret || len(h.Values("X-Api-Key")) != 0 {
				t.Fatalf("claude got x-api-key %q Authorization %q", h.Values("X-Api-Key"), h.Get("Authorization"))
			}
		default:
			if v := h.Values("X-Api-Key"); len(v) != 1 || v[0] != secret || h.Get("Authorization") != "" {
				t.Fatalf("%s got x-api-key %q Authorization %q, want its own key only", u.name, h.Values("X-Api-Key"), h.Get("Authorization"))
			}
		}
		if leaked := headerMentions(h, credClientAPIKey, credClientBearer); len(leaked) != 0 {
			t.Fatalf("%s received the client's credential %q in %v", u.name, leaked, h)
		}
		if !betas["interleaved-thinking-2025-05-14"] {
			t.Fatalf("%s lost the client's own beta: %q", u.name, h.Values("Anthropic-Beta"))
		}
		if wantOAuth := u.name == "claude"; betas["oauth-2025-04-20"] != wantOAuth {
			t.Fatalf("%s got anthropic-beta %q: the OAuth beta goes only with an OAuth token", u.name, h.Values("Anthropic-Beta"))
		}
	}
}

// 8a. No secret in the adapted config, in the running config served by the
// admin API, or in debug logs, through failovers, an auth failure, a
// refresh, a rotation and successes.
func TestCredSecretsStayOutOfConfigAndLogs(t *testing.T) {
	clock := useFakeClock(t)
	c := newCredChain(t, true, func(name string) func(w http.ResponseWriter, r *http.Request, body []byte) {
		switch name {
		case "env":
			return replyError(500, "api_error", "Internal server error")
		case "file":
			return replyError(401, "authentication_error", "invalid x-api-key")
		case "claude":
			return replyError(529, "overloaded_error", "Overloaded")
		case "keychain":
			return replyError(429, "rate_limit_error", "slow down")
		}
		return replyMessage("from " + name)
	})
	// "none" would answer first; it is not part of this config
	blocks := c.blocks[1:]
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	secrets := []string{
		chainEnvSecret, chainFileSecret, chainFileSecret2, chainClaudeOld, chainClaudeRefresh, chainClaudeNew,
		chainClaudeRefresh2, chainKeychainSecret, chainCommandSecret, credClientAPIKey, credClientBearer,
	}
	assertNoSecrets := func(what, text string) {
		t.Helper()
		for _, s := range secrets {
			if strings.Contains(text, s) {
				i := strings.Index(text, s)
				t.Errorf("%s contains the secret %q: ...%s...", what, s, text[max(0, i-300):min(len(text), i+len(s)+100)])
			}
		}
	}

	p, caddyfileText := startProxyWithGlobals(t, debugLogTo(logFile), failoverSite(blocks...))

	// the adapted JSON holds names, not values
	cfg := string(adapt(t, caddyfileText))
	for _, name := range c.names {
		if !strings.Contains(cfg, name) {
			t.Fatalf("adapted config lacks %q: is it the config under test?\n%s", name, cfg)
		}
	}
	assertNoSecrets("adapted config", cfg)

	// the running config, from the admin API
	res, err := http.Get("http://" + p.AdminAddr + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	running := readAll(t, res)
	if res.StatusCode != 200 || !strings.Contains(running, "LLMF_CRED_SECRET_ENV") || !strings.Contains(running, "llm_failover") {
		t.Fatalf("GET /config/: %d %s", res.StatusCode, running)
	}
	assertNoSecrets("GET /config/", running)

	client := sdkClient(p, credClientOptions(credClientBetas)...)
	// env 500, file 401 (refused, re-read, same key), claude refreshed then
	// 529, keychain 429, command answers
	msg, raw, err := sendMessage(client, "hi")
	if err != nil || textOf(msg) != "from command" || raw.Header.Get("X-LLM-Attempts") != "5" {
		t.Fatalf("first request: %v %v (attempts %q); want command's answer after 5 attempts", msg, err, raw.Header.Get("X-LLM-Attempts"))
	}
	// the rotated file ends file's auth cooldown; env is still cooling
	writeSecretFile(t, c.keyFile, chainFileSecret2)
	c.upstream("file").setHandler(replyMessage("from file"))
	if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from file" {
		t.Fatalf("second request: %v %v; want file's answer with the rotated key", msg, err)
	}
	// env's cooldown over: it answers
	clock.Advance(11 * time.Second)
	c.upstream("env").setHandler(replyMessage("from env"))
	if msg, err := client.Messages.New(context.Background(), userMessage("hi")); err != nil || textOf(msg) != "from env" {
		t.Fatalf("third request: %v %v; want env's answer", msg, err)
	}
	// the secrets did flow: each provider got its own
	for name, want := range map[string]string{
		"env": chainEnvSecret, "keychain": chainKeychainSecret, "command": chainCommandSecret,
	} {
		if got := c.upstream(name).lastHeader().Get("X-Api-Key"); got != want {
			t.Fatalf("%s got x-api-key %q, want %q", name, got, want)
		}
	}
	if hs := headersOf(c.upstream("file")); len(hs) != 2 || hs[0].Get("X-Api-Key") != chainFileSecret || hs[1].Get("X-Api-Key") != chainFileSecret2 {
		t.Fatalf("file did not get both keys (%d requests)", len(hs))
	}
	// a token still valid is not held back for its refresh (which runs in
	// the background, once), so claude got the old token or the new one
	if got := c.upstream("claude").lastHeader().Get("Authorization"); (got != "Bearer "+chainClaudeNew && got != "Bearer "+chainClaudeOld) || c.tokens.Hits() != 1 {
		t.Fatalf("claude got %q after %d refreshes", got, c.tokens.Hits())
	}
	if n := c.upstream("passthrough").Hits(); n != 0 {
		t.Fatalf("passthrough reached %d times; this test keeps the client's key away from it", n)
	}

	// the running config did not pick up a secret either
	res, err = http.Get("http://" + p.AdminAddr + "/config/")
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecrets("GET /config/ after requests", readAll(t, res))

	logText := readFileString(t, logFile)
	for _, want := range []string{"upstream roundtrip", "provider failed; failing over", "refreshed the claude token", "credential file changed", `"level":"debug"`} {
		if !strings.Contains(logText, want) {
			t.Fatalf("debug log lacks %q; is it the log under test?\n%s", want, logText)
		}
	}
	assertNoSecrets("debug log", logText)
}

// 8b. A passthrough provider's attempt is logged at debug level too
// ("upstream roundtrip" prints the upstream request's headers, redacting
// Authorization but not x-api-key): the client's key must not be in it.
func TestCredPassthroughClientKeyNotLogged(t *testing.T) {
	useFakeClock(t)
	sub := newUpstream(t, "sub", replyMessage("from sub"))
	logFile := filepath.Join(t.TempDir(), "caddy.log")
	p, _ := startProxyWithGlobals(t, debugLogTo(logFile), failoverSite(sub.providerBlock("credential passthrough")))
	askAsClaudeCode(t, p, "from sub")
	if h := sub.lastHeader(); h.Get("X-Api-Key") != credClientAPIKey || h.Get("Authorization") != "Bearer "+credClientBearer {
		t.Fatalf("passthrough did not forward the client's credential: %v", h)
	}
	logText := readFileString(t, logFile)
	if !strings.Contains(logText, "upstream roundtrip") {
		t.Fatalf("debug log lacks the upstream roundtrip line:\n%s", logText)
	}
	for _, s := range []string{credClientAPIKey, credClientBearer} {
		if i := strings.Index(logText, s); i >= 0 {
			t.Errorf("debug log contains the client's secret %q: ...%s...", s, logText[max(0, i-200):min(len(logText), i+len(s)+50)])
		}
	}
}

// The provider's credential replaces the client's; the upstream URL's path
// is prefixed; GET requests and query strings pass.
func TestCredentialsAndBasePath(t *testing.T) {
	useFakeClock(t)
	t.Setenv("LLMF_TEST_KEY_A", "sk-provider-a")
	t.Setenv("LLMF_TEST_KEY_B", "token-b")
	a := newUpstream(t, "a", replyError(401, "authentication_error", "invalid x-api-key"))
	b := newUpstream(t, "b", func(w http.ResponseWriter, r *http.Request, body []byte) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"data":[{"type":"model","id":"glm-4.6"}],"has_more":false}`)
	})
	p := startProxy(t, failoverSite(
		a.providerBlock("credential env LLMF_TEST_KEY_A"),
		fmt.Sprintf("\t\tprovider b {\n\t\t\tupstream %s/api/anthropic\n\t\t\tcredential env LLMF_TEST_KEY_B\n\t\t\tauth_header bearer\n\t\t}\n", b.URL)))
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/v1/models?limit=5", nil)
	req.Header.Set("X-Api-Key", "sk-client-key-must-not-leak")
	req.Header.Set("Authorization", "Bearer sk-ant-oat01-client")
	req.Header.Set("Anthropic-Beta", "oauth-2025-04-20,interleaved-thinking-2025-05-14")
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, res); !strings.Contains(body, "glm-4.6") {
		t.Fatalf("body %s", body)
	}
	ha, hb := a.lastHeader(), b.lastHeader()
	if ha.Get("X-Api-Key") != "sk-provider-a" || ha.Get("Authorization") != "" {
		t.Fatalf("a got x-api-key %q authorization %q", ha.Get("X-Api-Key"), ha.Get("Authorization"))
	}
	if hb.Get("Authorization") != "Bearer token-b" || hb.Get("X-Api-Key") != "" {
		t.Fatalf("b got x-api-key %q authorization %q", hb.Get("X-Api-Key"), hb.Get("Authorization"))
	}
	for _, h := range []http.Header{ha, hb} {
		if h.Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14" {
			t.Fatalf("anthropic-beta = %q: the OAuth beta must go with the client's token", h.Get("Anthropic-Beta"))
		}
	}
	// the proxy asks each provider for its whole list, then pages it
	if b.paths[0] != "/api/anthropic/v1/models?limit=1000" {
		t.Fatalf("b path %q", b.paths[0])
	}
}

// A missing env var cools its provider as auth and the request fails over,
// without a request to that provider.
func TestMissingCredentialFailsOver(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyMessage("from a"))
	b := newUpstream(t, "b", replyMessage("from b"))
	p := startProxy(t, failoverSite(a.providerBlock("credential env LLMF_TEST_UNSET_VAR"), b.providerBlock()))
	if got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest)); !strings.Contains(got, "from b") {
		t.Fatalf("answer %s", got)
	}
	if a.Hits() != 0 {
		t.Fatal("a was contacted without a credential")
	}
	s := snapshot(t, "a")
	if s.LastClass != classify.Auth || s.State != breaker.Open || !strings.Contains(s.LastError, "LLMF_TEST_UNSET_VAR") {
		t.Fatalf("a: %+v", s)
	}
}

// The passthrough provider forwards the client's own credential; its
// breaker is per client, so one client's failure does not cool another.
func TestPassthroughIsPerClient(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "sub", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if r.Header.Get("Authorization") == "Bearer exhausted" {
			replyError(429, "rate_limit_error", "limited",
				"anthropic-ratelimit-unified-status", "rejected")(w, r, body)
			return
		}
		replyMessage("from sub")(w, r, body)
	})
	b := newUpstream(t, "b", replyMessage("from b"))
	t.Setenv("LLMF_TEST_KEY_B", "sk-b")
	p := startProxy(t, failoverSite(a.providerBlock("credential passthrough"), b.providerBlock("credential env LLMF_TEST_KEY_B")))
	got := readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer exhausted"))
	if !strings.Contains(got, "from b") {
		t.Fatalf("exhausted client: %s", got)
	}
	got = readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer fresh"))
	if !strings.Contains(got, "from sub") {
		t.Fatalf("other client was cooled too: %s", got)
	}
	if h := a.lastHeader(); h.Get("Authorization") != "Bearer fresh" {
		t.Fatalf("passthrough sent %q", h.Get("Authorization"))
	}
	if h := b.lastHeader(); h.Get("Authorization") != "" || h.Get("X-Api-Key") != "sk-b" {
		t.Fatalf("b got the client's token: %v", h)
	}
	// the exhausted client keeps skipping sub
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest, "Authorization", "Bearer exhausted"))
	if a.Hits() != 2 {
		t.Fatalf("sub hits = %d, want 2", a.Hits())
	}
}
