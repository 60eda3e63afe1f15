package credsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

const (
	// claudeRefreshTimeout bounds one call to the token endpoint.
	claudeRefreshTimeout = 30 * time.Second

	// claudeRetryAfter is how long a failed refresh is not tried again
	// (unless the store changes), so a failing endpoint is not called for
	// every request.
	claudeRetryAfter = 30 * time.Second

	// claudeMinRefreshInterval keeps a refresh_before longer than the
	// token's lifetime from refreshing on every request.
	claudeMinRefreshInterval = time.Minute

	// A store caught mid-write (not valid JSON) is read claudeReadTries
	// times, claudeReadRetryDelay apart, before it is reported invalid.
	claudeReadTries      = 4
	claudeReadRetryDelay = 50 * time.Millisecond

	// maxTokenResponse caps the token endpoint's response read.
	maxTokenResponse = 1 << 20
)

// refreshFlight is one refresh in progress; its waiters share the outcome.
type refreshFlight struct {
	done chan struct{}
	err  error
}

func (f *refreshFlight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// syncLocked reads the store again if it changed (or when force is set) and
// adopts what it holds. c.mu must be held.
func (c *Claude) syncLocked(ctx context.Context, force bool) {
	if c.loaded && !force && !c.store.stale(c.now()) {
		return
	}
	doc, tok, err := c.readStoreLocked(ctx)
	c.loaded = true
	if err != nil {
		if c.loadErr == nil || c.loadErr.Error() != err.Error() {
			c.logger.Warn("cannot read the claude credentials", zap.Error(err))
		}
		c.doc, c.tok, c.storedAccess, c.loadErr = nil, claudeToken{}, "", err
		return
	}
	c.doc, c.loadErr = doc, nil
	if tok.access == c.storedAccess && c.tok.access != "" && c.tok.access != tok.access {
		// The store still holds the token that a refresh replaced but
		// could not save: keep the newer one from memory.
		return
	}
	if tok.access != c.tok.access {
		if c.tok.access != "" {
			c.logger.Info("picked up a new claude token from the store",
				zap.String("store", c.store.where()),
				zap.String("version", Fingerprint(tok.access)),
				zap.Time("expires_at", tok.expiresAt))
		}
		// A new login or Claude Code's own refresh supersedes ours.
		c.refreshErr, c.writeErr = nil, nil
	}
	c.tok, c.storedAccess = tok, tok.access
}

// readStoreLocked reads and parses the store, reading again a few times when
// the content is not JSON (a writer may be half way through).
func (c *Claude) readStoreLocked(ctx context.Context) ([]byte, claudeToken, error) {
	var lastErr error
	for attempt := 0; attempt < claudeReadTries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(claudeReadRetryDelay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, claudeToken{}, fmt.Errorf("claude credentials: %w", ctx.Err())
			}
		}
		doc, err := c.store.read(ctx, c.now())
		if err != nil {
			return nil, claudeToken{}, fmt.Errorf("claude credentials: %w", err)
		}
		tok, err := parseClaudeCredentials(doc)
		if err == nil {
			return doc, tok, nil
		}
		lastErr = err
		if !errors.Is(err, errNotJSON) {
			break
		}
	}
	return nil, claudeToken{}, fmt.Errorf("claude credentials: %s %w", c.store.where(), lastErr)
}

// wantsRefresh reports whether tok is due for a refresh: it can be
// refreshed and expires within refresh_before.
func (c *Claude) wantsRefresh(tok claudeToken) bool {
	if tok.refresh == "" || tok.expiresAt.IsZero() {
		return false
	}
	return !c.now().Before(tok.expiresAt.Add(-c.refreshBefore))
}

// refresh obtains a new token for the one the caller saw (seen), unless
// the store already holds another one. Only one refresh runs at a time;
// concurrent callers wait for it and share its outcome. force refreshes even
// a token that is not due (the provider refused it).
func (c *Claude) refresh(ctx context.Context, force bool, seen string) error {
	c.mu.Lock()
	if f := c.flight; f != nil {
		c.mu.Unlock()
		return f.wait(ctx)
	}
	if c.refreshErr != nil && c.tok.access == seen && c.now().Sub(c.refreshErrAt) < claudeRetryAfter {
		err := c.refreshErr
		c.mu.Unlock()
		return err
	}
	// Claude Code itself may have refreshed meanwhile; its refresh token
	// rotates, so using a stale one would fail.
	c.syncLocked(ctx, true)
	tok, loadErr := c.tok, c.loadErr
	if loadErr != nil {
		c.mu.Unlock()
		return loadErr
	}
	if tok.access != seen {
		c.mu.Unlock()
		return nil
	}
	if !force {
		recent := !c.refreshedAt.IsZero() && c.now().Sub(c.refreshedAt) < claudeMinRefreshInterval
		if !c.wantsRefresh(tok) || (recent && !c.expired(tok)) {
			c.mu.Unlock()
			return nil
		}
	}
	if tok.refresh == "" {
		c.mu.Unlock()
		return errors.New("the login has no refresh token")
	}
	f := &refreshFlight{done: make(chan struct{})}
	c.flight = f
	c.mu.Unlock()

	// The refresh must not end with the first caller's request.
	go c.runRefresh(context.WithoutCancel(ctx), tok, f)
	return f.wait(ctx)
}

