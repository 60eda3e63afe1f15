package share

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
)

// redisBackend shares decisions through Redis:
//
//   - <prefix>:breaker:<name> holds a breaker's latest shared decision. A
//     cooldown's key expires when the cooldown ends; a close is kept for a
//     while so that an older cooldown written late cannot undo it. A Lua
//     script writes it, so the rule of Breaker.Adopt (the later cooldown
//     end wins) holds in Redis atomically, and publishes what it wrote.
//   - <prefix>:decisions is the channel every instance subscribes to: a
//     decision reaches the fleet within milliseconds.
//   - <prefix>:probe:<name> is the half-open probe's lease (SET NX PX): one
//     instance probes, the others skip the provider until the result is
//     published or the lease lapses.
//   - <prefix>:clients indexes the per-client decisions (a sorted set of
//     names, scored by when their key expires), at most MaxSharedClients:
//     past it the write script drops the entries that end soonest, keys
//     and all.
//
// Every key expires, so nothing is left to purge. A read never scans the
// keyspace: it asks for the provider-wide names this handler has and for
// the index's MaxSharedClients latest entries, each value bounded, so
// however many keys share the prefix a read costs the same. Every call
// but the probe claim runs in the background; the claim is bounded by
// probe_wait.
type redisBackend struct {
	s         *Sharer
	client    *redis.Client
	prefix    string
	channel   string
	token     string // this process and handler: tells our own messages and leases apart
	lease     time.Duration
	probeWait time.Duration
	down      atomic.Bool // the last call failed: the request path does not ask Redis
	resyncCh  chan struct{}
	written   map[string]time.Time // breaker name -> decided_at last written; loop goroutine only
}

var (
	_ backend      = (*redisBackend)(nil)
	_ probeClaimer = (*redisBackend)(nil)
)

// RedisDecision is a breaker decision as Redis stores and publishes it.
// The write script compares its times: the cooldown end in Unix
// milliseconds, the decision time in microseconds (two decisions a few
// microseconds apart stay ordered, and Lua's numbers hold it exactly).
type RedisDecision struct {
	Name     string         `json:"name"`
	State    breaker.State  `json:"state"`
	Until    int64          `json:"until,omitempty"`
	Decided  int64          `json:"decided_us"`
	Class    classify.Class `json:"class,omitempty"`
	Instance string         `json:"instance"`
	Token    string         `json:"token"`
}

func (d *RedisDecision) decision() breaker.Decision {
	st := breaker.Decision{State: d.State, Class: d.Class, DecidedAt: time.UnixMicro(d.Decided)}
	if d.State == breaker.Open {
		st.Until = time.UnixMilli(d.Until)
	}
	return st
}

// writeDecision stores a decision unless the stored one must win over it
// (a later cooldown end, or a decision made later; on a tie the new write
// wins),
// releases the writer's probe lease (its probe has a result), and
// publishes what it stored. It returns the decision now stored, which the
// writer adopts when it was not its own.
//
// A stored decision dated more than MaxClockSkew ahead wins over nothing,
// nor does what a read would skip or could not order: a value of another
// type, over maxDecisionBytes, or without numeric times. Another writer's
// garbage is overwritten, never an error that stops this instance's
// writes.
//
// A client's decision is indexed; a client's close is stored only over a
// decision it ends (a client no one shared anything of gets no key). Past
// the cap, the index's soonest-ending entries go, their keys too; ended
// entries leave the index; a few of each per write, so no write runs long
// however large another writer made the index. Errors on the index (another writer made it something else)
// never stop the write.
//
// KEYS: breaker key, probe lease key, client index. ARGV: decision JSON,
// state, until (ms), decided (µs), now (ms), how long to keep a close
// (ms), channel, writer token, latest acceptable decision time (µs),
// "1" for a client's decision, the index's cap, the breaker key prefix,
// the name, the largest stored value that counts (bytes).
var writeDecision = redis.NewScript(`
if redis.pcall('GET', KEYS[2]) == ARGV[8] then redis.call('DEL', KEYS[2]) end
local cur = redis.pcall('GET', KEYS[1])
if type(cur) ~= 'string' or #cur > tonumber(ARGV[14]) then cur = false end
local client = ARGV[10] == '1'
if client and ARGV[2] ~= 'open' and not cur then return false end
if cur then
	local ok, c = pcall(cjson.decode, cur)
	local decided = ok and type(c) == 'table' and tonumber(c.decided_us)
	if decided and decided <= tonumber(ARGV[9]) then
		if ARGV[2] == 'open' and c.state == 'open' then
			local ends = tonumber(c['until'])
			if ends and ends >= tonumber(ARGV[3]) then return cur end
		elseif decided > tonumber(ARGV[4]) then
			return cur
		end
	end
end
local ttl = tonumber(ARGV[6])
if ARGV[2] == 'open' then ttl = tonumber(ARGV[3]) - tonumber(ARGV[5]) end
if ttl <= 0 then return false end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('PUBLISH', ARGV[7], ARGV[1])
if client then
	local now = tonumber(ARGV[5])
	redis.pcall('ZADD', KEYS[3], now + ttl, ARGV[13])
	local ended = redis.pcall('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 64)
	if type(ended) == 'table' and #ended > 0 then redis.pcall('ZREM', KEYS[3], unpack(ended)) end
	local n = redis.pcall('ZCARD', KEYS[3])
	local over = type(n) == 'number' and n - tonumber(ARGV[11]) or 0
	if over > 0 then
		local gone = redis.pcall('ZPOPMIN', KEYS[3], math.min(over, 16))
		if type(gone) == 'table' then
			for i = 1, #gone, 2 do
				if string.find(gone[i], '#', 1, true) then redis.call('DEL', ARGV[12] .. gone[i]) end
			end
		end
	end
end
return ARGV[1]
`)

