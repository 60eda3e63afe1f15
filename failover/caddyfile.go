package failover

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/dustin/go-humanize"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/share"
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
//			transport http {
//				<Caddy's reverse_proxy http transport options>
//			}
//			sanitize tool_ids|thinking ...
//			drop_query <name...>
//			drop_field <name...>
//			drop_beta <value...>
//			context_window <tokens>
//			max_utilization <percent>
//			price <model glob> input <$/Mtok> output <$/Mtok> [cache_read <$/Mtok>] [cache_write <$/Mtok>]
//		}
//		cooldown <class> <duration>
//		max_cooldown <duration>
//		max_reset <duration>
//		max_attempts <n>
//		request_buffer <size>
//		request_buffer_total <size>
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
//			fail_closed
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
//			limit tokens|requests|spend <n> per <window>
//		}
//		client_key_header <header>
//		allow_remote
//		limit tokens|requests|spend <n> per <window>
//		request_log <n>|off
//		allow_origin <origin...>
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
// `transport http { ... }` is Caddy's own reverse_proxy http transport,
// parsed by Caddy, every option as Caddy documents it (tls_trust_pool,
// tls_client_auth, tls_server_name, network_proxy, keepalive, versions,
// ...). `dial_timeout` and `header_timeout` set its dial_timeout and
// response_header_timeout; set each in one place only.
//
// `max_utilization 90%` (for one provider, or the default for all) makes
// a provider a last resort once a usage window it reports is that full.
// With `policy spread` a conversation (Claude Code's
// X-Claude-Code-Session-Id, or the header named by `affinity header`)
// stays on the provider that served it last; `affinity off` rotates every
// request.
//
// `limit` caps a client's (inside `client`) or all traffic's (at the top)
// tokens, requests or spend (US dollars, at the serving provider's
// `price` lines: dollars per million tokens, first matching glob wins;
// cache prices default to 0.1× and 1.25× input) over a rolling window
// from 1m to 31d (90m, 5h, 1d, 30d). A request over any limit is answered
// 429 before any provider is asked. With `share { redis ... }` the counts
// are the fleet's; `fail_closed` refuses limited requests while Redis is
// unreachable instead of counting locally.
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		return d.ArgErr()
	}
	once := onceInBlock{}
	for d.NextBlock(0) {
		switch d.Val() {
		case "max_cooldown", "max_reset", "max_attempts", "request_buffer", "request_buffer_total", "body_timeout", "policy":
			if err := once.check(d, ""); err != nil {
				return err
			}
		}
		var err error
		switch d.Val() {
		case "provider":
			h.Providers, err = appendNamed(d, h.Providers, "provider", unmarshalProvider,
				func(p *Provider) string { return p.Name })
		case "cooldown":
			err = setCooldown(d, &h.Cooldowns, "")
		case "max_cooldown":
			h.MaxCooldown, err = parseDurationArg(d)
		case "max_reset":
			h.MaxReset, err = parseDurationArg(d)
		case "max_attempts":
			h.MaxAttempts, err = parseCountArg(d, "", 1)
		case "request_buffer":
			h.RequestBuffer, err = parseSizeArg(d)
		case "request_buffer_total":
			h.RequestBufferTotal, err = parseSizeArg(d)
		case "body_timeout":
			h.BodyTimeout, err = parseDurationArg(d)
		case "classify":
			var r Rule
			if r, err = parseRule(d); err == nil {
				h.Rules = append(h.Rules, r)
			}
		case "share":
			err = h.unmarshalShare(d)
		case "policy":
			h.Policy, err = parsedArg(d, "", func(s string) (string, error) { return s, validPolicy(s) })
		case "max_utilization":
			h.MaxUtilization, err = parseMaxUtilization(d)
		case "affinity":
			err = h.parseAffinity(d)
		case "stream":
			if h.Stream != nil {
				return d.Err("stream may appear only once")
			}
			h.Stream = new(StreamConfig)
			err = h.Stream.unmarshalCaddyfile(d)
		case "client", "client_key_header", "allow_remote", "allow_origin":
			err = h.unmarshalAccess(d)
		case "limit":
			var l Limit
			if l, err = parseLimitLine(d); err == nil {
				h.Limits = append(h.Limits, l)
			}
		case "request_log":
			if err = once.check(d, ""); err == nil {
				h.RequestLog, err = parseRequestLog(d)
			}
		default:
			err = d.Errf("unrecognized llm_failover subdirective %q", d.Val())
		}
		if err != nil {
			return err
		}
	}
	if len(h.Providers) > 0 {
		// Said here, where the adapter names the line, rather than at the
		// end of Caddy's chain of module errors at provisioning.
		for _, c := range h.Clients {
			if err := c.checkProviders(h.Providers); err != nil {
				return d.Err(err.Error())
			}
		}
	}
	return nil
}

