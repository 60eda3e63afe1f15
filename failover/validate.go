package failover

import (
	"fmt"
	"math"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// Bounds of the configuration that are not bounds of the request path.
const (
	maxHoldBytes     = 1 << 30
	maxContextWindow = 1 << 40
)

// Validate checks the configuration the way the Caddyfile parser does, so
// a JSON config gets the same errors (caddy.Validator). Zero values stand
// for defaults and are valid.
func (h *Handler) Validate() error {
	if err := validBodyBounds(h.RequestBuffer, h.BodyTimeout); err != nil {
		return err
	}
	if h.RequestBufferTotal < 0 || (h.RequestBufferTotal > 0 && h.RequestBufferTotal < max(h.RequestBuffer, 1)) {
		return fmt.Errorf("request_buffer_total: %d bytes cannot hold one body of request_buffer; write a size of at least request_buffer, such as 256MiB",
			h.RequestBufferTotal)
	}
	if h.MaxAttempts < 0 {
		return fmt.Errorf("max_attempts: %d is negative: write a whole number of at least 1", h.MaxAttempts)
	}
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{{"max_cooldown", h.MaxCooldown}, {"max_reset", h.MaxReset}} {
		if d.v < 0 {
			return fmt.Errorf("%s: %s is negative: write a positive duration such as 1h", d.name, time.Duration(d.v))
		}
	}
	if err := validCooldowns("cooldown", h.Cooldowns); err != nil {
		return err
	}
	if err := validRequestLog(h.RequestLog); err != nil {
		return err
	}
	for i, o := range h.AllowOrigins {
		if err := validOrigin(o); err != nil {
			return err
		}
		h.AllowOrigins[i] = strings.ToLower(o)
	}
	if h.Share != nil {
		if err := h.Share.validate(); err != nil {
			return err
		}
	}
	for _, r := range h.Rules {
		if r.Status != 0 && (r.Status < 400 || r.Status > 599) {
			return fmt.Errorf("classify: status %d: write * or a status from 400 to 599", r.Status)
		}
		if _, ok := classify.Parse(string(r.Class)); !ok {
			return fmt.Errorf("classify: unknown class %q (want one of %s)", r.Class, classList())
		}
	}
	if h.Stream != nil {
		if err := h.Stream.validate(); err != nil {
			return err
		}
	}
	if err := h.validateUsageRouting(); err != nil {
		return err
	}
	seen := make(map[string]bool, len(h.Providers))
	for _, p := range h.Providers {
		if err := p.Validate(); err != nil {
			return err
		}
		if seen[p.Name] {
			return fmt.Errorf("provider %q is declared twice: give each provider its own name", p.Name)
		}
		seen[p.Name] = true
	}
	return nil
}

// Validate checks one provider's configuration.
func (p *Provider) Validate() error {
	if err := validProviderName(p.Name); err != nil {
		return err
	}
	if _, err := parseUpstream(p.Upstream); err != nil {
		return fmt.Errorf("provider %s: %v", p.Name, err)
	}
	if p.AuthHeader != "" {
		if err := validAuthHeader(p.AuthHeader); err != nil {
			return fmt.Errorf("provider %s: %v", p.Name, err)
		}
	}
	if p.Tier < 0 {
		return fmt.Errorf("provider %s: tier %d is negative: write a whole number >= 0", p.Name, p.Tier)
	}
	if p.ContextWindow < 0 || p.ContextWindow > maxContextWindow {
		return fmt.Errorf("provider %s: context_window %d is out of range: write a token count such as 200k", p.Name, p.ContextWindow)
	}
	for _, d := range []struct {
		name string
		v    caddy.Duration
	}{{"dial_timeout", p.DialTimeout}, {"header_timeout", p.HeaderTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("provider %s: %s %s is negative: write a positive duration such as 5s", p.Name, d.name, time.Duration(d.v))
		}
	}
	if err := p.validateTransport(); err != nil {
		return err
	}
	return validCooldowns("provider "+p.Name+": cooldown", p.Cooldowns)
}

// validateTransport refuses a transport that says what a provider option
// already says, or TLS for a plain http upstream.
func (p *Provider) validateTransport() error {
	t := p.Transport
	if t == nil {
		return nil
	}
	for _, twice := range []struct {
		provider, transport string
		set                 bool
	}{
		{"dial_timeout", "dial_timeout", p.DialTimeout != 0 && t.DialTimeout != 0},
		{"header_timeout", "response_header_timeout", p.HeaderTimeout != 0 && t.ResponseHeaderTimeout != 0},
	} {
		if twice.set {
			return fmt.Errorf("provider %s: both %s and transport http's %s are set: they are the same timeout; keep one",
				p.Name, twice.provider, twice.transport)
		}
	}
	if strings.HasPrefix(p.Upstream, "http://") && t.TLSEnabled() {
		return fmt.Errorf("provider %s: upstream %s is plain http but transport http sets TLS options: write https:// in upstream, or remove the tls options",
			p.Name, p.Upstream)
	}
	return nil
}

func validCooldowns(what string, cooldowns map[Class]caddy.Duration) error {
	for c, d := range cooldowns {
		if _, ok := classify.Parse(string(c)); !ok {
			return fmt.Errorf("%s: unknown class %q (want one of %s)", what, c, classList())
		}
		if d < 0 {
			return fmt.Errorf("%s %s: %s is negative: write a duration such as 2m", what, c, time.Duration(d))
		}
	}
	return nil
}

// validProviderName accepts the names that are safe in admin URLs,
// metric labels and storage keys.
func validProviderName(name string) error {
	if name == "" {
		return fmt.Errorf("a provider needs a name: provider <name> { ... }")
	}
	ok := len(name) <= 64 && name != "." && name != ".."
	for i := 0; ok && i < len(name); i++ {
		c := name[i]
		ok = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
	}
	if !ok {
		return fmt.Errorf("provider name %q: use up to 64 letters, digits, '_', '.' or '-' (the name appears in admin URLs and metrics), such as %q",
			name, suggestName(name))
	}
	return nil
}

// suggestName turns a refused provider name into an accepted one.
func suggestName(name string) string {
	var b strings.Builder
	for i := 0; i < len(name) && b.Len() < 64; i++ {
		c := name[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' {
			b.WriteByte(c)
		} else {
			b.WriteByte('_')
		}
	}
	if s := strings.Trim(b.String(), "."); s != "" {
		return s
	}
	return "provider"
}

// validAuthHeader accepts x-api-key, bearer or an HTTP header name.
func validAuthHeader(v string) error {
	if strings.EqualFold(v, credsource.AuthHeaderAPIKey) || strings.EqualFold(v, credsource.AuthHeaderBearer) {
		return nil
	}
	for i := 0; i < len(v); i++ {
		if !isTokenChar(v[i]) {
			return fmt.Errorf("auth_header %q is not a header name: write x-api-key, bearer, or a header name such as X-Api-Key", v)
		}
	}
	if v == "" {
		return fmt.Errorf("auth_header is empty: write x-api-key, bearer, or a header name such as X-Api-Key")
	}
	return nil
}

// isTokenChar reports whether c may appear in an HTTP header name (RFC 9110
// token).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// validPort checks an upstream URL's port, when it has one.
func validPort(u *url.URL) error {
	p := u.Port()
	if p == "" {
		if strings.HasSuffix(u.Host, ":") {
			return fmt.Errorf("upstream %q: empty port: write a port from 1 to 65535 or none", u.String())
		}
		return nil
	}
	n, err := strconv.Atoi(p)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("upstream %q: port %s is out of range: write a port from 1 to 65535", u.String(), p)
	}
	return nil
}