// readDecisions returns the value of each key that holds a string of at
// most ARGV[1] bytes, else false: a value another writer made huge, or
// of another type, is never sent.
//
// KEYS: breaker keys. ARGV: the largest value (bytes).
var readDecisions = redis.NewScript(`
local out = {}
for i, k in ipairs(KEYS) do
	local n = redis.pcall('STRLEN', k)
	if type(n) == 'number' and n > 0 and n <= tonumber(ARGV[1]) then
		out[i] = redis.call('GET', k)
	else
		out[i] = false
	end
end
return out
`)

// readClientIndex returns the names of the index's entries that have not
// expired, latest first, at most ARGV[2] of them, each at most ARGV[3]
// bytes long. An index of another type reads as empty.
//
// KEYS: client index. ARGV: now (ms), how many, the longest name.
var readClientIndex = redis.NewScript(`
local names = redis.pcall('ZREVRANGEBYSCORE', KEYS[1], '+inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if type(names) ~= 'table' then return {} end
local out = {}
for _, name in ipairs(names) do
	if #name <= tonumber(ARGV[3]) then out[#out + 1] = name end
end
return out
`)

// claimLease takes a probe lease with SET NX PX; the holder may renew
// its own. It returns -1 when the caller holds it, else the lease's
// remaining milliseconds. A lease set to last longer than probe_lease (or
// with no expiry) is cut to probe_lease: no one holds a probe longer.
//
// KEYS: lease key. ARGV: token, lease (ms).
var claimLease = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return -1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return -1
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left > tonumber(ARGV[2]) then
	redis.call('PEXPIRE', KEYS[1], ARGV[2])
	return tonumber(ARGV[2])