func (c *Claude) runRefresh(ctx context.Context, old claudeToken, f *refreshFlight) {
	ctx, cancel := context.WithTimeout(ctx, claudeRefreshTimeout)
	defer cancel()
	tok, err := c.requestToken(ctx, old)

	c.mu.Lock()
	if err != nil {
		c.refreshErr, c.refreshErrAt = err, c.now()
		c.logger.Warn("refreshing the claude token failed",
			zap.String("store", c.store.where()),
			zap.Time("expires_at", old.expiresAt),
			zap.Error(err))
	} else {
		c.tok, c.refreshErr, c.refreshedAt = tok, nil, c.now()
		c.logger.Info("refreshed the claude token",
			zap.String("store", c.store.where()),
			zap.String("version", Fingerprint(tok.access)),
			zap.Time("expires_at", tok.expiresAt))
		c.saveLocked(ctx, tok)
	}
	c.flight = nil
	f.err = err
	close(f.done)
	c.mu.Unlock()
}

// saveLocked writes a refreshed token back to the store, merged into the
// freshest document so that keys written meanwhile by Claude Code are kept.
// A failure is logged and shown in Status; the token is used anyway.
func (c *Claude) saveLocked(ctx context.Context, tok claudeToken) {
	base := c.doc
	if fresh, err := c.store.read(ctx, c.now()); err == nil && json.Valid(fresh) {
		base = fresh
	}
	doc, err := mergeClaudeCredentials(base, tok)
	if err == nil {
		err = c.store.write(ctx, doc)
	}
	if err != nil {
		c.writeErr = err
		c.logger.Error("could not save the refreshed claude token; it is used from memory",
			zap.String("store", c.store.where()), zap.Error(err))
		return
	}
	c.doc, c.storedAccess, c.writeErr = doc, tok.access, nil
}

// claudeTokenRequest is the refresh-token grant as Claude Code sends it: a
// JSON body (not the form encoding of RFC 6749), with the client id and the
// login's scopes.
type claudeTokenRequest struct {
	GrantType    string `json:"grant_type"`
	RefreshToken string `json:"refresh_token"`
	ClientID     string `json:"client_id"`
	Scope        string `json:"scope,omitempty"`
}

// requestToken exchanges old's refresh token for a new token.
func (c *Claude) requestToken(ctx context.Context, old claudeToken) (claudeToken, error) {
	body, err := json.Marshal(claudeTokenRequest{
		GrantType:    "refresh_token",
		RefreshToken: old.refresh,
		ClientID:     c.clientID,
		Scope:        strings.Join(old.scopes, " "),
	})
	if err != nil {
		return claudeToken{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL, bytes.NewReader(body))
	if err != nil {
		return claudeToken{}, fmt.Errorf("token endpoint: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "caddy-llm-failover")
	resp, err := c.client.Do(req)
	if err != nil {
		return claudeToken{}, fmt.Errorf("token endpoint: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse))
	if err != nil {
		return claudeToken{}, fmt.Errorf("token endpoint %s: reading the response: %w", c.tokenURL, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return claudeToken{}, fmt.Errorf("token endpoint %s returned %s%s", c.tokenURL, resp.Status, oauthErrorDetail(data))
	}
	var tr struct {
		AccessToken  string          `json:"access_token"`
		RefreshToken string          `json:"refresh_token"`
		ExpiresIn    json.RawMessage `json:"expires_in"`
		Scope        string          `json:"scope"`
	}
	if err := json.Unmarshal(data, &tr); err != nil {
		return claudeToken{}, fmt.Errorf("token endpoint %s returned a response that is not a token (%s)", c.tokenURL, jsonTypeError(err))
	}
	if tr.AccessToken == "" {
		return claudeToken{}, fmt.Errorf("token endpoint %s returned no access_token", c.tokenURL)
	}
	tok := claudeToken{access: tr.AccessToken, refresh: old.refresh, scopes: old.scopes}
	if tr.RefreshToken != "" {
		tok.refresh = tr.RefreshToken
	}
	if secs, ok := parseEpochMillis(tr.ExpiresIn); ok && secs > 0 {
		tok.expiresAt = c.now().Add(time.Duration(secs) * time.Second)
	}
	if scopes := strings.Fields(tr.Scope); len(scopes) > 0 {
		tok.scopes = scopes
	}
	return tok, nil
}

// oauthErrorDetail extracts the error code and description of an error
// response (OAuth style, or Anthropic's {"error":{"type","message"}}),
// never the raw body.
func oauthErrorDetail(body []byte) string {
	var e struct {
		Error       json.RawMessage `json:"error"`
		Description string          `json:"error_description"`
	}
	if json.Unmarshal(body, &e) != nil {
		return ""
	}
	var code string
	if json.Unmarshal(e.Error, &code) != nil {
		var obj struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		}
		if json.Unmarshal(e.Error, &obj) == nil {
			code = obj.Type
			if e.Description == "" {
				e.Description = obj.Message
			}
		}
	}
	var parts []string
	for _, p := range []string{code, e.Description} {
		if p = strings.TrimSpace(p); p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return ": " + capString(strings.Join(parts, ": "), 300)
}
