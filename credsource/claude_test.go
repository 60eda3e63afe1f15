package credsource

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest/observer"
)

// fakeTokenEndpoint is an OAuth token endpoint on 127.0.0.1 that counts its
// hits and records the requests it gets.
type fakeTokenEndpoint struct {
	srv   *httptest.Server
	hits  atomic.Int32
	delay time.Duration

	mu           sync.Mutex
	bodies       []map[string]any
	contentTypes []string
	// respond returns the status and body for the n-th hit (from 1).
	respond func(n int) (int, string)
}

func newFakeTokenEndpoint(t *testing.T) *fakeTokenEndpoint {
	t.Helper()
	e := &fakeTokenEndpoint{}
	e.respond = func(n int) (int, string) {
		return http.StatusOK, fmt.Sprintf(`{"token_type":"Bearer","access_token":"sk-ant-oat01-new-%d","refresh_token":"sk-ant-ort01-new-%d","expires_in":28800,"scope":"user:inference user:profile"}`, n, n)
	}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := int(e.hits.Add(1))
		data, _ := io.ReadAll(r.Body)
		var body map[string]any
		_ = json.Unmarshal(data, &body)
		e.mu.Lock()
		e.bodies = append(e.bodies, body)
		e.contentTypes = append(e.contentTypes, r.Header.Get("Content-Type"))
		respond := e.respond
		e.mu.Unlock()
		if r.Method != http.MethodPost {
			http.Error(w, "method", http.StatusMethodNotAllowed)
			return
		}
		time.Sleep(e.delay)
		status, resp := respond(n)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		io.WriteString(w, resp)
	}))
	t.Cleanup(e.srv.Close)
	return e
}

func (e *fakeTokenEndpoint) setRespond(f func(n int) (int, string)) {
	e.mu.Lock()
	e.respond = f
	e.mu.Unlock()
}

func (e *fakeTokenEndpoint) lastBody(t *testing.T) map[string]any {
	t.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.bodies) == 0 {
		t.Fatal("the token endpoint got no request")
	}
	return e.bodies[len(e.bodies)-1]
}

const (
	oldAccess  = "sk-ant-oat01-old-access"
	oldRefresh = "sk-ant-ort01-old-refresh"
)

// claudeDoc is a credentials file as Claude Code writes it, with keys this
// source does not know about at both levels.
func claudeDoc(access, refresh string, expiresAt time.Time) string {
	oauth := map[string]any{
		"accessToken":      access,
		"scopes":           []string{"user:inference", "user:profile"},
		"subscriptionType": "max",
		"rateLimitTier":    "default_claude_max_20x",
	}
	if refresh != "" {
		oauth["refreshToken"] = refresh
	}
	if !expiresAt.IsZero() {
		oauth["expiresAt"] = expiresAt.UnixMilli()
	}
	doc := map[string]any{
		"claudeAiOauth": oauth,
		"mcpOAuth":      map[string]any{"server|abc": map[string]any{"accessToken": "mcp-token"}},
	}
	b, _ := json.MarshalIndent(doc, "", "  ")
	return string(b)
}

func writeClaudeFile(t *testing.T, path, doc string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
}

// newTestClaude provisions c against the fake endpoint and clock.
func newTestClaude(t *testing.T, c *Claude, clock *fakeClock, ep *fakeTokenEndpoint) (*Claude, *observer.ObservedLogs) {
	t.Helper()
	if ep != nil {
		c.TokenURL = ep.srv.URL + "/v1/oauth/token"
		c.client = ep.srv.Client()
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.now = clock.Now
	logger, logs := observedLogger()
	if err := c.setup(logger); err != nil {
		t.Fatal(err)
	}
	return c, logs
}

func readJSONFile(t *testing.T, path string) map[string]json.RawMessage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		t.Fatalf("%s is not JSON: %v", path, err)
	}
	return m
}