end
return left
`)

// releaseLease deletes a probe lease if the caller holds it.
//
// KEYS: lease key. ARGV: token.
var releaseLease = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

var (
	redisLoggerOnce sync.Once
	// redisLog is where go-redis's own lines go: the logger of the latest
	// Sharer with a Redis backend (go-redis has one process-wide logger).
	redisLog atomic.Pointer[zap.Logger]
)

func newRedisBackend(s *Sharer, cfg Config) (*redisBackend, error) {
	opt, err := redisOptions(cfg, s.timeout)
	if err != nil {
		return nil, err
	}
	redisLog.Store(s.logger.Named("redis"))
	redisLoggerOnce.Do(func() { redis.SetLogger(redisLogger{}) })

	b := &redisBackend{
		s:         s,
		client:    redis.NewClient(opt),
		prefix:    cfg.Prefix,
		token:     s.instance + "/" + RandomToken(),
		lease:     cfg.ProbeLease,
		probeWait: cfg.ProbeWait,
		resyncCh:  make(chan struct{}, 1),
		written:   make(map[string]time.Time),
	}
	if b.prefix == "" {
		b.prefix = DefaultRedisPrefix
	}
	if b.lease <= 0 {
		b.lease = DefaultProbeLease
	}
	if b.probeWait <= 0 {
		b.probeWait = DefaultProbeWait
	}
	b.channel = b.prefix + ":decisions"
	return b, nil
}

func (b *redisBackend) breakerKey(name string) string { return b.prefix + ":breaker:" + name }
func (b *redisBackend) leaseKey(name string) string   { return b.prefix + ":probe:" + name }
func (b *redisBackend) clientIndex() string           { return b.prefix + ":clients" }

// load reads every shared decision, bounded by the timeout.
func (b *redisBackend) load(ctx context.Context) {
	if err := b.read(ctx); err != nil {
		b.failed("reading shared breaker state from redis", err)
	}
}

// run subscribes to the decisions channel and writes this instance's
// decisions when kicked; every interval it retries what failed. After a
// reconnect it reads everything again and rewrites its own decisions,
// since messages published meanwhile were lost and a restarted Redis
// forgot its keys.
func (b *redisBackend) run(ctx context.Context) {
	defer b.client.Close()
	subDone := make(chan struct{})
	go func() { defer close(subDone); b.subscribe(ctx) }()
	defer func() { <-subDone }()
	b.s.loop(ctx, b.write, b.tick, b.resyncCh, b.resync)
}

// tick retries, every interval, what failed: the connection while Redis
// is down, else the writes a failure left behind.
func (b *redisBackend) tick(ctx context.Context) {
	if !b.down.Load() {
		b.write(ctx)
		return
	}
	pingCtx, cancel := context.WithTimeout(ctx, b.s.timeout)
	err := b.client.Ping(pingCtx).Err()
	cancel()
	if err != nil {
		b.failed("redis is unreachable", err)
		return
	}
	b.resync(ctx)
}

// resync rewrites every decision of this instance and reads the others'.
func (b *redisBackend) resync(ctx context.Context) {
	clear(b.written)
	b.write(ctx)
	if err := b.read(ctx); err != nil {
		b.failed("reading shared breaker state from redis", err)
		return
	}
	b.up()
}

// write stores the decisions made here since the last write.
func (b *redisBackend) write(ctx context.Context) {
	now := b.s.now()
	failed := false
	listed := make(map[string]struct{}, len(b.written))
	b.s.decisions(now, func(name string, st breaker.Decision) {
		listed[name] = struct{}{}
		if failed {
			return // retried in an interval
		}
		if w, ok := b.written[name]; ok && w.Equal(st.DecidedAt) {
			return
		}
		d := RedisDecision{Name: name, State: st.State, Decided: st.DecidedAt.UnixMicro(),
			Instance: b.s.instance, Token: b.token}
		if st.State == breaker.Open {
			d.Until, d.Class = st.Until.UnixMilli(), st.Class
		}
		client := "0"
		if isClientName(name) {
			client = "1"
		}
		val, _ := json.Marshal(d)
		opCtx, cancel := context.WithTimeout(ctx, b.s.timeout)
		stored, err := writeDecision.Run(opCtx, b.client, []string{b.breakerKey(name), b.leaseKey(name), b.clientIndex()},
			val, string(d.State), d.Until, d.Decided, now.UnixMilli(), keepClosedDecisionsFor.Milliseconds(),
			b.channel, b.token, now.Add(MaxClockSkew).UnixMicro(), client, MaxSharedClients, b.breakerKey(""), name, maxDecisionBytes).Text()
		cancel()
		if err != nil && !errors.Is(err, redis.Nil) {
			b.failed("writing shared breaker state to redis", err)
			failed = true
			return
		}
		b.written[name] = st.DecidedAt
		b.up()
		if stored != "" && stored != string(val) {
			// the stored decision wins over ours: a longer cooldown, or a
			// close made after our cooldown
			b.applyJSON(now, stored, false)
		}
	})
	if !failed {
		// what is no longer listed is forgotten: the map stays as small
		// as what is shared
		for name := range b.written {
			if _, ok := listed[name]; !ok {
				delete(b.written, name)
			}
		}
	}
}

// read adopts the stored decisions of this handler's provider-wide
// breakers and of the clients the index names, MaxSharedClients at most,
// whatever else the prefix holds.
func (b *redisBackend) read(ctx context.Context) error {
	opCtx, cancel := context.WithTimeout(ctx, b.s.timeout)
	defer cancel()
	var keys []string
	b.s.breakers.Each(func(name string, _ *breaker.Breaker) { keys = append(keys, b.breakerKey(name)) })
	now := b.s.now()
	names, err := readClientIndex.Run(opCtx, b.client, []string{b.clientIndex()},
		now.UnixMilli(), MaxSharedClients, maxNameLen).StringSlice()
	if err != nil {
		return err
	}
	for _, name := range names {
		keys = append(keys, b.breakerKey(name))
	}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), 256)]
		keys = keys[len(batch):]
		vals, err := readDecisions.Run(opCtx, b.client, batch, maxDecisionBytes).Slice()
		if err != nil {
			return err
		}
		for _, v := range vals {
			if s, ok := v.(string); ok {
				b.applyJSON(now, s, false)
			}
		}
	}
	b.s.synced()
	return nil
}

// subscribe applies the decisions other instances publish. go-redis
// reconnects a lost subscription on the next receive; each (re)subscribe
// confirmation asks for a resync.
func (b *redisBackend) subscribe(ctx context.Context) {
	ps := b.client.Subscribe(ctx, b.channel)
	defer ps.Close()
	for ctx.Err() == nil {
		msg, err := ps.ReceiveTimeout(ctx, b.s.interval)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue // quiet channel
			}
			if ctx.Err() != nil {
				return
			}
			b.failed("redis subscription lost", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(b.s.interval):
			}
			continue
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				select {
				case b.resyncCh <- struct{}{}:
				default:
				}
			}
		case *redis.Message:
			if len(m.Payload) > maxDecisionBytes {
				b.s.fault("a shared breaker decision published in redis is too large", fmt.Errorf("%d bytes", len(m.Payload)), b.channel)
				continue
			}
			b.applyJSON(b.s.now(), m.Payload, true)
			b.s.synced()
		}
	}
}

// applyJSON adopts one stored or published decision.
func (b *redisBackend) applyJSON(now time.Time, data string, skipOwn bool) {
	var d RedisDecision
	if err := json.Unmarshal([]byte(data), &d); err != nil || d.Name == "" || (d.State != breaker.Open && d.State != breaker.Closed) {
		b.s.fault("a shared breaker entry in redis is corrupt", fmt.Errorf("%.100q", data), b.channel)
		return
	}
	if skipOwn && d.Token == b.token {
		return
	}
	b.s.apply(now, d.Name, d.decision(), d.Instance)
}

// claimProbe takes the fleet's probe lease of a breaker. It is the one
// Redis call on the request path, made once per cooldown end and bounded
// by probe_wait: if Redis is down or slow, this instance probes on its
// own, as it would without sharing.
func (b *redisBackend) claimProbe(name string) (bool, time.Time) {
	if b.down.Load() {
		return true, time.Time{}
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.probeWait)
	defer cancel()
	left, err := claimLease.Run(ctx, b.client, []string{b.leaseKey(name)}, b.token, b.lease.Milliseconds()).Int64()
	if err != nil {
		b.s.fault("claiming the probe lease in redis; probing without it", err, b.leaseKey(name))
		return true, time.Time{}
	}
	if left < 0 {
		return true, time.Time{}
	}
	return false, b.s.now().Add(time.Duration(left) * time.Millisecond)
}

// releaseProbe deletes this instance's probe lease of a breaker.
func (b *redisBackend) releaseProbe(name string) {
	if b.down.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.s.timeout)
	defer cancel()
	if err := releaseLease.Run(ctx, b.client, []string{b.leaseKey(name)}, b.token).Err(); err != nil {
		b.s.fault("releasing the probe lease in redis", err, b.leaseKey(name))
	}
}

func (b *redisBackend) failed(msg string, err error) {
	b.down.Store(true)
	b.s.fault(msg, err, b.client.Options().Addr)
}

func (b *redisBackend) up() {
	if b.down.Swap(false) {
		b.s.recovered()
	}
}

// redisOptions are the client options of cfg's Redis URL: every call
// bounded by timeout, faults never retried inside a call (callers retry on
// their own schedule), a small pool.
func redisOptions(cfg Config, timeout time.Duration) (*redis.Options, error) {
	opt, err := redis.ParseURL(cfg.Redis)
	if err != nil {
		return nil, fmt.Errorf("share: redis URL: %v", err)
	}
	if cfg.Password != nil {
		username, password := opt.Username, cfg.Password
		opt.CredentialsProviderContext = func(ctx context.Context) (string, string, error) {
			secret, err := password(ctx)
			if err != nil {
				return "", "", fmt.Errorf("redis password: %v", err)
			}
			return username, secret, nil
		}
	}
	opt.MaxRetries = -1
	opt.DialerRetries = 1
	opt.DialTimeout = timeout
	opt.ReadTimeout = timeout
	opt.WriteTimeout = timeout
	opt.PoolTimeout = timeout
	opt.ContextTimeoutEnabled = true
	opt.DisableIdentity = true
	opt.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	opt.PoolSize = 4
	return opt, nil
}

// redisLogger sends go-redis's own log lines to Caddy's log at debug
// level: the Sharer logs faults itself, once per interval.
type redisLogger struct{}

func (redisLogger) Printf(_ context.Context, format string, v ...any) {
	logger := redisLog.Load()
	if logger == nil {
		return
	}
	if c := logger.Check(zap.DebugLevel, "go-redis"); c != nil {
		c.Write(zap.String("message", strings.TrimSpace(fmt.Sprintf(format, v...))))
	}
}
