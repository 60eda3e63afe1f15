package failover

import (
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/dustin/go-humanize"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("llm_failover", parseCaddyfile)
	// the handler proxies by itself; in wrap mode it must run before the
	// reverse_proxy it wraps. Either way users need not write `order`.
	httpcaddyfile.RegisterDirectiveOrder("llm_failover", httpcaddyfile.Before, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var fh Handler
	err := fh.UnmarshalCaddyfile(h.Dispenser)
	return &fh, err
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens. Syntax:
//
//	llm_failover {
//		provider <name> {
//			upstream <url>
//			credential <module> [<args...>] [{ ... }]
//			auth_header x-api-key|bearer|<Header-Name>
//			model <pattern> <model>
//			cooldown <class> <duration>
//			tier <n>
//			dial_timeout <duration>
//			header_timeout <duration>
//			sanitize tool_ids|thinking ...
//			drop_query <name...>
//			drop_field <name...>
//			drop_beta <value...>
//			context_window <tokens>
//			max_utilization <percent>
//		}
//		cooldown <class> <duration>
//		max_cooldown <duration>
//		max_reset <duration>
//		max_attempts <n>
//		request_buffer <size>
//		body_timeout <duration>
//		classify <status|*> <body substring|*> <class>
//		policy priority|spread
//		max_utilization <percent>
//		affinity header <Header-Name> | off
//		share [{
//			redis redis://<host>:<port>[/<db>]|rediss://...
//			password <credential source> [<args...>]
//			prefix <storage key or redis key prefix>
//			read_interval <duration>
//			timeout <duration>
//			purge_after <duration>
//			probe_lease <duration>
//			probe_wait <duration>
//		}]
//		stream {
//			hold first_content|first_event|off
//			hold_bytes <size>
//			hold_wait <duration>
//			idle_timeout <duration>|off
//		}
//		client <name> {
//			key <source> [<args...>] [{ ... }]
//			providers <name...>
//		}
//		client_key_header <header>
//		allow_remote
//	}
//
// Providers are tried in the order they are declared (lower tiers first).
// Without any provider block, llm_failover wraps the next handler: a
// reverse_proxy with `lb_policy llm_failover`, whose upstreams then act as
// providers (wrap mode). Sizes take
// go-humanize forms (64KiB, 32MiB); durations take Caddy's (90s, 2m, 1d).
//
// The repair subdirectives of a provider prepare every request sent to it,
// so that history or options another provider accepted are accepted here
// on the first try: `sanitize tool_ids` rewrites tool ids outside
// ^[a-zA-Z0-9_-]+$, `sanitize thinking` strips thinking blocks known to be
// signed by another upstream host; `drop_query` removes query parameters
// (Claude Code's `beta`), `drop_field` top-level body fields, `drop_beta`
// anthropic-beta values (`*` matches any run of characters). Each may be
// repeated. Without them, a refusal naming a bad tool id, a foreign
// thinking signature, a field or a beta is still repaired and retried once
// on the same provider. `context_window` declares the provider's window in
// tokens (200k, 1m, 200000): after a context_window refusal from a provider
// with a declared window, only providers with a larger declared window (or
// none declared) are tried.
//
// `max_utilization 90%` (for one provider, or the default for all) makes
// a provider a last resort once a usage window it reports is that full.
// With `policy spread` a conversation (Claude Code's
// X-Claude-Code-Session-Id, or the header named by `affinity header`)
// stays on the provider that served it last; `affinity off` rotates every
// request.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := onceInBlock{}
	for d.NextBlock(0) {
		switch d.Val() {
		case "max_cooldown", "max_reset", "max_attempts", "request_buffer", "body_timeout", "policy":
			if err := once.check(d, ""); err != nil {
				return err
			}
		}
		switch d.Val() {
		case "provider":
			p, err := unmarshalProvider(d)
			if err != nil {
				return err
			}
			for _, q := range h.Providers {
				if q.Name == p.Name {
					return d.Errf("provider %q is declared twice", p.Name)
				}
			}
			h.Providers = append(h.Providers, p)
		case "cooldown":
			c, dur, err := parseCooldown(d)
			if err != nil {
				return err
			}
			if h.Cooldowns == nil {
				h.Cooldowns = make(map[Class]caddy.Duration)
			}
			if _, dup := h.Cooldowns[c]; dup {
				return d.Errf("cooldown %s is already set: write it once", c)
			}
			h.Cooldowns[c] = dur
		case "max_cooldown":
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			h.MaxCooldown = dur
		case "max_reset":
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			h.MaxReset = dur
		case "max_attempts":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("max_attempts: want a whole number of at least 1, got %q", d.Val())
			}
			h.MaxAttempts = n
			if d.NextArg() {
				return d.ArgErr()
			}
		case "request_buffer":
			n, err := parseSizeArg(d)
			if err != nil {
				return err
			}
			h.RequestBuffer = n
		case "body_timeout":
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			h.BodyTimeout = dur
		case "classify":
			r, err := parseRule(d)
			if err != nil {
				return err
			}
			h.Rules = append(h.Rules, r)
		case "share":
			if h.Share != nil {
				return d.Err("share may appear only once")
			}
			h.Share = new(ShareConfig)
			if d.NextArg() {
				return d.ArgErr()
			}
			shareOnce := onceInBlock{}
			for nesting := d.Nesting(); d.NextBlock(nesting); {
				if err := shareOnce.check(d, "share: "); err != nil {
					return err
				}
				switch d.Val() {
				case "read_interval":
					dur, err := parseDurationArg(d)
					if err != nil {
						return err
					}
					h.Share.ReadInterval = dur
				case "timeout":
					dur, err := parseDurationArg(d)
					if err != nil {
						return err
					}
					h.Share.Timeout = dur
				case "prefix":
					if !d.NextArg() {
						return d.ArgErr()
					}
					h.Share.Prefix = d.Val()
					if d.NextArg() {
						return d.ArgErr()
					}
				case "redis", "password", "purge_after", "probe_lease", "probe_wait":
					if err := unmarshalShareOption(d, h.Share); err != nil {
						return err
					}
				default:
					return d.Errf("unrecognized share subdirective %q", d.Val())
				}
			}
		case "policy":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if err := validPolicy(d.Val()); err != nil {
				return d.Err(err.Error())
			}
			h.Policy = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "max_utilization":
			f, err := parseMaxUtilization(d)
			if err != nil {
				return err
			}
			h.MaxUtilization = f
		case "affinity":
			if err := h.parseAffinity(d); err != nil {
				return err
			}
		case "stream":
			if h.Stream != nil {
				return d.Err("stream may appear only once")
			}
			h.Stream = new(StreamConfig)
			if err := h.Stream.unmarshalCaddyfile(d); err != nil {
				return err
			}
		case "client", "client_key_header", "allow_remote":
			if err := h.unmarshalAccess(d); err != nil {
				return err
			}
		default:
			return d.Errf("unrecognized llm_failover subdirective %q", d.Val())
		}
	}
	return nil
}