func TestClaudeServesTokenFarFromExpiry(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	path := filepath.Join(t.TempDir(), ".credentials.json")
	expires := clock.Now().Add(time.Hour).Truncate(time.Millisecond)
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, expires))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)

	cred, err := c.Credential(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Secret != oldAccess || cred.Version != Fingerprint(oldAccess) {
		t.Errorf("credential = %+v", cred)
	}
	if !cred.ExpiresAt.Equal(expires) {
		t.Errorf("expires at %s, want %s", cred.ExpiresAt, expires)
	}
	if len(cred.Betas) != 1 || cred.Betas[0] != OAuthBeta {
		t.Errorf("betas = %q", cred.Betas)
	}
	if c.DefaultAuthHeader() != AuthHeaderBearer {
		t.Errorf("auth header = %q", c.DefaultAuthHeader())
	}
	if n := ep.hits.Load(); n != 0 {
		t.Errorf("token endpoint hit %d times an hour before expiry", n)
	}
	st := c.Status()
	if st.State != StateOK || !st.ExpiresAt.Equal(expires) {
		t.Errorf("status = %+v", st)
	}
}

func TestClaudeRefreshesWithinRefreshBefore(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(4*time.Minute)))
	c, logs := newTestClaude(t, &Claude{File: path}, clock, ep)

	cred, err := c.Credential(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Secret != "sk-ant-oat01-new-1" {
		t.Fatalf("secret = %q, want the refreshed token", cred.Secret)
	}
	if want := clock.Now().Add(8 * time.Hour); !cred.ExpiresAt.Equal(want) {
		t.Errorf("expires at %s, want %s", cred.ExpiresAt, want)
	}
	if n := ep.hits.Load(); n != 1 {
		t.Errorf("token endpoint hit %d times, want 1", n)
	}

	// What Claude Code sends: a JSON refresh-token grant with its client id.
	body := ep.lastBody(t)
	if body["grant_type"] != "refresh_token" || body["refresh_token"] != oldRefresh || body["client_id"] != DefaultClaudeClientID {
		t.Errorf("request body = %v", body)
	}
	if body["scope"] != "user:inference user:profile" {
		t.Errorf("scope = %v", body["scope"])
	}
	if ct := ep.contentTypes[0]; ct != "application/json" {
		t.Errorf("content type = %q", ct)
	}

	// The file now holds the new tokens, and everything else it held.
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := info.Mode().Perm(); perm != 0o600 {
		t.Errorf("file mode = %o, want 600", perm)
	}
	top := readJSONFile(t, path)
	if string(top["mcpOAuth"]) != `{"server|abc":{"accessToken":"mcp-token"}}` {
		t.Errorf("mcpOAuth = %s", top["mcpOAuth"])
	}
	var oauth map[string]any
	if err := json.Unmarshal(top["claudeAiOauth"], &oauth); err != nil {
		t.Fatal(err)
	}
	if oauth["accessToken"] != "sk-ant-oat01-new-1" || oauth["refreshToken"] != "sk-ant-ort01-new-1" {
		t.Errorf("stored tokens = %v / %v", oauth["accessToken"], oauth["refreshToken"])
	}
	if oauth["expiresAt"] != float64(clock.Now().Add(8*time.Hour).UnixMilli()) {
		t.Errorf("stored expiresAt = %v", oauth["expiresAt"])
	}
	if oauth["subscriptionType"] != "max" || oauth["rateLimitTier"] != "default_claude_max_20x" {
		t.Errorf("unknown claudeAiOauth keys lost: %v", oauth)
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("temporary files left behind: %v", entries)
	}

	// The new token is used from now on, without another refresh.
	again, _ := c.Credential(testCtx(t))
	if again.Secret != "sk-ant-oat01-new-1" || ep.hits.Load() != 1 {
		t.Errorf("second call: %q after %d hits", again.Secret, ep.hits.Load())
	}
	assertJSONExcludes(t, c, oldAccess, oldRefresh, "sk-ant-oat01-new-1", "sk-ant-ort01-new-1")
	assertLogsExclude(t, logs, oldAccess, oldRefresh, "sk-ant-oat01-new-1", "sk-ant-ort01-new-1")
	if logs.FilterMessage("refreshed the claude token").Len() != 1 {
		t.Errorf("the refresh was not logged: %v", logs.All())
	}
}