// unmarshalShare reads the share block; the Redis backend's options are
// read by unmarshalShareOption.
func (h *Handler) unmarshalShare(d *caddyfile.Dispenser) error {
	if h.Share != nil {
		return d.Err("share may appear only once")
	}
	h.Share = new(ShareConfig)
	err := unmarshalBlockOnce(d, "share: ", func(name string) (err error) {
		switch name {
		case "read_interval":
			h.Share.ReadInterval, err = parseDurationArg(d)
		case "timeout":
			h.Share.Timeout, err = parseDurationArg(d)
		case "prefix":
			h.Share.Prefix, err = singleArg(d)
		case "redis", "password", "purge_after", "probe_lease", "probe_wait":
			err = unmarshalShareOption(d, h.Share)
		case "fail_closed":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Share.FailClosed = true
		default:
			err = d.Errf("unrecognized share subdirective %q", name)
		}
		return err
	})
	if err == nil && h.Share.FailClosed && h.Share.Redis == "" {
		err = d.Err("share: fail_closed is for redis (with storage sharing, limits are counted per instance); set redis or remove fail_closed")
	}
	return err
}

// unmarshalShareOption parses the share subdirectives of the Redis
// backend and the purge age:
//
//	redis redis://127.0.0.1:6379/0
//	password env REDIS_PASSWORD
//	purge_after 24h
//	probe_lease 30s
//	probe_wait 10ms
func unmarshalShareOption(d *caddyfile.Dispenser, c *ShareConfig) error {
	switch d.Val() {
	case "redis":
		u, err := parsedArg(d, "", func(s string) (string, error) { return s, share.ValidRedisURL(s) })
		if err != nil {
			return err
		}
		c.Redis = u
	case "password":
		if !d.NextArg() {
			return d.Err("share: password needs a credential source: env, file, command, ...")
		}
		raw, err := unmarshalCredentialSource(d)
		if err != nil {
			return err
		}
		c.PasswordRaw = raw
	default:
		opt := d.Val()
		dur, err := parseDurationArg(d)
		if err != nil {
			return err
		}
		switch opt {
		case "purge_after":
			c.PurgeAfter = dur
		case "probe_lease":
			c.ProbeLease = dur
		case "probe_wait":
			c.ProbeWait = dur
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
	who := "provider " + p.Name
	once := onceInBlock{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "upstream", "auth_header", "tier", "dial_timeout", "header_timeout", "context_window", "transport":
			if err := once.check(d, who+": "); err != nil {
				return nil, err
			}
		}
		var err error
		switch d.Val() {
		case "upstream":
			p.Upstream, err = parsedArg(d, who+": ", func(s string) (string, error) {
				_, err := parseUpstream(s)
				return s, err
			})
		case "credential":
			p.CredentialRaw, err = unmarshalCredentialOnce(d, p.CredentialRaw, who,
				"env, file, claude, keychain, command or passthrough", "")
		case "auth_header":
			p.AuthHeader, err = parsedArg(d, who+": ", func(s string) (string, error) { return s, validAuthHeader(s) })
		case "model":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return nil, d.Errf("%s: model takes a pattern and a model name: model claude-*haiku* glm-4.5-air", who)
			}
			p.Models = append(p.Models, ModelRule{Pattern: args[0], Model: args[1]})
		case "cooldown":
			err = setCooldown(d, &p.Cooldowns, who+": ")
		case "tier":
			p.Tier, err = parseCountArg(d, who+": ", 0)
		case "dial_timeout":
			p.DialTimeout, err = parseDurationArg(d)
		case "header_timeout":
			p.HeaderTimeout, err = parseDurationArg(d)
		case "transport":
			p.Transport, err = unmarshalTransport(d, who)
		case "sanitize":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("%s: sanitize takes tool_ids and/or thinking", who)
			}
			for _, a := range args {
				if a != sanitizeToolIDs && a != sanitizeThinking {
					return nil, d.Errf("%s: sanitize: want tool_ids or thinking, got %q", who, a)
				}
			}
			p.Sanitize = append(p.Sanitize, args...)
		case "drop_query", "drop_field", "drop_beta":
			name := d.Val()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("%s: %s takes at least one name", who, name)
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
			p.MaxUtilization, err = parseMaxUtilization(d)
		case "price":
			var pr budget.Price
			if pr, err = budget.ParsePrice(d.RemainingArgs()); err != nil {
				return nil, d.Errf("%s: %v", who, err)
			}
			p.Prices = append(p.Prices, priceFrom(pr))
		case "context_window":
			p.ContextWindow, err = parsedArg(d, who+": context_window: ", parseTokenCount)
		default:
			err = d.Errf("%s: unrecognized subdirective %q", who, d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	if p.Upstream == "" {
		return nil, d.Errf("%s: upstream is required", who)
	}
	if err := p.validateTransport(); err != nil {
		return nil, d.Err(err.Error())
	}
	return p, nil
}

// unmarshalTransport reads `transport http { ... }` with Caddy's own
// reverse_proxy transport parser.
func unmarshalTransport(d *caddyfile.Dispenser, who string) (*reverseproxy.HTTPTransport, error) {
	if !d.NextArg() || d.Val() != "http" {
		return nil, d.Errf("%s: transport: only Caddy's http transport is supported: transport http { tls_trust_pool file ca.pem }", who)
	}
	t := new(reverseproxy.HTTPTransport)
	if err := t.UnmarshalCaddyfile(d.NewFromNextSegment()); err != nil {
		return nil, d.Errf("%s: transport http: %v", who, err)
	}
	return t, nil
}

func (c *StreamConfig) unmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return unmarshalBlockOnce(d, "stream: ", func(name string) (err error) {
		switch name {
		case "hold":
			c.Hold, err = parsedArg(d, "", parseHoldMode)
		case "hold_bytes":
			c.HoldBytes, err = parseSizeArg(d)
		case "hold_wait":
			c.HoldWait, err = parseDurationArg(d)
		case "idle_timeout":
			c.IdleTimeout, err = parsedArg(d, "", parseIdleTimeout)
		default:
			err = d.Errf("unrecognized stream subdirective %q", name)
		}
		return err
	})
}

// unmarshalBlockOnce reads a block that takes no arguments and whose
// subdirectives may each be written once, calling parse for each; who
// prefixes the errors ("share: ").
func unmarshalBlockOnce(d *caddyfile.Dispenser, who string, parse func(name string) error) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	once := onceInBlock{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		if err := once.check(d, who); err != nil {
			return err
		}
		if err := parse(d.Val()); err != nil {
			return err
		}
	}
	return nil
}

