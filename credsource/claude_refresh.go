package credsource

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
)

const (
	// claudeRefreshTimeout bounds one call to the token endpoint.
	claudeRefreshTimeout = 30 * time.Second

	// claudeValidTokenWait bounds how long a caller willing to wait
	// (Credential) waits for the refresh of a token that is still valid,
	// before using it as it is.
	claudeValidTokenWait = 2 * time.Second

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
	started time.Time // wall clock, for readyWait
	done    chan struct{}
	err     error
}

func (f *refreshFlight) wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// syncStore reads the store again if it may have changed (or when force is
// set) and adopts what it holds. No lock is held while the store is read.
// A slow store (the Keychain) is read by one background goroutine at a
// time; the caller waits for it at most wait (waitForever: until ctx ends).
func (c *Claude) syncStore(ctx context.Context, force bool, wait time.Duration) {
	c.mu.Lock()
	due := force || !c.loaded || c.store.changed(c.stamp, c.readAt, c.now())
	if !due {
		c.mu.Unlock()
		return
	}
	if !c.store.slow() {
		gen := c.gen
		c.mu.Unlock()
		c.readAndAdopt(ctx, gen)
		return
	}
	loaded := c.loaded
	done := c.syncing
	if done == nil {
		done = make(chan struct{})
		c.syncing, c.syncStarted = done, time.Now()
		gen := c.gen
		go func() {
			defer func() {
				if r := recover(); r != nil {
					c.logger.Error("reading the claude credentials panicked", zap.Any("panic", r))
				}
				c.mu.Lock()
				c.syncing = nil
				close(done)
				c.mu.Unlock()
			}()
			c.readAndAdopt(context.WithoutCancel(ctx), gen)
		}()
	}
	started := c.syncStarted
	c.mu.Unlock()
	switch {
	case wait == waitForever:
		waitDone(ctx, done, wait)
	case !loaded:
		// a store read before is used while it is read again
		waitDone(ctx, done, readyWait(started, wait))
	}
}

// waitForever makes waitDone wait until its context ends.
const waitForever = time.Duration(math.MaxInt64)

// readAndAdopt reads the store without a lock and adopts what it read,
// unless something newer was adopted since gen (a refreshed token, a
// concurrent read): then this read is dropped, and the stamp left as it is
// makes the next check read again if needed.
func (c *Claude) readAndAdopt(ctx context.Context, gen uint64) {
	doc, stamp, tok, err := c.readStore(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return
	}
	c.adoptLocked(doc, stamp, tok, err)
}