func unmarshalProvider(d *caddyfile.Dispenser) (*Provider, error) {
	if !d.NextArg() {
		return nil, d.Err("provider needs a name: provider <name> { ... }")
	}
	p := &Provider{Name: d.Val()}
	if err := validProviderName(p.Name); err != nil {
		return nil, d.Err(err.Error())
	}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	once := onceInBlock{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "upstream", "auth_header", "tier", "dial_timeout", "header_timeout", "context_window":
			if err := once.check(d, "provider "+p.Name+": "); err != nil {
				return nil, err
			}
		}
		switch d.Val() {
		case "upstream":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if _, err := parseUpstream(d.Val()); err != nil {
				return nil, d.Errf("provider %s: %v", p.Name, err)
			}
			p.Upstream = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "credential":
			if p.CredentialRaw != nil {
				return nil, d.Errf("provider %s: credential may appear only once", p.Name)
			}
			if !d.NextArg() {
				return nil, d.Errf("provider %s: credential needs a source: env, file, claude, keychain, command or passthrough", p.Name)
			}
			raw, err := unmarshalCredentialSource(d)
			if err != nil {
				return nil, err
			}
			p.CredentialRaw = raw
		case "auth_header":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			if err := validAuthHeader(d.Val()); err != nil {
				return nil, d.Errf("provider %s: %v", p.Name, err)
			}
			p.AuthHeader = d.Val()
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "model":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("provider %s: model takes a pattern and a model name: model claude-*haiku* glm-4.5-air", p.Name)
			}
			p.Models = append(p.Models, ModelRule{Pattern: args[0], Model: args[1]})
		case "cooldown":
			c, dur, err := parseCooldown(d)
			if err != nil {
				return nil, err
			}
			if p.Cooldowns == nil {
				p.Cooldowns = make(map[Class]caddy.Duration)
			}
			if _, dup := p.Cooldowns[c]; dup {
				return nil, d.Errf("provider %s: cooldown %s is already set: write it once", p.Name, c)
			}
			p.Cooldowns[c] = dur
		case "tier":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return nil, d.Errf("provider %s: tier must be a whole number >= 0, got %q", p.Name, d.Val())
			}
			p.Tier = n
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		case "dial_timeout":
			dur, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			p.DialTimeout = dur
		case "header_timeout":
			dur, err := parseDurationArg(d)
			if err != nil {
				return nil, err
			}
			p.HeaderTimeout = dur
		case "sanitize":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("provider %s: sanitize takes tool_ids and/or thinking", p.Name)
			}
			for _, a := range args {
				if a != sanitizeToolIDs && a != sanitizeThinking {
					return nil, d.Errf("provider %s: sanitize: want tool_ids or thinking, got %q", p.Name, a)
				}
			}
			p.Sanitize = append(p.Sanitize, args...)
		case "drop_query", "drop_field", "drop_beta":
			name := d.Val()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("provider %s: %s takes at least one name", p.Name, name)
			}
			switch name {
			case "drop_query":
				p.DropQuery = append(p.DropQuery, args...)
			case "drop_field":
				p.DropFields = append(p.DropFields, args...)
			default:
				p.DropBetas = append(p.DropBetas, args...)
			}
		case "max_utilization":
			f, err := parseMaxUtilization(d)
			if err != nil {
				return nil, err
			}
			p.MaxUtilization = f
		case "context_window":
			if !d.NextArg() {
				return nil, d.ArgErr()
			}
			n, err := parseTokenCount(d.Val())
			if err != nil {
				return nil, d.Errf("provider %s: context_window: %v", p.Name, err)
			}
			p.ContextWindow = n
			if d.NextArg() {
				return nil, d.ArgErr()
			}
		default:
			return nil, d.Errf("provider %s: unrecognized subdirective %q", p.Name, d.Val())
		}
	}
	if p.Upstream == "" {
		return nil, d.Errf("provider %s: upstream is required", p.Name)
	}
	return p, nil
}

