package failover

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Who may use the handler. A proxy that holds provider credentials is a key
// to someone's bill, so by default it serves only clients on this machine;
// a gateway shared by a team names its clients and gives each a key.

// clientAccess is what provisioning works out of the handler's access
// options (Clients, ClientKeyHeader, AllowRemote).
type clientAccess struct {
	// localOnly: refuse non-loopback clients (no clients, no allow_remote,
	// a credential the proxy holds).
	localOnly bool
	// keyHeader is ClientKeyHeader in canonical form; "" for the default.
	keyHeader string
}

// admitClient decides, before anything else happens to the request,
// whether it may use the handler. It returns the client that presented its
// key (nil when no clients are configured), or false after answering the
// request itself.
func (h *Handler) admitClient(w http.ResponseWriter, r *http.Request) (*Client, bool) {
	if len(h.Clients) == 0 {
		if h.access.localOnly {
			if ip := clientIP(r); !isLoopback(ip) {
				writeAnthropicError(w, http.StatusForbidden, "permission_error", remoteRefusal(ip))
				return nil, false
			}
		}
		return nil, true
	}
	key, where := takeClientKey(r.Header, h.access.keyHeader)
	if key == "" {
		writeAnthropicError(w, http.StatusUnauthorized, "authentication_error",
			"llm_failover: this gateway requires a client key; send it in "+where)
		return nil, false
	}
	c := h.match(key)
	if c == nil {
		writeAnthropicError(w, http.StatusUnauthorized, "authentication_error",
			"llm_failover: the client key sent in "+where+" is not valid")
		return nil, false
	}
	c.usage.seen(timeNow())
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		repl.Set("llm.client", c.Name)
	}
	return c, true
}

// remoteRefusal is the 403 message for a non-loopback client: what
// happened and what to configure.
func remoteRefusal(ip string) string {
	return "llm_failover: this proxy holds provider credentials and serves only clients on this machine " +
		"(this request came from " + ip + "). To share it, give each user a key with " +
		"`client NAME { key ... }` in the llm_failover block, or set `allow_remote` " +
		"to serve anyone who can reach it"
}

// clientIP is the request's client address as Caddy resolved it: the peer,
// or with trusted_proxies the address a trusted proxy reported.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok && ip != "" {
		return ip
	}
	return r.RemoteAddr
}

// isLoopback reports whether a client address (an IP, or host:port) is on
// this machine: 127.0.0.0/8, ::1, or either written as an IPv4-mapped IPv6
// address. "@" is Caddy's address for a Unix socket peer, local by nature.
func isLoopback(addr string) bool {
	if addr == "@" {
		return true
	}
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	host, _, _ = strings.Cut(host, "%") // zone
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// takeClientKey removes the client key from the request header and
// returns it, with where it was looked for (for the 401 message). header
// is the configured key header in canonical form, or "" for the default:
// x-api-key, else Authorization: Bearer.
func takeClientKey(h http.Header, header string) (key, where string) {
	if header != "" && header != "Authorization" {
		key = strings.TrimSpace(h.Get(header))
		h.Del(header)
		return key, "the " + header + " header"
	}
	if header == "" {
		if key = strings.TrimSpace(h.Get("X-Api-Key")); key != "" {
			h.Del("X-Api-Key")
			return key, "x-api-key or Authorization: Bearer"
		}
	}
	where = "Authorization: Bearer"
	if header == "" {
		where = "x-api-key or Authorization: Bearer"
	}
	if key = bearerToken(h.Get("Authorization")); key != "" {
		h.Del("Authorization")
	}
	return key, where
}

// bearerToken returns the token of an `Authorization: Bearer <token>`
// value; "" for any other scheme.
func bearerToken(v string) string {
	scheme, token, ok := strings.Cut(strings.TrimSpace(v), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return ""
	}
	return strings.TrimSpace(token)
}

// holdsCredential reports whether some provider's credential is the
// proxy's own (anything but passthrough), which makes the proxy worth
// protecting from other machines.
func holdsCredential(providers []*Provider) bool {
	for _, p := range providers {
		if p.source != nil && !p.passthrough {
			return true
		}
	}
	return false
}

// provisionAccess sets up the clients and the local-only rule, after the
// providers are provisioned.
func (h *Handler) provisionAccess(ctx caddy.Context) error {
	if h.ClientKeyHeader != "" {
		if len(h.Clients) == 0 {
			return fmt.Errorf("client_key_header %q: no client is configured to send a key", h.ClientKeyHeader)
		}
		if !validHeaderName(h.ClientKeyHeader) {
			return fmt.Errorf("client_key_header %q is not a valid header name", h.ClientKeyHeader)
		}
		h.access.keyHeader = http.CanonicalHeaderKey(h.ClientKeyHeader)
	}
	if err := provisionClients(ctx, h); err != nil {
		return err
	}
	h.access.localOnly = len(h.Clients) == 0 && !h.AllowRemote && holdsCredential(h.Providers)
	if h.AllowRemote && len(h.Clients) == 0 {
		h.logger.Warn("allow_remote: any client that can reach this proxy may use its providers' credentials; " +
			"configure client keys to say who may")
	}
	return nil
}

// validHeaderName reports whether s is an HTTP header field name (a token).
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}
