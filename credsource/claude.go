package credsource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Claude{})
}

// Claude Code's public OAuth client. These are the values of the TOKEN_URL
// and CLIENT_ID constants in the production OAuth config block of the
// Claude Code CLI bundle (@anthropic-ai/claude-code, 2.1.x). Claude Code
// versions before early 2026 used https://console.anthropic.com/v1/oauth/token
// with the same client id; set token_url to that if you need it.
const (
	DefaultClaudeTokenURL = "https://platform.claude.com/v1/oauth/token"
	DefaultClaudeClientID = "9d1c250a-e61b-44d9-88ed-5944d1962f5e"
)

// DefaultClaudeRefreshBefore is how long before expiry a token is refreshed
// by default (Claude Code uses the same margin).
const DefaultClaudeRefreshBefore = 5 * time.Minute

// Claude uses the login of Claude Code (a Claude subscription) as the
// credential: the OAuth access token that `claude /login` stores in
// ~/.claude/.credentials.json (Linux, Windows) or in the macOS Keychain. The
// token is sent as `Authorization: Bearer` with the OAuth anthropic-beta.
//
// Before the token expires, it is refreshed with the login's refresh token
// (one refresh at a time, however many requests wait), and the new tokens
// are written back where they came from, so Claude Code keeps working with
// them; every other field of the stored JSON is kept. The store is also
// watched, so a refresh or a new login made by Claude Code itself is picked
// up without a reload. A long-lived token from `claude setup-token` (no
// refresh token) is used as is.
//
// If a refresh fails while the token is still valid, the token is kept and
// the status says refresh_failed; the refresh is retried after 30 seconds.
// Once the token has expired, requests fail (so the failover moves on) until
// a refresh succeeds or Claude Code logs in again.
//
// Caddyfile:
//
//	credential claude {
//	    file ~/.claude/.credentials.json    # default; or:
//	    keychain [SERVICE [ACCOUNT]]        # macOS Keychain
//	    token_url https://platform.claude.com/v1/oauth/token
//	    client_id 9d1c250a-e61b-44d9-88ed-5944d1962f5e
//	    refresh_before 5m
//	}
//
// `credential claude` alone uses all the defaults.
type Claude struct {
	// File is Claude Code's credentials file. Default:
	// $CLAUDE_CONFIG_DIR/.credentials.json if that variable is set in
	// Caddy's environment, else ~/.claude/.credentials.json. A leading `~/`
	// is the home directory of the user Caddy runs as. Caddy must be able
	// to write the file (and its directory) to save refreshed tokens.
	File string `json:"file,omitempty"`

	// Keychain reads the login from the macOS Keychain instead of a file.
	Keychain *ClaudeKeychain `json:"keychain,omitempty"`

	// TokenURL is the OAuth token endpoint used to refresh the token.
	// Default: Claude Code's, https://platform.claude.com/v1/oauth/token.
	TokenURL string `json:"token_url,omitempty"`

	// ClientID is the OAuth client id sent with a refresh. Default: Claude
	// Code's public client id.
	ClientID string `json:"client_id,omitempty"`

	// RefreshBefore is how long before its expiry a token is refreshed.
	// Default: 5m.
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`

	store         claudeStore
	tokenURL      string
	clientID      string
	refreshBefore time.Duration
	now           func() time.Time
	client        *http.Client
	logger        *zap.Logger

	// mu guards the fields below. It is never held while the store is
	// read or written, a program runs or the token endpoint is called:
	// requests take it only to copy what is known.
	mu           *sync.Mutex // set by Provision
	loaded       bool        // the store was read at least once
	gen          uint64      // counts what was adopted; a read started before a change is dropped
	stamp        any         // the store's stamp when last read
	readAt       time.Time   // when the store was last read
	doc          []byte      // the stored document as last read
	tok          claudeToken // the token in use
	storedAccess string      // the access token the store held when last read or written
	loadErr      error       // why the store could not be read; tok is empty then
	refreshErr   error       // the last refresh failure; nil after a success
	refreshErrAt time.Time
	refreshedAt  time.Time
	writeErr     error // why the last refreshed token could not be saved
	flight       *refreshFlight
	syncing      chan struct{} // a background read of a slow store; closed when done
	syncStarted  time.Time     // when it started (wall clock)
}

// ClaudeKeychain selects the macOS Keychain item that holds Claude Code's
// login. It is read with `security find-generic-password -s SERVICE -w` and
// updated with `security add-generic-password -U`.
type ClaudeKeychain struct {
	// Service is the item's service name. Default: "Claude Code-credentials",
	// the item Claude Code writes for its default config directory. With
	// CLAUDE_CONFIG_DIR, Claude Code may use a suffixed name; find it with
	// `security dump-keychain | grep "Claude Code-credentials"`.
	Service string `json:"service,omitempty"`

	// Account is the item's account name. Default: the existing item's
	// account (Claude Code uses the user name).
	Account string `json:"account,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Claude) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".claude",
		New: func() caddy.Module { return new(Claude) },
	}
}

// Provision sets up the source. The store is not read yet: Claude Code may
// log in after Caddy started.
func (c *Claude) Provision(ctx caddy.Context) error {
	return c.setup(ctx.Logger())
}