func TestClaudeRefreshBeforeIsConfigurable(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	dir := t.TempDir()

	short := filepath.Join(dir, "short.json")
	writeClaudeFile(t, short, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(20*time.Minute)))
	c, _ := newTestClaude(t, &Claude{File: short, RefreshBefore: caddyDuration(10 * time.Minute)}, clock, ep)
	if cred, _ := c.Credential(testCtx(t)); cred.Secret != oldAccess || ep.hits.Load() != 0 {
		t.Fatalf("refresh_before 10m, 20m left: %q after %d hits", cred.Secret, ep.hits.Load())
	}

	long := filepath.Join(dir, "long.json")
	writeClaudeFile(t, long, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(20*time.Minute)))
	c2, _ := newTestClaude(t, &Claude{File: long, RefreshBefore: caddyDuration(30 * time.Minute)}, clock, ep)
	if cred, _ := c2.Credential(testCtx(t)); cred.Secret == oldAccess || ep.hits.Load() != 1 {
		t.Fatalf("refresh_before 30m, 20m left: %q after %d hits", cred.Secret, ep.hits.Load())
	}
}

func TestClaudeConcurrentCallersCauseOneRefresh(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	ep.delay = 200 * time.Millisecond
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(time.Minute)))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)

	ctx := testCtx(t)
	var wg sync.WaitGroup
	secrets := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cred, err := c.Credential(ctx)
			if err != nil {
				t.Error(err)
			}
			secrets <- cred.Secret
		}()
	}
	wg.Wait()
	close(secrets)
	for s := range secrets {
		if s != "sk-ant-oat01-new-1" {
			t.Errorf("a caller got %q, want the refreshed token", s)
		}
	}
	if n := ep.hits.Load(); n != 1 {
		t.Errorf("token endpoint hit %d times by 20 concurrent callers, want 1", n)
	}
}

func TestClaudeRefreshFailureKeepsValidToken(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	ep.setRespond(func(int) (int, string) {
		return http.StatusBadRequest, `{"error":"invalid_grant","error_description":"Refresh token not found or invalid"}`
	})
	path := filepath.Join(t.TempDir(), ".credentials.json")
	doc := claudeDoc(oldAccess, oldRefresh, clock.Now().Add(2*time.Minute))
	writeClaudeFile(t, path, doc)
	c, logs := newTestClaude(t, &Claude{File: path}, clock, ep)
	ctx := testCtx(t)

	cred, err := c.Credential(ctx)
	if err != nil {
		t.Fatalf("a still-valid token was not served: %v", err)
	}
	if cred.Secret != oldAccess {
		t.Errorf("secret = %q", cred.Secret)
	}
	st := c.Status()
	if st.State != StateRefreshFailed || !strings.Contains(st.Reason, "invalid_grant") || !strings.Contains(st.Reason, "400") {
		t.Errorf("status = %+v", st)
	}
	if strings.Contains(st.Reason, oldRefresh) {
		t.Errorf("status reason contains the refresh token")
	}

	// Not retried on every request...
	c.Credential(ctx)
	if n := ep.hits.Load(); n != 1 {
		t.Errorf("token endpoint hit %d times right after a failure, want 1", n)
	}
	// ...but after a while.
	clock.Advance(claudeRetryAfter)
	c.Credential(ctx)
	if n := ep.hits.Load(); n != 2 {
		t.Errorf("token endpoint hit %d times after the retry delay, want 2", n)
	}
	if data, _ := os.ReadFile(path); string(data) != doc {
		t.Error("the file was changed by a failed refresh")
	}
	assertLogsExclude(t, logs, oldAccess, oldRefresh)
}

func TestClaudeExpiredTokenAndFailedRefreshIsAnError(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	ep.setRespond(func(int) (int, string) {
		return http.StatusInternalServerError, `{"type":"error","error":{"type":"api_error","message":"Internal server error"}}`
	})
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(-time.Minute)))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)

	cred, err := c.Credential(testCtx(t))
	if err == nil {
		t.Fatalf("an expired token was served: %q", cred.Secret)
	}
	if cred.Secret != "" {
		t.Error("a secret came with the error")
	}
	if !strings.Contains(err.Error(), "expired") || !strings.Contains(err.Error(), "api_error") || !strings.Contains(err.Error(), path) {
		t.Errorf("error = %v", err)
	}
	if strings.Contains(err.Error(), oldAccess) || strings.Contains(err.Error(), oldRefresh) {
		t.Errorf("error %q contains a token", err)
	}
	st := c.Status()
	if st.State != StateExpired || !strings.Contains(st.Reason, "refresh failed") {
		t.Errorf("status = %+v", st)
	}
	if ep.hits.Load() != 1 {
		t.Errorf("hits = %d", ep.hits.Load())
	}
}