// onceInBlock rejects a single-value subdirective written twice in one
// block: the Caddyfile would otherwise keep the last one silently.
type onceInBlock map[string]int // subdirective -> line first written

func (o onceInBlock) check(d *caddyfile.Dispenser, where string) error {
	name := d.Val()
	if line, ok := o[name]; ok {
		return d.Errf("%s%s is already set on line %d: write it once", where, name, line)
	}
	o[name] = d.Line()
	return nil
}

// Interface guards
var _ caddy.Validator = (*Handler)(nil)

// validateUsageRouting checks the usage-routing options, so JSON config
// gets the checks the Caddyfile parser makes.
func (h *Handler) validateUsageRouting() error {
	if err := validMaxUtilization(h.MaxUtilization); err != nil {
		return err
	}
	for _, p := range h.Providers {
		if err := validMaxUtilization(p.MaxUtilization); err != nil {
			return fmt.Errorf("provider %s: %v", p.Name, err)
		}
	}
	if h.AffinityHeader != "" && !validHeaderName(h.AffinityHeader) {
		return fmt.Errorf("affinity_header: %q is not a header name: write one such as X-Conversation-Id", h.AffinityHeader)
	}
	return nil
}

// validMaxUtilization checks a max_utilization fraction from JSON config.
func validMaxUtilization(f float64) error {
	if f < 0 || f > 1 || math.IsNaN(f) {
		return fmt.Errorf("max_utilization: want a fraction in (0, 1], got %v", f)
	}
	return nil
}