// appendNamed reads a named block with unmarshal and appends it to list,
// refusing a second block of the same name; kind says what the block
// declares ("provider").
func appendNamed[T any](d *caddyfile.Dispenser, list []T, kind string,
	unmarshal func(*caddyfile.Dispenser) (T, error), name func(T) string) ([]T, error) {
	x, err := unmarshal(d)
	if err != nil {
		return list, err
	}
	for _, y := range list {
		if name(y) == name(x) {
			return list, d.Errf("%s %q is declared twice", kind, name(x))
		}
	}
	return append(list, x), nil
}

func parseHoldMode(s string) (HoldMode, error) {
	switch m := HoldMode(s); m {
	case HoldFirstContent, HoldFirstEvent, HoldOff:
		return m, nil
	}
	return "", fmt.Errorf("stream hold: want first_content, first_event or off, got %q", s)
}

// parseIdleTimeout reads a positive duration, or off as -1.
func parseIdleTimeout(s string) (caddy.Duration, error) {
	if s == "off" {
		return -1, nil
	}
	dur, err := caddy.ParseDuration(s)
	if err != nil || dur <= 0 {
		return 0, fmt.Errorf("idle_timeout: want a positive duration or off, got %q", s)
	}
	return caddy.Duration(dur), nil
}

// setCooldown reads `cooldown <class> <duration>` into cooldowns, where
// each class may be set once; who prefixes errors ("provider a: ").
func setCooldown(d *caddyfile.Dispenser, cooldowns *map[Class]caddy.Duration, who string) error {
	c, dur, err := parseCooldown(d)
	if err != nil {
		return err
	}
	if _, dup := (*cooldowns)[c]; dup {
		return d.Errf("%scooldown %s is already set: write it once", who, c)
	}
	if *cooldowns == nil {
		*cooldowns = make(map[Class]caddy.Duration)
	}
	(*cooldowns)[c] = dur
	return nil
}