func TestClaudeExpiredTokenIsRefreshed(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	ep.setRespond(func(int) (int, string) {
		// No new refresh token: the old one stays.
		return http.StatusOK, `{"access_token":"sk-ant-oat01-fresh","expires_in":3600}`
	})
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(-time.Hour)))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)
	if st := c.Status(); st.State != StateExpired {
		t.Errorf("status before = %+v", st)
	}
	cred, err := c.Credential(testCtx(t))
	if err != nil || cred.Secret != "sk-ant-oat01-fresh" {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	var oauth map[string]any
	json.Unmarshal(readJSONFile(t, path)["claudeAiOauth"], &oauth)
	if oauth["refreshToken"] != oldRefresh || oauth["accessToken"] != "sk-ant-oat01-fresh" {
		t.Errorf("stored = %v", oauth)
	}
	if st := c.Status(); st.State != StateOK {
		t.Errorf("status after = %+v", st)
	}
}

func TestClaudeRefusedForcesRefresh(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	ep.delay = 100 * time.Millisecond
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(6*time.Hour)))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)
	ctx := testCtx(t)

	first, err := c.Credential(ctx)
	if err != nil || ep.hits.Load() != 0 {
		t.Fatalf("%v, %d hits", err, ep.hits.Load())
	}

	// Ten requests refused at once: one refresh, and all may retry.
	var wg sync.WaitGroup
	var retries atomic.Int32
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if c.Refused(ctx, first.Version) {
				retries.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := ep.hits.Load(); n != 1 {
		t.Errorf("token endpoint hit %d times, want 1", n)
	}
	if n := retries.Load(); n != 10 {
		t.Errorf("%d of 10 callers were told to retry", n)
	}
	second, _ := c.Credential(ctx)
	if second.Secret != "sk-ant-oat01-new-1" {
		t.Errorf("after Refused: %q", second.Secret)
	}

	// A refusal of an older version: the current token is already another.
	if !c.Refused(ctx, first.Version) || ep.hits.Load() != 1 {
		t.Error("Refused of a superseded version should say retry without a refresh")
	}

	// A failing refresh: no retry.
	ep.setRespond(func(int) (int, string) { return http.StatusUnauthorized, `{"error":"invalid_grant"}` })
	if c.Refused(ctx, second.Version) {
		t.Error("Refused returned true though the refresh failed")
	}
}

func TestClaudeRefusedRereadsStoreFirst(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(6*time.Hour)))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)
	ctx := testCtx(t)
	first, _ := c.Credential(ctx)

	// Claude Code refreshed the file itself, keeping the same size and
	// modification time so only a forced read notices.
	info, _ := os.Stat(path)
	writeClaudeFile(t, path, claudeDoc("sk-ant-oat01-old-ACCESS", "sk-ant-ort01-old-REFRESH", clock.Now().Add(6*time.Hour)))
	os.Chtimes(path, info.ModTime(), info.ModTime())

	if !c.Refused(ctx, first.Version) {
		t.Fatal("Refused did not find the token Claude Code wrote")
	}
	if n := ep.hits.Load(); n != 0 {
		t.Errorf("token endpoint hit %d times, want 0", n)
	}
	cred, _ := c.Credential(ctx)
	if cred.Secret != "sk-ant-oat01-old-ACCESS" {
		t.Errorf("secret = %q", cred.Secret)
	}
}

func TestClaudePicksUpClaudeCodesRefresh(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, clock.Now().Add(time.Hour)))
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)
	ctx := testCtx(t)
	c.Credential(ctx)

	writeClaudeFile(t, path, claudeDoc("sk-ant-oat01-from-claude-code", "sk-ant-ort01-x", clock.Now().Add(8*time.Hour)))
	cred, err := c.Credential(ctx)
	if err != nil || cred.Secret != "sk-ant-oat01-from-claude-code" {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	if ep.hits.Load() != 0 {
		t.Error("refreshed although the file changed")
	}

	// A logout (the file removed) stops the source.
	os.Remove(path)
	if _, err := c.Credential(ctx); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), path) {
		t.Errorf("after logout: err = %v", err)
	}
	if st := c.Status(); st.State != StateMissing {
		t.Errorf("status = %+v", st)
	}
}

