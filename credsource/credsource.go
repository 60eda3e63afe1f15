// Package credsource defines where a provider's credential comes from.
//
// A credential source is a Caddy module in the llm.credentials namespace. It
// is configured with names (an environment variable, a file path, a Keychain
// service), never with the secret itself, so a secret never lands in the JSON
// config, in `caddy adapt` output or in the admin API's /config/. The secret
// is resolved at request time.
package credsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"time"
)

// Namespace is the Caddy module namespace of credential sources.
const Namespace = "llm.credentials"

// How a credential is sent upstream. Any other value names a header that
// carries the raw credential.
const (
	AuthHeaderAPIKey = "x-api-key"
	AuthHeaderBearer = "bearer"
)

// OAuthBeta is the anthropic-beta value that belongs to OAuth access tokens.
const OAuthBeta = "oauth-2025-04-20"

// Credential is a resolved secret.
type Credential struct {
	// Secret is the value sent upstream. Never log it.
	Secret string

	// Version identifies this credential without revealing it. It changes
	// whenever the credential changes (a refreshed token, a rotated file),
	// which lets the breaker end an auth cooldown early.
	Version string

	// ExpiresAt is when the credential stops working; zero if unknown.
	ExpiresAt time.Time

	// Betas are anthropic-beta values the credential requires (an OAuth
	// token requires OAuthBeta). They are merged into the client's list.
	Betas []string
}

// Source yields the credential for a provider.
type Source interface {
	// Credential returns the credential to use now. It must be safe for
	// concurrent use and cheap when nothing changed. An error means the
	// provider cannot be used now; its message names what is missing
	// (a variable, a file) and never contains a secret.
	Credential(ctx context.Context) (Credential, error)
}

// ReadySource is implemented by sources whose lookup can be slow (a
// program run, a Keychain read, a token refresh over the network). Ready
// answers with what the source holds, so that a request does not wait on a
// helper or an endpoint while another provider could serve it: a
// credential that is still valid is returned even when it is due for
// renewal, which then runs in the background; when nothing is held yet, a
// lookup is started in the background (one at a time, shared with
// Credential). Ready waits at most wait (and never past ctx) for a lookup
// under way, then returns ErrNotReady. Credential is what a caller that is
// willing to wait uses.
type ReadySource interface {
	Ready(ctx context.Context, wait time.Duration) (Credential, error)
}

// Warmer is implemented by sources that can start their lookup before the
// first request needs it (run the helper, read the store), so that request
// finds the credential ready. Warm returns at once and changes nothing
// stored (a token is never refreshed by it).
type Warmer interface {
	Warm(ctx context.Context)
}

// ErrNotReady is returned by Ready when the source holds no credential yet
// and is getting one in the background.
var ErrNotReady = errors.New("credential not ready yet; it is being looked up in the background")

// Refresher is implemented by sources that can obtain a new credential when
// the provider refused one (an OAuth refresh, a re-read file).
type Refresher interface {
	// Refused tells the source that the provider refused the credential
	// with the given version. It returns true when a different credential
	// is now available, so the caller may retry the same provider once.
	Refused(ctx context.Context, version string) bool
}

// StatusReporter is implemented by sources that can say how their credential
// is doing, for the status endpoint. It never returns the secret.
type StatusReporter interface {
	Status() Status
}

// DefaultAuthHeader is implemented by sources whose credential is sent
// differently from the x-api-key default (claude: bearer).
type DefaultAuthHeader interface {
	DefaultAuthHeader() string
}

// ClientPassthrough marks a source that forwards the client's own
// Authorization / x-api-key instead of injecting one: the only way a client
// credential ever reaches a provider.
type ClientPassthrough interface {
	PassesClientCredential() bool
}

// State is a credential's health as shown by the status endpoint.
type State string

// Credential states.
const (
	StateOK            State = "ok"
	StateMissing       State = "missing"
	StateExpired       State = "expired"
	StateRefreshFailed State = "refresh_failed"
	StateInvalid       State = "invalid"
	StatePassthrough   State = "passthrough"
)

// Status describes a source's credential without revealing it.
type Status struct {
	State     State     `json:"state"`
	Reason    string    `json:"reason,omitempty"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
}

// ErrMissing is wrapped by errors that mean "no credential is configured
// where the source looks" (unset variable, missing file).
var ErrMissing = errors.New("credential missing")

// Fingerprint returns a short, non-reversible identifier of a secret, for
// Version fields and per-client breaker keys. It is not a password hash:
// it only needs to tell credentials apart without printing them.
func Fingerprint(secret string) string {
	if secret == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:8])
}

// secretCredential is the credential a source read as v, versioned by its
// fingerprint; err passes through.
func secretCredential(v string, err error) (Credential, error) {
	if err != nil {
		return Credential{}, err
	}
	return Credential{Secret: v, Version: Fingerprint(v)}, nil
}

// statusOf is the status of a source whose last read ended with err:
// missing when the credential is not there, otherwise failed.
func statusOf(err error, failed State) Status {
	switch {
	case err == nil:
		return Status{State: StateOK}
	case errors.Is(err, ErrMissing):
		return Status{State: StateMissing, Reason: err.Error()}
	default:
		return Status{State: failed, Reason: err.Error()}
	}
}
