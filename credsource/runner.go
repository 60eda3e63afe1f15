package credsource

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// Defaults shared by the sources that run an external program.
const (
	// defaultCacheTTL is how long a value read from a program is reused.
	// Claude Code's apiKeyHelper uses the same default.
	defaultCacheTTL = 5 * time.Minute

	// defaultCommandTimeout bounds one run of a program.
	defaultCommandTimeout = 10 * time.Second

	// failureMemory is how long a failed run is remembered, so a burst of
	// requests does not start a failing program once each.
	failureMemory = time.Second

	// maxCommandOutput caps the stdout read from a program.
	maxCommandOutput = 64 << 10

	// maxStderrInError caps how much of a program's stderr goes into an
	// error message.
	maxStderrInError = 512

	// waitDelay is how long a killed program's children may keep its
	// output pipes open before they are closed anyway.
	waitDelay = time.Second
)

// runError describes a failed run of an external program. It names the
// program (not its arguments) and quotes its stderr, never its stdout.
type runError struct {
	prog     string
	timeout  time.Duration
	timedOut bool
	exitCode int    // -1 when the program did not exit normally
	state    string // e.g. "exit status 2", "signal: killed"
	stderr   string
	startErr error
}

func (e *runError) Error() string {
	var b strings.Builder
	b.WriteString(e.prog)
	switch {
	case e.startErr != nil:
		b.WriteString(" could not be run: ")
		b.WriteString(e.startErr.Error())
	case e.timedOut:
		fmt.Fprintf(&b, " timed out after %s and was killed", e.timeout)
	default:
		b.WriteString(" failed: ")
		b.WriteString(e.state)
	}
	if e.stderr != "" {
		b.WriteString(": ")
		b.WriteString(e.stderr)
	}
	return b.String()
}

func (e *runError) Unwrap() error { return e.startErr }

// cappedBuffer keeps the first limit bytes written to it and silently drops
// the rest (so the writer never sees EPIPE), remembering that it did.
type cappedBuffer struct {
	buf       bytes.Buffer
	limit     int
	truncated bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	room := c.limit - c.buf.Len()
	if room < len(p) {
		c.truncated = true
		if room > 0 {
			c.buf.Write(p[:room])
		}
		return len(p), nil
	}
	return c.buf.Write(p)
}

// runCommand runs argv (no shell) with stdin closed and returns its stdout.
// The program, and on Unix its whole process group, is killed when timeout
// passes or ctx ends. A non-zero exit is a *runError that carries the
// trimmed, capped stderr.
func runCommand(ctx context.Context, timeout time.Duration, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("no program to run")
	}
	prog := argv[0]
	if timeout <= 0 {
		timeout = defaultCommandTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(ctx, prog, argv[1:]...)
	stdout := &cappedBuffer{limit: maxCommandOutput}
	stderr := &cappedBuffer{limit: 4 * maxStderrInError}
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.WaitDelay = waitDelay
	killGroupOnCancel(cmd)

	err := cmd.Run()
	errText := capString(strings.TrimSpace(stderr.buf.String()), maxStderrInError)
	if ctx.Err() == context.DeadlineExceeded {
		return nil, &runError{prog: prog, timeout: timeout, timedOut: true, exitCode: -1, stderr: errText}
	}
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			return nil, &runError{prog: prog, exitCode: exitErr.ExitCode(), state: exitErr.ProcessState.String(), stderr: errText}
		}
		if ctx.Err() != nil {
			return nil, &runError{prog: prog, exitCode: -1, state: ctx.Err().Error(), stderr: errText}
		}
		return nil, &runError{prog: prog, exitCode: -1, startErr: err, stderr: errText}
	}
	if stdout.truncated {
		return nil, fmt.Errorf("%s printed more than %d bytes", prog, maxCommandOutput)
	}
	return stdout.buf.Bytes(), nil
}

// exitCode returns the exit code of a failed run, or -1.
func exitCode(err error) int {
	var re *runError
	if errors.As(err, &re) {
		return re.exitCode
	}
	return -1
}