func TestClaudeLongLivedTokenWithoutRefreshToken(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-setup-token","expiresAt":0}}`)
	c, _ := newTestClaude(t, &Claude{File: path}, clock, ep)
	ctx := testCtx(t)

	cred, err := c.Credential(ctx)
	if err != nil || cred.Secret != "sk-ant-oat01-setup-token" || !cred.ExpiresAt.IsZero() {
		t.Fatalf("%+v, %v", cred, err)
	}
	if c.Refused(ctx, cred.Version) {
		t.Error("Refused returned true without a refresh token")
	}
	clock.Advance(365 * 24 * time.Hour)
	if _, err := c.Credential(ctx); err != nil {
		t.Errorf("a token without expiry stopped working: %v", err)
	}
	if ep.hits.Load() != 0 {
		t.Errorf("token endpoint hit %d times", ep.hits.Load())
	}
	if st := c.Status(); st.State != StateOK {
		t.Errorf("status = %+v", st)
	}

	// With a known expiry that passed, it is an error (there is no way to
	// refresh it).
	writeClaudeFile(t, path, fmt.Sprintf(`{"claudeAiOauth":{"accessToken":"sk-ant-oat01-setup-token-2","expiresAt":%d}}`, clock.Now().Add(-time.Second).UnixMilli()))
	if _, err := c.Credential(ctx); err == nil || !strings.Contains(err.Error(), "no refresh token") {
		t.Errorf("expired token without refresh token: err = %v", err)
	}
	if st := c.Status(); st.State != StateExpired {
		t.Errorf("status = %+v", st)
	}
}

func TestClaudeRetriesFileCaughtMidWrite(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), ".credentials.json")
	full := claudeDoc(oldAccess, oldRefresh, clock.Now().Add(time.Hour))
	writeClaudeFile(t, path, full[:len(full)/2])
	c, _ := newTestClaude(t, &Claude{File: path}, clock, nil)

	done := make(chan struct{})
	go func() {
		defer close(done)
		time.Sleep(40 * time.Millisecond)
		writeClaudeFile(t, path, full)
	}()
	cred, err := c.Credential(testCtx(t))
	<-done
	if err != nil || cred.Secret != oldAccess {
		t.Fatalf("a file completed during the retries was not read: %q, %v", cred.Secret, err)
	}
}

func TestClaudeInvalidFile(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), ".credentials.json")
	writeClaudeFile(t, path, `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-half`)
	c, _ := newTestClaude(t, &Claude{File: path}, clock, nil)

	start := time.Now()
	_, err := c.Credential(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "not valid JSON") || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) < (claudeReadTries-1)*claudeReadRetryDelay {
		t.Error("an invalid file was not read again")
	}
	if strings.Contains(err.Error(), "sk-ant-oat01-half") {
		t.Errorf("error %q contains the content", err)
	}
	if st := c.Status(); st.State != StateInvalid {
		t.Errorf("status = %+v", st)
	}

	writeClaudeFile(t, path, `{"somethingElse":{}}`)
	if _, err := c.Credential(testCtx(t)); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "claudeAiOauth") {
		t.Errorf("no login: err = %v", err)
	}
	writeClaudeFile(t, path, `{"claudeAiOauth":{"accessToken":"sk-ant-oat01-bad","scopes":"x","expiresAt":"soon"}}`)
	if cred, err := c.Credential(testCtx(t)); err != nil || cred.Secret != "sk-ant-oat01-bad" {
		t.Errorf("odd but usable fields: %q, %v", cred.Secret, err)
	}
	writeClaudeFile(t, path, `{"claudeAiOauth":{"accessToken":42}}`)
	if _, err := c.Credential(testCtx(t)); err == nil || !strings.Contains(err.Error(), "accessToken") {
		t.Errorf("wrong type: err = %v", err)
	}
}

// failingWrites wraps a store so that writing fails.
type failingWrites struct{ claudeStore }

func (failingWrites) write(context.Context, []byte) error { return errors.New("read-only file system") }