func (c *Claude) setup(logger *zap.Logger) error {
	if logger == nil {
		logger = zap.NewNop()
	}
	c.logger = logger
	c.mu = new(sync.Mutex)
	if c.now == nil {
		c.now = time.Now
	}
	if c.client == nil {
		c.client = &http.Client{Timeout: claudeRefreshTimeout}
	}
	c.tokenURL = c.TokenURL
	if c.tokenURL == "" {
		c.tokenURL = DefaultClaudeTokenURL
	}
	c.clientID = c.ClientID
	if c.clientID == "" {
		c.clientID = DefaultClaudeClientID
	}
	c.refreshBefore = time.Duration(c.RefreshBefore)
	if c.refreshBefore <= 0 {
		c.refreshBefore = DefaultClaudeRefreshBefore
	}
	if c.Keychain != nil {
		service := c.Keychain.Service
		if service == "" {
			service = DefaultClaudeKeychainService
		}
		c.store = &claudeKeychainStore{service: service, account: c.Keychain.Account}
	} else {
		path := c.File
		if path == "" {
			path = defaultClaudeCredentialsPath()
		}
		expanded, err := expandHome(path)
		if err != nil {
			return fmt.Errorf("claude credential: %w", err)
		}
		c.store = &claudeFileStore{path: expanded}
	}
	return nil
}

// Validate checks the configuration.
func (c *Claude) Validate() error {
	if c.File != "" && c.Keychain != nil {
		return fmt.Errorf("claude credential: use either file or keychain, not both")
	}
	if c.TokenURL != "" {
		u, err := url.Parse(c.TokenURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("claude credential: token_url must be an http(s) URL, got %q", c.TokenURL)
		}
	}
	if c.RefreshBefore < 0 {
		return fmt.Errorf("claude credential: refresh_before must not be negative")
	}
	return nil
}

// DefaultAuthHeader says that an OAuth token is sent as a bearer token.
func (c *Claude) DefaultAuthHeader() string { return AuthHeaderBearer }

// Credential returns the current access token, refreshing it first when it
// expires within refresh_before. A token that is still valid is not held
// back longer than claudeValidTokenWait for its refresh.
func (c *Claude) Credential(ctx context.Context) (Credential, error) {
	if c.mu == nil {
		return Credential{}, errNotProvisioned
	}
	c.syncStore(ctx, false, waitForever)
	tok, loadErr := c.current()
	if loadErr != nil {
		return Credential{}, loadErr
	}

	if c.wantsRefresh(tok) {
		wait := ctx
		if !c.expired(tok) {
			var cancel context.CancelFunc
			wait, cancel = context.WithTimeout(ctx, claudeValidTokenWait)
			defer cancel()
		}
		err := c.refresh(wait, false, tok.access)
		tok, loadErr = c.current()
		if loadErr != nil {
			return Credential{}, loadErr
		}
		if c.expired(tok) {
			if err == nil {
				err = errors.New("no new token was obtained")
			}
			return Credential{}, fmt.Errorf("claude credential from %s expired at %s and could not be refreshed: %w",
				c.store.where(), tok.expiresAt.UTC().Format(time.RFC3339), err)
		}
		// Still valid: keep serving it; a failure shows in Status.
	} else if c.expired(tok) {
		return Credential{}, c.expiredError(tok)
	}
	return credentialOf(tok), nil
}

// Ready returns the token in use without waiting on the store or the
// token endpoint longer than wait (see ReadySource). A token due for
// refresh is returned while it is still valid, and refreshed in the
// background; an expired one is an error while its refresh runs in the
// background. A Keychain store is read in the background: until its first
// read ends, Ready returns ErrNotReady.
func (c *Claude) Ready(ctx context.Context, wait time.Duration) (Credential, error) {
	if c.mu == nil {
		return Credential{}, errNotProvisioned
	}
	c.syncStore(ctx, false, wait)
	c.mu.Lock()
	loaded, tok, loadErr := c.loaded, c.tok, c.loadErr
	c.mu.Unlock()
	if !loaded {
		return Credential{}, ErrNotReady
	}
	if loadErr != nil {
		return Credential{}, loadErr
	}
	if !c.wantsRefresh(tok) {
		if c.expired(tok) {
			return Credential{}, c.expiredError(tok)
		}
		return credentialOf(tok), nil
	}
	f, err := c.startRefresh(ctx, false, tok.access)
	if f != nil && waitDone(ctx, f.done, readyWait(f.started, wait)) {
		err = f.err
		if tok, loadErr = c.current(); loadErr != nil {
			return Credential{}, loadErr
		}
	}
	if !c.expired(tok) {
		return credentialOf(tok), nil
	}
	if err == nil && f != nil {
		return Credential{}, fmt.Errorf("claude credential from %s expired at %s; it is being refreshed",
			c.store.where(), tok.expiresAt.UTC().Format(time.RFC3339))
	}
	if err == nil {
		err = errors.New("no new token was obtained")
	}
	return Credential{}, fmt.Errorf("claude credential from %s expired at %s and could not be refreshed: %w",
		c.store.where(), tok.expiresAt.UTC().Format(time.RFC3339), err)
}