// ttlDuration resolves an optional TTL: nil means the default.
func ttlDuration(ttl *caddy.Duration) time.Duration {
	if ttl == nil {
		return defaultCacheTTL
	}
	return time.Duration(*ttl)
}

// cachedValue caches the value fetched by a slow, external lookup (a program
// run) for a TTL, and makes concurrent callers share one lookup. It is the
// common part of the keychain and command sources.
type cachedValue struct {
	// fetch obtains the value. It is run in its own goroutine with a
	// context that callers' cancellations do not end.
	fetch func(ctx context.Context) (string, error)
	// ttl is how long a fetched value is reused; 0 fetches on every call
	// (concurrent calls still share one fetch).
	ttl    time.Duration
	now    func() time.Time
	logger *zap.Logger
	what   string // names the source in log entries

	mu        sync.Mutex
	value     string
	fetchedAt time.Time
	err       error // last fetch's error; nil after a success
	errAt     time.Time
	fetched   bool // a fetch has completed at least once
	flight    *valueFlight
}

type valueFlight struct {
	started time.Time // wall clock, for readyWait
	done    chan struct{}
	value   string
	err     error
}

// get returns the cached value if it is fresh, else fetches it (joining a
// fetch already under way). force skips the cache and the failure memory.
func (c *cachedValue) get(ctx context.Context, force bool) (string, error) {
	c.mu.Lock()
	if !force {
		if v, ok, err := c.heldLocked(); ok {
			c.mu.Unlock()
			return v, err
		}
	}
	f := c.startLocked(ctx)
	c.mu.Unlock()

	select {
	case <-f.done:
		return f.value, f.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// heldLocked returns what answers a lookup without a run: a value within
// its TTL, or a failure still remembered (so a broken source is not run on
// every request). ok is false when a run is due. c.mu must be held.
func (c *cachedValue) heldLocked() (v string, ok bool, err error) {
	if !c.fetched {
		return "", false, nil
	}
	now := c.now()
	if c.err == nil && c.ttl > 0 && now.Sub(c.fetchedAt) < c.ttl {
		return c.value, true, nil
	}
	if c.err != nil && now.Sub(c.errAt) < failureMemory {
		return "", true, c.err
	}
	return "", false, nil
}

// ready returns what is held now: a fresh value, or the last good one
// while a new run (started here when due) is under way. With nothing held
// it starts a run and waits for it at most wait, then returns ErrNotReady,
// or the last run's error.
func (c *cachedValue) ready(ctx context.Context, wait time.Duration) (string, error) {
	c.mu.Lock()
	if v, ok, err := c.heldLocked(); ok {
		c.mu.Unlock()
		return v, err
	}
	f := c.startLocked(ctx)
	if c.fetched && c.err == nil {
		v := c.value // past its TTL: used until the new run ends
		c.mu.Unlock()
		return v, nil
	}
	c.mu.Unlock()
	if waitDone(ctx, f.done, readyWait(f.started, wait)) {
		return f.value, f.err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fetched && c.err != nil {
		return "", c.err
	}
	return "", ErrNotReady
}

// readyWait is how much of a ready wait is left for a lookup started at
// started: a lookup that already outlived the wait is not waited for
// again, so a hung helper costs only the requests of its first moments.
func readyWait(started time.Time, wait time.Duration) time.Duration {
	return min(wait, time.Until(started.Add(wait)))
}

// waitDone waits at most d (and never past ctx) for done to be closed, and
// reports whether it was.
func waitDone(ctx context.Context, done <-chan struct{}, d time.Duration) bool {
	select {
	case <-done:
		return true
	default:
	}
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return false
}

// startLocked starts a run unless one is under way, and returns it. The run
// outlives the caller's cancellation. c.mu must be held.
func (c *cachedValue) startLocked(ctx context.Context) *valueFlight {
	if c.flight == nil {
		c.flight = &valueFlight{done: make(chan struct{}), started: time.Now()}
		go c.run(context.WithoutCancel(ctx), c.flight)
	}
	return c.flight
}

func (c *cachedValue) run(ctx context.Context, f *valueFlight) {
	v, err := c.fetchSafely(ctx)

	c.mu.Lock()
	now := c.now()
	wasOK := !c.fetched || c.err == nil
	if err != nil {
		c.value, c.err, c.errAt = "", err, now
		if wasOK {
			c.logger.Warn("reading credential failed", zap.String("source", c.what), zap.Error(err))
		}
	} else {
		if !wasOK {
			c.logger.Info("credential readable again", zap.String("source", c.what))
		}
		c.value, c.err, c.fetchedAt = v, nil, now
	}
	c.fetched = true
	c.flight = nil
	f.value, f.err = v, err
	close(f.done)
	c.mu.Unlock()
}

// fetchSafely runs fetch in the background goroutine, where a panic would
// end the process: it becomes the run's error instead.
func (c *cachedValue) fetchSafely(ctx context.Context) (v string, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = "", fmt.Errorf("%s: the lookup panicked: %v", c.what, r)
		}
	}()
	return c.fetch(ctx)
}

// cachedSource is the Source, ReadySource, Warmer, Refresher and status
// of a source whose lookups (a helper's run, a Keychain read) go through
// a cachedValue: command and keychain. A nil cache means the module was
// not provisioned.
type cachedSource struct {
	now   func() time.Time // the clock; tests set it before setup
	cache *cachedValue
}

// start makes the cache: fetch is one lookup, what names the source in
// logs and errors.
func (s *cachedSource) start(logger *zap.Logger, fetch func(context.Context) (string, error), ttl *caddy.Duration, what string) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.cache = &cachedValue{fetch: fetch, ttl: ttlDuration(ttl), now: s.now, logger: logger, what: what}
}