func TestClaudeWriteFailureStillUsesNewToken(t *testing.T) {
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	path := filepath.Join(t.TempDir(), ".credentials.json")
	doc := claudeDoc(oldAccess, oldRefresh, clock.Now().Add(time.Minute))
	writeClaudeFile(t, path, doc)
	c, logs := newTestClaude(t, &Claude{File: path}, clock, ep)
	c.store = failingWrites{c.store}
	ctx := testCtx(t)

	cred, err := c.Credential(ctx)
	if err != nil || cred.Secret != "sk-ant-oat01-new-1" {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	if data, _ := os.ReadFile(path); string(data) != doc {
		t.Error("the file changed")
	}
	st := c.Status()
	if st.State != StateOK || !strings.Contains(st.Reason, "could not be saved") || !strings.Contains(st.Reason, "read-only") {
		t.Errorf("status = %+v", st)
	}
	if logs.FilterMessage("could not save the refreshed claude token; it is used from memory").Len() != 1 {
		t.Error("the write failure was not logged")
	}
	// A forced re-read of the unchanged file must not bring the old token
	// back.
	c.Refused(ctx, Fingerprint("something else"))
	cred, _ = c.Credential(ctx)
	if cred.Secret != "sk-ant-oat01-new-1" || ep.hits.Load() != 1 {
		t.Errorf("after a re-read: %q, %d hits", cred.Secret, ep.hits.Load())
	}
}

func TestClaudeMissingFile(t *testing.T) {
	clock := newFakeClock()
	path := filepath.Join(t.TempDir(), "nope", ".credentials.json")
	c, _ := newTestClaude(t, &Claude{File: path}, clock, nil)
	_, err := c.Credential(testCtx(t))
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), path) {
		t.Errorf("err = %v", err)
	}
	if st := c.Status(); st.State != StateMissing || !strings.Contains(st.Reason, path) {
		t.Errorf("status = %+v", st)
	}
	if c.Refused(testCtx(t), "x") {
		t.Error("Refused returned true without a credential")
	}
}

func TestClaudeDefaultPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("CLAUDE_CONFIG_DIR", "")
	c, _ := newTestClaude(t, &Claude{}, newFakeClock(), nil)
	if got, want := c.store.where(), "file "+filepath.Join(home, ".claude", ".credentials.json"); got != want {
		t.Errorf("default store = %q, want %q", got, want)
	}

	cfg := t.TempDir()
	t.Setenv("CLAUDE_CONFIG_DIR", cfg)
	writeClaudeFile(t, filepath.Join(cfg, ".credentials.json"), claudeDoc("sk-ant-oat01-cfgdir", "", time.Time{}))
	c2, _ := newTestClaude(t, &Claude{}, newFakeClock(), nil)
	cred, err := c2.Credential(testCtx(t))
	if err != nil || cred.Secret != "sk-ant-oat01-cfgdir" {
		t.Errorf("CLAUDE_CONFIG_DIR: %q, %v", cred.Secret, err)
	}

	c3, _ := newTestClaude(t, &Claude{File: "~/elsewhere.json"}, newFakeClock(), nil)
	if got, want := c3.store.where(), "file "+filepath.Join(home, "elsewhere.json"); got != want {
		t.Errorf("~ store = %q, want %q", got, want)
	}
}