func (c *StreamConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	once := onceInBlock{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once.check(d, "stream: "); err != nil {
			return err
		}
		switch d.Val() {
		case "hold":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch m := HoldMode(d.Val()); m {
			case HoldFirstContent, HoldFirstEvent, HoldOff:
				c.Hold = m
			default:
				return d.Errf("stream hold: want first_content, first_event or off, got %q", d.Val())
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "hold_bytes":
			n, err := parseSizeArg(d)
			if err != nil {
				return err
			}
			c.HoldBytes = n
		case "hold_wait":
			dur, err := parseDurationArg(d)
			if err != nil {
				return err
			}
			c.HoldWait = dur
		case "idle_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				c.IdleTimeout = -1
			} else {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur <= 0 {
					return d.Errf("idle_timeout: want a positive duration or off, got %q", d.Val())
				}
				c.IdleTimeout = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized stream subdirective %q", d.Val())
		}
	}
	return nil
}

// parseCooldown reads `cooldown <class> <duration>`.
func parseCooldown(d *caddyfile.Dispenser) (Class, caddy.Duration, error) {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return "", 0, d.Err("cooldown takes a class and a duration: cooldown rate_limit 2m")
	}
	c, ok := ParseClass(args[0])
	if !ok {
		return "", 0, d.Errf("cooldown: unknown class %q (want one of %s)", args[0], classList())
	}
	dur, err := caddy.ParseDuration(args[1])
	if err != nil || dur < 0 {
		return "", 0, d.Errf("cooldown %s: bad duration %q", args[0], args[1])
	}
	return c, caddy.Duration(dur), nil
}

// parseRule reads `classify <status|*> <substring|*> <class>`.
func parseRule(d *caddyfile.Dispenser) (Rule, error) {
	args := d.RemainingArgs()
	if len(args) != 3 {
		return Rule{}, d.Err(`classify takes a status, a body substring and a class: classify 400 "credit balance" quota`)
	}
	var r Rule
	if args[0] != "*" {
		n, err := strconv.Atoi(args[0])
		if err != nil || n < 400 || n > 599 {
			return Rule{}, d.Errf("classify: status must be * or 400-599, got %q", args[0])
		}
		r.Status = n
	}
	if args[1] != "*" {
		r.BodyContains = args[1]
	}
	c, ok := ParseClass(args[2])
	if !ok {
		return Rule{}, d.Errf("classify: unknown class %q (want one of %s)", args[2], classList())
	}
	r.Class = c
	return r, nil
}

func parseDurationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	dur, err := caddy.ParseDuration(d.Val())
	if err != nil || dur <= 0 {
		return 0, d.Errf("%s: want a positive duration such as 90s or 2m, got %q", name, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return caddy.Duration(dur), nil
}

// maxSize bounds every size the Caddyfile takes.
const maxSize = 1 << 30

func parseSizeArg(d *caddyfile.Dispenser) (int64, error) {
	name := d.Val()
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	n, err := humanize.ParseBytes(d.Val())
	if err != nil || n == 0 {
		return 0, d.Errf("%s: want a size such as 64KiB or 32MiB, got %q", name, d.Val())
	}
	if n > maxSize {
		return 0, d.Errf("%s: %s is over the 1GiB maximum: write a size such as 32MiB", name, d.Val())
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return int64(n), nil
}

func classList() string {
	names := make([]string, len(AllClasses))
	for i, c := range AllClasses {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)