// adoptLocked takes what the store held. c.mu must be held.
func (c *Claude) adoptLocked(doc []byte, stamp any, tok claudeToken, err error) {
	c.gen++
	c.loaded, c.readAt = true, c.now()
	if err != nil {
		if c.loadErr == nil || c.loadErr.Error() != err.Error() {
			c.logger.Warn("cannot read the claude credentials", zap.Error(err))
		}
		c.doc, c.tok, c.storedAccess, c.loadErr, c.stamp = nil, claudeToken{}, "", err, nil
		return
	}
	c.doc, c.loadErr, c.stamp = doc, nil, stamp
	if tok.access == c.storedAccess && c.tok.access != "" && c.tok.access != tok.access {
		// The store still holds the token that a refresh replaced but
		// could not save (or is saving): keep the newer one from memory.
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

// readStore reads and parses the store, reading again a few times when the
// content is not JSON (a writer may be half way through).
func (c *Claude) readStore(ctx context.Context) ([]byte, any, claudeToken, error) {
	var lastErr error
	for attempt := 0; attempt < claudeReadTries; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(claudeReadRetryDelay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				return nil, nil, claudeToken{}, fmt.Errorf("claude credentials: %w", ctx.Err())
			}
		}
		doc, stamp, err := c.store.read(ctx)
		if err != nil {
			return nil, nil, claudeToken{}, fmt.Errorf("claude credentials: %w", err)
		}
		tok, err := parseClaudeCredentials(doc)
		if err == nil {
			return doc, stamp, tok, nil
		}
		lastErr = err
		if !errors.Is(err, errNotJSON) {
			break
		}
	}
	return nil, nil, claudeToken{}, fmt.Errorf("claude credentials: %s %w", c.store.where(), lastErr)
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
// the store already holds another one, and waits for it (bounded by ctx).
// Only one refresh runs at a time; concurrent callers share its outcome.
// force refreshes even a token that is not due (the provider refused it).
func (c *Claude) refresh(ctx context.Context, force bool, seen string) error {
	f, err := c.startRefresh(ctx, force, seen)
	if f == nil {
		return err
	}
	return f.wait(ctx)
}

// startRefresh starts a refresh of the token the caller saw in the
// background and returns it, or the refresh already under way. It starts
// nothing, and returns no flight, when another token is already in use,
// when the token is not due (unless force), or when a refresh of it failed
// less than claudeRetryAfter ago (that error is returned).
func (c *Claude) startRefresh(ctx context.Context, force bool, seen string) (*refreshFlight, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.flight; f != nil {
		return f, nil
	}
	tok := c.tok
	if c.refreshErr != nil && tok.access == seen && c.now().Sub(c.refreshErrAt) < claudeRetryAfter {
		return nil, c.refreshErr
	}
	if tok.access != seen {
		return nil, nil
	}
	if !force {
		recent := !c.refreshedAt.IsZero() && c.now().Sub(c.refreshedAt) < claudeMinRefreshInterval
		if !c.wantsRefresh(tok) || (recent && !c.expired(tok)) {
			return nil, nil
		}
	}
	if tok.refresh == "" {
		return nil, errors.New("the login has no refresh token")
	}
	f := &refreshFlight{done: make(chan struct{}), started: time.Now()}
	c.flight = f
	// The refresh must not end with the first caller's request.
	go c.runRefresh(context.WithoutCancel(ctx), seen, f)
	return f, nil
}

// runRefresh is one refresh, in its own goroutine. The store is read again
// first: Claude Code itself may have refreshed meanwhile, and its refresh
// token rotates, so using a stale one would fail.
func (c *Claude) runRefresh(ctx context.Context, seen string, f *refreshFlight) {
	var err error
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the refresh panicked: %v", r)
			c.logger.Error("refreshing the claude token panicked", zap.Any("panic", r))
			c.mu.Lock()
			c.refreshErr, c.refreshErrAt = err, c.now()
			c.mu.Unlock()
		}
		c.mu.Lock()
		c.flight = nil
		f.err = err
		close(f.done)
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(ctx, claudeRefreshTimeout)
	defer cancel()

	c.mu.Lock()
	gen := c.gen
	c.mu.Unlock()
	c.readAndAdopt(ctx, gen)
	old, loadErr := c.current()
	switch {
	case loadErr != nil:
		err = loadErr
		return
	case old.access != seen:
		return // the store holds another token now
	case old.refresh == "":
		err = errors.New("the login has no refresh token")
		return
	}

	tok, err := c.requestToken(ctx, old)
	c.mu.Lock()
	if err != nil {
		c.refreshErr, c.refreshErrAt = err, c.now()
		c.mu.Unlock()
		c.logger.Warn("refreshing the claude token failed",
			zap.String("store", c.store.where()),
			zap.Time("expires_at", old.expiresAt),
			zap.Error(err))
		return
	}
	c.tok, c.refreshErr, c.refreshedAt = tok, nil, c.now()
	c.gen++
	c.mu.Unlock()
	c.logger.Info("refreshed the claude token",
		zap.String("store", c.store.where()),
		zap.String("version", Fingerprint(tok.access)),
		zap.Time("expires_at", tok.expiresAt))
	c.save(ctx, tok)
}

// save writes a refreshed token back to the store, merged into the
// freshest document so that keys written meanwhile by Claude Code are kept.
// A failure is logged and shown in Status; the token is used anyway. Only
// the refresh in flight saves, so saves never overlap; no lock is held
// while the store is read or written.
func (c *Claude) save(ctx context.Context, tok claudeToken) {
	c.mu.Lock()
	base := c.doc
	c.mu.Unlock()
	if fresh, _, err := c.store.read(ctx); err == nil && json.Valid(fresh) {
		base = fresh
	}
	doc, err := mergeClaudeCredentials(base, tok)
	if err == nil {
		err = c.store.write(ctx, doc)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
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
