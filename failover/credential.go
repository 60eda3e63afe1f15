package failover

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
)

// Credential lookups on the request path. A request never waits on a
// credential source while another provider could serve it: a source that
// can be slow (a helper program, the Keychain, a token refresh) is asked
// for what it holds now (credsource.ReadySource), and a source with nothing
// ready is skipped while it gets it in the background. Only when no other
// provider could take the request does the request wait, bounded by its
// own context. Every call into a source is made without a breaker lock
// held, and a panic in a source is that provider's failure, not the
// process's.

// credentialReadyWait is how long a request waits for a credential lookup
// under way while another provider could serve it: long enough for a fast
// helper or a local file, short enough that a hung one costs next to
// nothing.
const credentialReadyWait = 20 * time.Millisecond

// errSourcePanicked wraps the value a credential source panicked with.
var errSourcePanicked = errors.New("the credential source panicked")

// readyCredential returns the credential the source holds now, waiting at
// most wait for a lookup under way; a source that cannot be slow is simply
// asked.
func (p *Provider) readyCredential(ctx context.Context, wait time.Duration) (cred credsource.Credential, err error) {
	defer recoverSource(&err)
	if rs, ok := p.source.(credsource.ReadySource); ok {
		return rs.Ready(ctx, wait)
	}
	return p.source.Credential(ctx)
}

// waitCredential returns the source's credential, waiting for a lookup
// under way (bounded by ctx).
func (p *Provider) waitCredential(ctx context.Context) (cred credsource.Credential, err error) {
	defer recoverSource(&err)
	return p.source.Credential(ctx)
}

// refused tells the source its credential was refused and waits for a
// renewed one (bounded by ctx).
func (p *Provider) refused(ctx context.Context, version string) (renewed bool) {
	defer func() {
		if rec := recover(); rec != nil {
			renewed = false
		}
	}()
	return p.refresher.Refused(ctx, version)
}

func recoverSource(err *error) {
	if rec := recover(); rec != nil {
		*err = fmt.Errorf("%w: %v", errSourcePanicked, rec)
	}
}

// currentCredentialVersion returns the version of the credential the
// provider's source holds now, without waiting ("" when none), for an auth
// cooldown that may end early.
func (p *Provider) currentCredentialVersion(ctx context.Context) string {
	if p.source == nil || p.passthrough {
		return ""
	}
	c, err := p.readyCredential(ctx, 0)
	if err != nil {
		return ""
	}
	return c.Version
}

// credentialFor looks up provider i's credential for an attempt. skip is
// true when the source has nothing ready yet and another provider could
// take the request: the provider is passed over without being charged.
func (h *Handler) credentialFor(req *llmRequest, i int) (cred credsource.Credential, skip bool, err error) {
	p := h.Providers[i]
	ctx := req.r.Context()
	if _, slow := p.source.(credsource.ReadySource); !slow || !h.hasAlternative(req, i) {
		// the only way to serve the request: wait for it
		cred, err = p.waitCredential(ctx)
		return cred, false, err
	}
	cred, err = p.readyCredential(ctx, credentialReadyWait)
	if errors.Is(err, credsource.ErrNotReady) {
		return cred, true, err
	}
	return cred, false, err
}

// hasAlternative reports whether a provider other than i could still take
// the request: untried, admitting now, and within max_attempts.
func (h *Handler) hasAlternative(req *llmRequest, i int) bool {
	if req.attempts-req.retries+1 >= h.MaxAttempts {
		return false
	}
	now := timeNow()
	for j, q := range h.Providers {
		if j != i && !req.tried[j] && q.peek(now, req.clientKey).OK {
			return true
		}
	}
	return false
}

// warmCredential starts the source's first lookup in the background, so
// the first request finds the credential ready.
func (p *Provider) warmCredential(ctx context.Context) {
	if w, ok := p.source.(credsource.Warmer); ok && !p.passthrough {
		defer func() { _ = recover() }()
		w.Warm(ctx)
	}
}

// loadCredentialSource loads the credential source held in the field
// named field of the struct owner points to. who names the owner in
// errors ("provider a", "share"); loading says what failed to load.
func loadCredentialSource(ctx caddy.Context, owner any, field, who, loading string) (credsource.Source, error) {
	mod, err := ctx.LoadModule(owner, field)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %v", who, loading, err)
	}
	src, ok := mod.(credsource.Source)
	if !ok {
		return nil, fmt.Errorf("%s: module %T is not a credential source", who, mod)
	}
	return src, nil
}

// warnUnusableCredential logs, once at provision, a provider whose
// credential cannot work on this machine (an unset variable, a missing
// file, a Keychain without `security`), naming what to set. The provider
// still starts: the credential may appear later, and until then requests
// fail over past it.
func warnUnusableCredential(logger *zap.Logger, p *Provider) error {
	pf, ok := p.source.(credsource.Preflight)
	if !ok {
		return nil
	}
	err := pf.Preflight()
	if err != nil {
		logger.Warn("provider credential cannot work here; requests will fail over past this provider until it does",
			zap.String("provider", p.Name), zap.String("problem", err.Error()))
	}
	return err
}

// passOverUncredentialed marks a model call that carries no credential of
// its own (Fingerprint "") as unable to use any passthrough provider:
// such a provider has nothing to forward, its 401 would say only that, and
// cooling a breaker for "no credential" would count a client that is none.
// A request that is not a model call passes through as it is.
func (h *Handler) passOverUncredentialed(req *llmRequest) {
	if req.clientKey != "" || req.kind == kindOther {
		return
	}
	for i, p := range h.Providers {
		if p.passthrough && !req.tried[i] {
			req.tried[i], req.uncredentialed = true, true
		}
	}
}

// refuseUncredentialed answers a model call that no provider could take
// because each one it may use forwards the client's own credential and the
// request carried none: a 401 the client must not retry, naming them.
func (h *Handler) refuseUncredentialed(w http.ResponseWriter, req *llmRequest) {
	var names []string
	for i, p := range h.Providers {
		if p.passthrough && req.client.mayUse(i) {
			names = append(names, p.Name)
		}
	}
	verb := " forwards"
	if len(names) > 1 {
		verb = " forward"
	}
	msg := "llm_failover: the request carried no credential (x-api-key or Authorization: Bearer), and " +
		strings.Join(names, ", ") + verb + " the client's own"
	if len(h.Clients) > 0 && h.ClientKeyHeader == "" {
		msg += "; a client key is never forwarded: with client_key_header set, send the credential beside it"
	}
	h.setAnswerHeaders(w.Header(), timeNow(), req.client, req.clientKey, 0, nil)
	req.logged.status = http.StatusUnauthorized
	writeAnthropicError(w, http.StatusUnauthorized, "authentication_error", msg)
}