// Warm reads the store (a Keychain store in the background). It does not
// refresh the token.
func (c *Claude) Warm(ctx context.Context) {
	if c.mu != nil {
		c.syncStore(ctx, false, 0)
	}
}

// current returns the token in use and why the store could not be read.
func (c *Claude) current() (claudeToken, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok, c.loadErr
}

func (c *Claude) expiredError(tok claudeToken) error {
	return fmt.Errorf("claude credential from %s expired at %s and has no refresh token (log in again)",
		c.store.where(), tok.expiresAt.UTC().Format(time.RFC3339))
}

func credentialOf(tok claudeToken) Credential {
	return Credential{
		Secret:    tok.access,
		Version:   Fingerprint(tok.access),
		ExpiresAt: tok.expiresAt,
		Betas:     []string{OAuthBeta},
	}
}

// Refused is called when the provider refused the token with the given
// version. The store is read again first (Claude Code may have refreshed
// it); if it still holds the refused token, one refresh is forced (shared
// with concurrent callers). It returns true when a different token is now
// available.
func (c *Claude) Refused(ctx context.Context, version string) bool {
	if c.mu == nil {
		return false
	}
	c.syncStore(ctx, true, waitForever)
	tok, loadErr := c.current()
	if loadErr != nil || tok.access == "" {
		return false
	}
	if Fingerprint(tok.access) != version {
		return true
	}
	if tok.refresh == "" {
		return false
	}
	if err := c.refresh(ctx, true, tok.access); err != nil {
		return false
	}
	tok, _ = c.current()
	return tok.access != "" && Fingerprint(tok.access) != version && !c.expired(tok)
}

// Status reports the token's state and expiry without revealing it.
func (c *Claude) Status() Status {
	if c.mu == nil {
		return Status{State: StateInvalid, Reason: errNotProvisioned.Error()}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*defaultCommandTimeout)
	c.syncStore(ctx, false, waitForever)
	cancel()
	c.mu.Lock()
	tok, loadErr, refreshErr, writeErr := c.tok, c.loadErr, c.refreshErr, c.writeErr
	c.mu.Unlock()

	if loadErr != nil {
		if errors.Is(loadErr, ErrMissing) {
			return Status{State: StateMissing, Reason: loadErr.Error()}
		}
		return Status{State: StateInvalid, Reason: loadErr.Error()}
	}
	st := Status{State: StateOK, ExpiresAt: tok.expiresAt}
	switch {
	case c.expired(tok) && refreshErr != nil:
		st.State, st.Reason = StateExpired, "token expired; refresh failed: "+refreshErr.Error()
	case c.expired(tok) && tok.refresh == "":
		st.State, st.Reason = StateExpired, "token expired and there is no refresh token; log in again with Claude Code"
	case c.expired(tok):
		st.State, st.Reason = StateExpired, "token expired; it is refreshed on the next request"
	case refreshErr != nil:
		st.State, st.Reason = StateRefreshFailed, "refresh failed, the current token is still used: "+refreshErr.Error()
	case writeErr != nil:
		st.Reason = "the refreshed token is used but could not be saved: " + writeErr.Error()
	}
	return st
}

// expired reports whether tok is past its expiry (a token without one never
// expires as far as this source knows).
func (c *Claude) expired(tok claudeToken) bool {
	return !tok.expiresAt.IsZero() && !c.now().Before(tok.expiresAt)
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	credential claude {
//	    file PATH
//	    keychain [SERVICE [ACCOUNT]]
//	    token_url URL
//	    client_id ID
//	    refresh_before DURATION
//	}
func (c *Claude) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "file":
			if !d.NextArg() {
				return d.ArgErr()
			}
			c.File = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "keychain":
			kc := &ClaudeKeychain{}
			if d.NextArg() {
				kc.Service = d.Val()
			}
			if d.NextArg() {
				kc.Account = d.Val()
			}
			if d.NextArg() {
				return d.ArgErr()
			}
			c.Keychain = kc
		case "token_url":
			if !d.NextArg() {
				return d.ArgErr()
			}
			c.TokenURL = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "client_id":
			if !d.NextArg() {
				return d.ArgErr()
			}
			c.ClientID = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "refresh_before":
			dur, err := parseDurationArg(d, false)
			if err != nil {
				return err
			}
			c.RefreshBefore = dur
		default:
			return d.Errf("unknown claude credential option %q", d.Val())
		}
	}
	if c.File != "" && c.Keychain != nil {
		return d.Err("claude credential: use either file or keychain, not both")
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*Claude)(nil)
	_ Refresher             = (*Claude)(nil)
	_ ReadySource           = (*Claude)(nil)
	_ Warmer                = (*Claude)(nil)
	_ StatusReporter        = (*Claude)(nil)
	_ DefaultAuthHeader     = (*Claude)(nil)
	_ caddy.Provisioner     = (*Claude)(nil)
	_ caddy.Validator       = (*Claude)(nil)
	_ caddyfile.Unmarshaler = (*Claude)(nil)
)