func TestClaudeKeychainMode(t *testing.T) {
	sec := newFakeSecurity(t)
	clock := newFakeClock()
	ep := newFakeTokenEndpoint(t)
	compact := func(s string) string {
		var m any
		json.Unmarshal([]byte(s), &m)
		b, _ := json.Marshal(m)
		return string(b)
	}
	sec.setItem(t, compact(claudeDoc(oldAccess, oldRefresh, clock.Now().Add(time.Hour))))
	c, logs := newTestClaude(t, &Claude{Keychain: &ClaudeKeychain{}}, clock, ep)
	ctx := testCtx(t)

	cred, err := c.Credential(ctx)
	if err != nil || cred.Secret != oldAccess {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	calls := sec.calls(t)
	if len(calls) != 1 || strings.Join(calls[0], "|") != "find-generic-password|-s|Claude Code-credentials|-w" {
		t.Fatalf("security calls = %q", calls)
	}

	// Cached: no new read within a minute.
	c.Credential(ctx)
	if n := len(sec.calls(t)); n != 1 {
		t.Errorf("%d security calls, want 1", n)
	}

	// Near expiry: refreshed and written back to the item.
	clock.Advance(56 * time.Minute)
	cred, err = c.Credential(ctx)
	if err != nil || cred.Secret != "sk-ant-oat01-new-1" {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	var add []string
	for _, call := range sec.calls(t) {
		if len(call) > 0 && call[0] == "add-generic-password" {
			add = call
		}
	}
	if len(add) != 8 || strings.Join(add[:7], "|") != "add-generic-password|-U|-s|Claude Code-credentials|-a|tester|-w" {
		t.Fatalf("write = %q", add)
	}
	written := add[7]
	if strings.Contains(written, "\n") {
		t.Error("the item was written with a newline")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal([]byte(written), &top); err != nil {
		t.Fatal(err)
	}
	var oauth map[string]any
	json.Unmarshal(top["claudeAiOauth"], &oauth)
	if oauth["accessToken"] != "sk-ant-oat01-new-1" || oauth["subscriptionType"] != "max" || top["mcpOAuth"] == nil {
		t.Errorf("written item = %s", written)
	}

	// The next read (a minute later) gets the written item back.
	clock.Advance(2 * time.Minute)
	cred, _ = c.Credential(ctx)
	if cred.Secret != "sk-ant-oat01-new-1" || ep.hits.Load() != 1 {
		t.Errorf("%q after %d hits", cred.Secret, ep.hits.Load())
	}
	assertLogsExclude(t, logs, oldAccess, oldRefresh, "sk-ant-oat01-new-1", "sk-ant-ort01-new-1")
}

func TestClaudeKeychainServiceAccountAndErrors(t *testing.T) {
	sec := newFakeSecurity(t)
	clock := newFakeClock()
	// security prints values with newlines as hex.
	hexed := fmt.Sprintf("%x", claudeDoc("sk-ant-oat01-hex", "", time.Time{}))
	sec.setItem(t, hexed)
	c, _ := newTestClaude(t, &Claude{Keychain: &ClaudeKeychain{Service: "Claude Code-credentials-1a2b3c4d", Account: "alice"}}, clock, nil)
	cred, err := c.Credential(testCtx(t))
	if err != nil || cred.Secret != "sk-ant-oat01-hex" {
		t.Fatalf("hex item: %q, %v", cred.Secret, err)
	}
	if got := strings.Join(sec.calls(t)[0], "|"); got != "find-generic-password|-s|Claude Code-credentials-1a2b3c4d|-a|alice|-w" {
		t.Errorf("security called with %q", got)
	}

	sec.setFail(t, "security: The specified item could not be found in the keychain. notfound")
	clock.Advance(keychainReread)
	_, err = c.Credential(testCtx(t))
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "Claude Code-credentials-1a2b3c4d") {
		t.Errorf("missing item: err = %v", err)
	}
	if st := c.Status(); st.State != StateMissing {
		t.Errorf("status = %+v", st)
	}
}

func TestClaudeCaddyfile(t *testing.T) {
	var c Claude
	if err := unmarshalCaddyfile(t, &c, `claude`); err != nil {
		t.Fatal(err)
	}
	if c.File != "" || c.Keychain != nil || c.TokenURL != "" || c.ClientID != "" || c.RefreshBefore != 0 {
		t.Errorf("defaults changed: %+v", c)
	}

	var full Claude
	err := unmarshalCaddyfile(t, &full, `claude {
		file ~/.claude/.credentials.json   # the default
		token_url https://example.test/v1/oauth/token
		client_id my-client
		refresh_before 10m
	}`)
	if err != nil {
		t.Fatal(err)
	}
	if full.File != "~/.claude/.credentials.json" || full.TokenURL != "https://example.test/v1/oauth/token" ||
		full.ClientID != "my-client" || time.Duration(full.RefreshBefore) != 10*time.Minute {
		t.Errorf("parsed %+v", full)
	}
	if err := full.Validate(); err != nil {
		t.Error(err)
	}

	for input, want := range map[string]ClaudeKeychain{
		"claude {\n\tkeychain\n}":                                 {},
		"claude {\n\tkeychain \"My Service\"\n}":                  {Service: "My Service"},
		"claude {\n\tkeychain \"Claude Code-credentials\" bob\n}": {Service: "Claude Code-credentials", Account: "bob"},
	} {
		var c Claude
		if err := unmarshalCaddyfile(t, &c, input); err != nil {
			t.Errorf("%q: %v", input, err)
			continue
		}
		if c.Keychain == nil || *c.Keychain != want {
			t.Errorf("%q: keychain = %+v, want %+v", input, c.Keychain, want)
		}
	}

	for _, bad := range []string{
		"claude somefile",
		"claude {\n\tfile\n}",
		"claude {\n\tfile a b\n}",
		"claude {\n\tkeychain a b c\n}",
		"claude {\n\ttoken_url\n}",
		"claude {\n\tclient_id\n}",
		"claude {\n\trefresh_before\n}",
		"claude {\n\trefresh_before later\n}",
		"claude {\n\trefresh_before 0\n}",
		"claude {\n\tscopes user:inference\n}",
		"claude {\n\tfile /x\n\tkeychain\n}",
	} {
		var c Claude
		if err := unmarshalCaddyfile(t, &c, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestClaudeValidate(t *testing.T) {
	for _, c := range []*Claude{
		{File: "/x", Keychain: &ClaudeKeychain{}},
		{TokenURL: "not a url"},
		{TokenURL: "ftp://example.test/token"},
		{RefreshBefore: caddyDuration(-time.Minute)},
	} {
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestClaudeLoadedFromJSON(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, ".credentials.json")
	writeClaudeFile(t, path, claudeDoc(oldAccess, oldRefresh, time.Now().Add(time.Hour)))
	m, err := loadModule(t, "llm.credentials.claude", `{"file":"`+path+`","refresh_before":"10m"}`)
	if err != nil {
		t.Fatal(err)
	}
	c := m.(*Claude)
	if c.refreshBefore != 10*time.Minute || c.tokenURL != DefaultClaudeTokenURL || c.clientID != DefaultClaudeClientID {
		t.Errorf("provisioned %v %q %q", c.refreshBefore, c.tokenURL, c.clientID)
	}
	cred, err := c.Credential(testCtx(t))
	if err != nil || cred.Secret != oldAccess {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	b, _ := json.Marshal(c)
	if string(b) != `{"file":"`+path+`","refresh_before":600000000000}` {
		t.Errorf("JSON = %s", b)
	}
	assertJSONExcludes(t, c, oldAccess, oldRefresh)
	if _, err := loadModule(t, "llm.credentials.claude", `{"file":"/x","keychain":{}}`); err == nil {
		t.Error("file and keychain together were accepted")
	}
}

func TestOAuthErrorDetail(t *testing.T) {
	for body, want := range map[string]string{
		`{"error":"invalid_grant","error_description":"bad token"}`:                                    ": invalid_grant: bad token",
		`{"type":"error","error":{"type":"invalid_request_error","message":"Invalid request format"}}`: ": invalid_request_error: Invalid request format",
		`<html>cloudflare</html>`: "",
		`{}`:                      "",
	} {
		if got := oauthErrorDetail([]byte(body)); got != want {
			t.Errorf("%s: got %q, want %q", body, got, want)
		}
	}
}

func TestMergeClaudeCredentialsKeepsEverything(t *testing.T) {
	doc := `{"b":[1,2,{"x":"<&>"}],"claudeAiOauth":{"accessToken":"a","refreshToken":"r","expiresAt":1,"extra":{"k":true}},"a":null}`
	out, err := mergeClaudeCredentials([]byte(doc), claudeToken{access: "A2", expiresAt: time.UnixMilli(5000)})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"a":null,"b":[1,2,{"x":"<&>"}],"claudeAiOauth":{"accessToken":"A2","expiresAt":5000,"extra":{"k":true},"refreshToken":"r"}}`
	if string(out) != want {
		t.Errorf("got  %s\nwant %s", out, want)
	}
	// No expiry: the stale one is removed rather than kept.
	out, _ = mergeClaudeCredentials([]byte(doc), claudeToken{access: "A3"})
	if strings.Contains(string(out), "expiresAt") {
		t.Errorf("stale expiresAt kept: %s", out)
	}
}

func TestClaudeNotProvisioned(t *testing.T) {
	var c Claude
	if _, err := c.Credential(context.Background()); err == nil {
		t.Error("no error")
	}
	if c.Status().State != StateInvalid || c.Refused(context.Background(), "") {
		t.Error("unprovisioned source looks usable")
	}
}