// unmarshalCredentialOnce reads `<subdirective> <source> [<args...>] [{ ... }]`:
// the one credential source of who, already read as set if not nil.
// sources lists the sources to choose from; refusePassthrough, if not
// empty, says why the passthrough source cannot serve here.
func unmarshalCredentialOnce(d *caddyfile.Dispenser, set json.RawMessage, who, sources, refusePassthrough string) (json.RawMessage, error) {
	name := d.Val()
	if set != nil {
		return nil, d.Errf("%s: %s may appear only once", who, name)
	}
	if !d.NextArg() {
		return nil, d.Errf("%s: %s needs a source: %s", who, name, sources)
	}
	if refusePassthrough != "" && d.Val() == "passthrough" {
		return nil, d.Errf("%s: %s; use %s", who, refusePassthrough, sources)
	}
	return unmarshalCredentialSource(d)
}

// unmarshalAccess reads the access subdirectives of llm_failover:
//
//	client <name> {
//		key <source> [<args...>] [{ ... }]
//		providers <name...>
//	}
//	client_key_header <header>
//	allow_remote
//	allow_origin <origin...>
func (h *Handler) unmarshalAccess(d *caddyfile.Dispenser) error {
	var err error
	switch d.Val() {
	case "allow_remote":
		if d.NextArg() {
			return d.ArgErr()
		}
		h.AllowRemote = true
	case "allow_origin":
		origins := d.RemainingArgs()
		if len(origins) == 0 {
			return d.Err("allow_origin needs one or more origins: allow_origin https://app.example")
		}
		for _, o := range origins {
			if err := validOrigin(o); err != nil {
				return d.Err(err.Error())
			}
		}
		h.AllowOrigins = append(h.AllowOrigins, origins...)
	case "client_key_header":
		h.ClientKeyHeader, err = parsedArg(d, "client_key_header: ", func(s string) (string, error) {
			if !validHeaderName(s) {
				return "", fmt.Errorf("%q is not a valid header name", s)
			}
			return s, nil
		})
	case "client":
		h.Clients, err = appendNamed(d, h.Clients, "client", unmarshalClient,
			func(c *Client) string { return c.Name })
	}
	return err
}

func unmarshalClient(d *caddyfile.Dispenser) (*Client, error) {
	if !d.NextArg() {
		return nil, d.Err("client needs a name: client <name> { key env VAR }")
	}
	c := &Client{Name: d.Val()}
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	who := "client " + c.Name
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "key":
			c.KeyRaw, err = unmarshalCredentialOnce(d, c.KeyRaw, who,
				"env, file, command or keychain", "passthrough cannot hold a client key")
		case "providers":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return nil, d.Errf("%s: providers takes at least one provider name", who)
			}
			c.Providers = append(c.Providers, args...)
		case "limit":
			var l Limit
			if l, err = parseLimitLine(d); err != nil {
				return nil, d.Errf("%s: %v", who, err)
			}
			c.Limits = append(c.Limits, l)
		default:
			err = d.Errf("%s: unrecognized subdirective %q", who, d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	if c.KeyRaw == nil {
		return nil, d.Errf("%s: a key is required: key env VAR, key file PATH, ...", who)
	}
	return c, nil
}

// parseLimitLine reads `limit tokens|requests|spend N per DURATION`.
func parseLimitLine(d *caddyfile.Dispenser) (Limit, error) {
	l, err := budget.ParseLimit(d.RemainingArgs())
	if err != nil {
		return Limit{}, d.Err(err.Error())
	}
	return limitFrom(l), nil
}

// parseCooldown reads `cooldown <class> <duration>`.
func parseCooldown(d *caddyfile.Dispenser) (Class, caddy.Duration, error) {
	args := d.RemainingArgs()
	if len(args) != 2 {
		return "", 0, d.Err("cooldown takes a class and a duration: cooldown rate_limit 2m")
	}
	c, ok := classify.Parse(args[0])
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
	c, ok := classify.Parse(args[2])
	if !ok {
		return Rule{}, d.Errf("classify: unknown class %q (want one of %s)", args[2], classList())
	}
	r.Class = c
	return r, nil
}

