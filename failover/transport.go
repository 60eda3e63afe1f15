package failover

import (
	"maps"
	"net/http"
	"slices"
	"strings"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/repair"
)

// upstreamCredential is what the credential transport sets on an attempt's
// upstream request. It travels in the request context.
type upstreamCredential struct {
	header string // x-api-key, bearer, or a header name
	cred   credsource.Credential
	// client is the client's own credential, for a passthrough provider
	client clientCredential
}

// missingCredential is the credential version recorded when a source had
// no credential at all: any credential that appears later is different.
const missingCredential = "\x00missing"

type upstreamCredentialKey struct{}

// credentialTransport wraps a provider's transport and sets the provider's
// credential on a copy of each outgoing request. reverse_proxy logs its
// upstream request (headers included, and its log redacts Authorization
// but not x-api-key); the copy made here is never logged.
type credentialTransport struct {
	base http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t *credentialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ac, _ := req.Context().Value(upstreamCredentialKey{}).(*upstreamCredential)
	if ac == nil || (ac.cred.Secret == "" && ac.client.empty()) {
		return t.base.RoundTrip(req)
	}
	out := *req
	// a shallow copy: the values set here replace, never change, the
	// ones reverse_proxy's copy shares with it
	out.Header = maps.Clone(req.Header)
	ac.client.setOn(out.Header)
	if ac.cred.Secret != "" {
		setCredential(out.Header, ac.header, ac.cred)
	}
	return t.base.RoundTrip(&out)
}

// setCredential puts a credential on a header map in the form the provider
// expects, and merges the betas it needs into anthropic-beta.
func setCredential(h http.Header, how string, c credsource.Credential) {
	switch strings.ToLower(how) {
	case "", credsource.AuthHeaderAPIKey:
		h.Set("X-Api-Key", c.Secret)
	case credsource.AuthHeaderBearer, "authorization":
		h.Set("Authorization", "Bearer "+c.Secret)
	default:
		h.Set(how, c.Secret)
	}
	for _, b := range c.Betas {
		addBeta(h, b)
	}
}

// hasOAuthBeta reports whether the client's anthropic-beta names the beta
// that belongs to its OAuth credential.
func hasOAuthBeta(h http.Header) bool {
	return slices.ContainsFunc(h["Anthropic-Beta"], func(v string) bool { return strings.Contains(v, credsource.OAuthBeta) })
}

// clientCredential is the client's own credential headers, set back on
// the outgoing copy for a passthrough provider.
type clientCredential struct {
	authorization, apiKey []string
}

// clientCredentialOf reads the client's Authorization and x-api-key
// from h; the keys in their canonical form, as net/http stores them, so
// nothing is canonicalized on every request.
func clientCredentialOf(h http.Header) clientCredential {
	return clientCredential{authorization: h["Authorization"], apiKey: h["X-Api-Key"]}
}

// removeFrom deletes the client's credential headers from h.
func (clientCredential) removeFrom(h http.Header) {
	delete(h, "Authorization")
	delete(h, "X-Api-Key")
}

func (c clientCredential) empty() bool { return c.authorization == nil && c.apiKey == nil }

// fingerprint identifies the credential without keeping it, for the
// per-client breakers of passthrough providers: Authorization when the
// client sent one with a token, else x-api-key. "Bearer" with no token
// is no credential: every client sending it would be one client.
func (c clientCredential) fingerprint() string {
	if len(c.authorization) > 0 && hasToken(c.authorization[0]) {
		return credsource.Fingerprint(c.authorization[0])
	}
	key := ""
	if len(c.apiKey) > 0 {
		key = c.apiKey[0]
	}
	return credsource.Fingerprint(key)
}

// hasToken reports whether an Authorization value carries more than a
// Bearer scheme (net/http has trimmed the spaces around it).
func hasToken(v string) bool {
	return v != "" && !strings.EqualFold(strings.TrimSpace(v), "Bearer")
}

// setOn sets the credential on a header map.
func (c clientCredential) setOn(h http.Header) {
	if c.authorization != nil {
		h["Authorization"] = c.authorization
	}
	if c.apiKey != nil {
		h["X-Api-Key"] = c.apiKey
	}
}

// addBeta merges one value into the comma-separated anthropic-beta list,
// keeping the client's own betas.
func addBeta(h http.Header, beta string) {
	vals := h.Values("Anthropic-Beta")
	for _, v := range vals {
		for item := range strings.SplitSeq(v, ",") {
			if strings.TrimSpace(item) == beta {
				return
			}
		}
	}
	if len(vals) == 0 {
		h.Set("Anthropic-Beta", beta)
		return
	}
	h.Set("Anthropic-Beta", strings.Join(vals, ",")+","+beta)
}

// oauthBeta is the beta that belongs to the client's OAuth credential.
var oauthBeta = []string{credsource.OAuthBeta}

// dropBetas removes the anthropic-beta values drop matches (see
// repair.DropBetas) from h, and the header when none is left. The values
// of several anthropic-beta lines are one list.
func dropBetas(h http.Header, drop []string) {
	vals := h["Anthropic-Beta"]
	if len(vals) == 0 {
		return
	}
	joined := strings.Join(vals, ",")
	switch out := repair.DropBetas(joined, drop); {
	case out == joined:
	case out == "":
		delete(h, "Anthropic-Beta")
	default:
		h["Anthropic-Beta"] = []string{out}
	}
}