// Credential returns the last value looked up, from the cache while it is
// fresh.
func (s cachedSource) Credential(ctx context.Context) (Credential, error) {
	return s.cache.credential(ctx)
}

// Ready returns the last value looked up at once (see ReadySource): a
// lookup that is due happens in the background.
func (s cachedSource) Ready(ctx context.Context, wait time.Duration) (Credential, error) {
	return s.cache.readyCredential(ctx, wait)
}

// Warm starts the first lookup in the background.
func (s cachedSource) Warm(ctx context.Context) {
	if s.cache != nil {
		_, _ = s.cache.ready(ctx, 0)
	}
}

// Refused looks the value up again: a different value means a retry may
// work.
func (s cachedSource) Refused(ctx context.Context, version string) bool {
	return s.cache.refused(ctx, version)
}

// Status reports the outcome of the last lookup.
func (s cachedSource) Status() Status { return s.cache.status() }

// credential implements Source for cached sources (command, keychain).
// A nil cache means the module was not provisioned.
func (c *cachedValue) credential(ctx context.Context) (Credential, error) {
	if c == nil {
		return Credential{}, errNotProvisioned
	}
	return secretCredential(c.get(ctx, false))
}

// readyCredential implements ReadySource for cached sources.
func (c *cachedValue) readyCredential(ctx context.Context, wait time.Duration) (Credential, error) {
	if c == nil {
		return Credential{}, errNotProvisioned
	}
	return secretCredential(c.ready(ctx, wait))
}

// refused implements Refresher for cached sources: if the current value is
// already another than the refused one, a retry may work; otherwise the
// value is fetched again, bypassing the cache.
func (c *cachedValue) refused(ctx context.Context, version string) bool {
	if c == nil {
		return false
	}
	c.mu.Lock()
	if c.fetched && c.err == nil && c.value != "" && Fingerprint(c.value) != version {
		c.mu.Unlock()
		return true
	}
	c.mu.Unlock()
	v, err := c.get(ctx, true)
	return err == nil && v != "" && Fingerprint(v) != version
}

// status reports the outcome of the last fetch; if nothing was fetched yet,
// it fetches once (through the cache) so the status is real.
func (c *cachedValue) status() Status {
	if c == nil {
		return Status{State: StateInvalid, Reason: errNotProvisioned.Error()}
	}
	c.mu.Lock()
	fetched, err := c.fetched, c.err
	c.mu.Unlock()
	if !fetched {
		ctx, cancel := context.WithTimeout(context.Background(), 2*defaultCommandTimeout)
		_, err = c.get(ctx, false)
		cancel()
	}
	return statusOf(err, StateRefreshFailed)
}