// singleArg reads the one argument of the subdirective at the cursor.
func singleArg(d *caddyfile.Dispenser) (string, error) {
	if !d.NextArg() {
		return "", d.ArgErr()
	}
	v := d.Val()
	if d.NextArg() {
		return "", d.ArgErr()
	}
	return v, nil
}

// parsedArg reads the one argument of the subdirective at the cursor
// through parse; who prefixes parse's error ("provider a: ").
func parsedArg[T any](d *caddyfile.Dispenser, who string, parse func(string) (T, error)) (T, error) {
	var zero T
	v, err := singleArg(d)
	if err != nil {
		return zero, err
	}
	t, err := parse(v)
	if err != nil {
		return zero, d.Errf("%s%v", who, err)
	}
	return t, nil
}

// parseCountArg reads a whole number of at least min.
func parseCountArg(d *caddyfile.Dispenser, who string, min int) (int, error) {
	name := d.Val()
	return parsedArg(d, who, func(s string) (int, error) {
		n, err := strconv.Atoi(s)
		if err != nil || n < min {
			return 0, fmt.Errorf("%s: want a whole number of at least %d, got %q", name, min, s)
		}
		return n, nil
	})
}

func parseDurationArg(d *caddyfile.Dispenser) (caddy.Duration, error) {
	name := d.Val()
	return parsedArg(d, "", func(s string) (caddy.Duration, error) {
		dur, err := caddy.ParseDuration(s)
		if err != nil || dur <= 0 {
			return 0, fmt.Errorf("%s: want a positive duration such as 90s or 2m, got %q", name, s)
		}
		return caddy.Duration(dur), nil
	})
}

// maxSize bounds every size the Caddyfile takes.
const maxSize = 1 << 30

func parseSizeArg(d *caddyfile.Dispenser) (int64, error) {
	name := d.Val()
	return parsedArg(d, "", func(s string) (int64, error) {
		n, err := humanize.ParseBytes(s)
		if err != nil || n == 0 {
			return 0, fmt.Errorf("%s: want a size such as 64KiB or 32MiB, got %q", name, s)
		}
		if n > maxSize {
			return 0, fmt.Errorf("%s: %s is over the 1GiB maximum: write a size such as 32MiB", name, s)
		}
		return int64(n), nil
	})
}

func classList() string {
	names := make([]string, len(classify.All))
	for i, c := range classify.All {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Handler)(nil)

// parseMaxUtilization reads `max_utilization <percent>` (90% or 90) as a
// fraction.
func parseMaxUtilization(d *caddyfile.Dispenser) (float64, error) {
	if !d.NextArg() {
		return 0, d.ArgErr()
	}
	v := d.Val()
	f, err := strconv.ParseFloat(strings.TrimSuffix(v, "%"), 64)
	if err != nil || !(f > 0 && f <= 100) {
		return 0, d.Errf("max_utilization: want a percent above 0 and at most 100, such as 90%%, got %q", v)
	}
	if d.NextArg() {
		return 0, d.ArgErr()
	}
	return f / 100, nil
}

// parseAffinity reads `affinity header <Name>` or `affinity off`.
func (h *Handler) parseAffinity(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	switch {
	case len(args) == 1 && args[0] == "off":
		h.AffinityOff = true
	case len(args) == 2 && args[0] == "header" && validHeaderName(args[1]):
		h.AffinityHeader = args[1]
	default:
		return d.Err("affinity: want `affinity header <Header-Name>` or `affinity off`")
	}
	return nil
}

// unmarshalCredentialSource reads `<source> [<args...>]` or
// `<source> { ... }` at the dispenser's current argument (the source's
// name) into the source's module JSON, named by its "source" key.
func unmarshalCredentialSource(d *caddyfile.Dispenser) (json.RawMessage, error) {
	name := d.Val()
	if _, err := caddy.GetModule(credsource.Namespace + "." + name); err != nil {
		return nil, d.Errf("unknown credential source %q; the sources are: %s", name, credentialSourceNames())
	}
	unm, err := caddyfile.UnmarshalModule(d, credsource.Namespace+"."+name)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(unm, "source", name, nil), nil
}

// credentialSourceNames lists the registered credential sources (plugins
// may add their own), for an error that names what to write instead.
func credentialSourceNames() string {
	var names []string
	for _, m := range caddy.GetModules(credsource.Namespace) {
		names = append(names, m.ID.Name()) // sorted by GetModules
	}
	return strings.Join(names, ", ")
}
