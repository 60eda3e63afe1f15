package credsource

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func newTestCommand(t *testing.T, c *Command, clock *fakeClock) *Command {
	t.Helper()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		c.now = clock.Now
	}
	c.setup(zap.NewNop())
	return c
}

func durationPtr(d time.Duration) *caddy.Duration {
	cd := caddy.Duration(d)
	return &cd
}

func TestCommandValueTrimmed(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	helper := writeScript(t, dir, "get-key", `printf '  sk-cmd-%s \n' "$1"`+"\n")
	c := newTestCommand(t, &Command{Command: []string{helper, "zai"}}, nil)
	cred, err := c.Credential(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Secret != "sk-cmd-zai" {
		t.Errorf("secret = %q", cred.Secret)
	}
	if cred.Version != Fingerprint("sk-cmd-zai") {
		t.Errorf("version = %q", cred.Version)
	}
	if st := c.Status(); st.State != StateOK {
		t.Errorf("status = %+v", st)
	}
	assertJSONExcludes(t, c, "sk-cmd-zai")
}

func TestCommandFoundOnPath(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	writeScript(t, dir, "my-key-helper", "echo from-path\n")
	prependPath(t, dir)
	c := newTestCommand(t, &Command{Command: []string{"my-key-helper"}}, nil)
	cred, err := c.Credential(testCtx(t))
	if err != nil || cred.Secret != "from-path" {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
}

func TestCommandTTLCaching(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	helper := writeScript(t, dir, "helper", `echo run >> "`+count+`"`+"\necho cached-value\n")
	clock := newFakeClock()
	c := newTestCommand(t, &Command{Command: []string{helper}, TTL: durationPtr(10 * time.Minute)}, clock)
	ctx := testCtx(t)

	for i := 0; i < 3; i++ {
		if _, err := c.Credential(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := countLines(t, count); n != 1 {
		t.Fatalf("helper ran %d times within the TTL, want 1", n)
	}
	clock.Advance(9 * time.Minute)
	if _, err := c.Credential(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countLines(t, count); n != 1 {
		t.Fatalf("helper ran %d times before the TTL passed, want 1", n)
	}
	clock.Advance(2 * time.Minute)
	if _, err := c.Credential(ctx); err != nil {
		t.Fatal(err)
	}
	if n := countLines(t, count); n != 2 {
		t.Fatalf("helper ran %d times after the TTL passed, want 2", n)
	}
}

func TestCommandDefaultTTLAndZeroTTL(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	helper := writeScript(t, dir, "helper", `echo run >> "`+count+`"`+"\necho v\n")
	clock := newFakeClock()
	ctx := testCtx(t)

	c := newTestCommand(t, &Command{Command: []string{helper}}, clock)
	c.Credential(ctx)
	clock.Advance(defaultCacheTTL - time.Second)
	c.Credential(ctx)
	if n := countLines(t, count); n != 1 {
		t.Fatalf("default TTL: helper ran %d times, want 1", n)
	}

	zero := newTestCommand(t, &Command{Command: []string{helper}, TTL: durationPtr(0)}, clock)
	for i := 0; i < 3; i++ {
		if _, err := zero.Credential(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if n := countLines(t, count); n != 4 {
		t.Fatalf("ttl 0: helper ran %d times in total, want 1+3", n)
	}
}

func TestCommandConcurrentCallersShareOneRun(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	helper := writeScript(t, dir, "helper", `echo run >> "`+count+`"`+"\nsleep 0.3\necho shared\n")
	c := newTestCommand(t, &Command{Command: []string{helper}}, nil)
	ctx := testCtx(t)

	var wg sync.WaitGroup
	errs := make(chan error, 10)
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cred, err := c.Credential(ctx)
			if err == nil && cred.Secret != "shared" {
				err = errors.New("wrong secret " + cred.Secret)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := countLines(t, count); n != 1 {
		t.Errorf("helper ran %d times for 10 concurrent callers, want 1", n)
	}
}

func TestCommandTimeout(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	// The child sleep keeps stdout open: the whole group must be killed.
	helper := writeScript(t, dir, "slow", "sleep 5\necho too-late\n")
	c := newTestCommand(t, &Command{Command: []string{helper}, Timeout: caddy.Duration(200 * time.Millisecond)}, nil)
	start := time.Now()
	_, err := c.Credential(testCtx(t))
	elapsed := time.Since(start)
	if err == nil {
		t.Fatal("a helper that outlived its timeout succeeded")
	}
	if !strings.Contains(err.Error(), "timed out after 200ms") {
		t.Errorf("error %q does not report the timeout", err)
	}
	if elapsed > 3*time.Second {
		t.Errorf("timeout took %s", elapsed)
	}
	if st := c.Status(); st.State != StateRefreshFailed || !strings.Contains(st.Reason, "timed out") {
		t.Errorf("status = %+v", st)
	}
}

func TestCommandNonZeroExit(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	helper := writeScript(t, dir, "failing", "echo sk-stdout-secret\necho '  vault is sealed  ' >&2\nexit 3\n")
	c := newTestCommand(t, &Command{Command: []string{helper}}, nil)
	_, err := c.Credential(testCtx(t))
	if err == nil {
		t.Fatal("a failing helper succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "exit status 3") || !strings.Contains(msg, ": vault is sealed") {
		t.Errorf("error %q lacks the exit status or the trimmed stderr", msg)
	}
	if strings.Contains(msg, "sk-stdout-secret") {
		t.Errorf("error %q contains stdout", msg)
	}
	if !strings.Contains(msg, helper) {
		t.Errorf("error %q does not name the helper", msg)
	}
}

func TestCommandLongStderrIsCapped(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	helper := writeScript(t, dir, "noisy", "i=0\nwhile [ $i -lt 200 ]; do echo 'a line of complaint' >&2; i=$((i+1)); done\nexit 1\n")
	c := newTestCommand(t, &Command{Command: []string{helper}}, nil)
	_, err := c.Credential(testCtx(t))
	if err == nil {
		t.Fatal("no error")
	}
	if len(err.Error()) > maxStderrInError+len(helper)+100 {
		t.Errorf("error is %d bytes long, stderr not capped", len(err.Error()))
	}
}

func TestCommandEmptyOutputAndMissingProgram(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	helper := writeScript(t, dir, "silent", "exit 0\n")
	c := newTestCommand(t, &Command{Command: []string{helper}}, nil)
	_, err := c.Credential(testCtx(t))
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "printed nothing") {
		t.Errorf("empty output: err = %v", err)
	}
	if st := c.Status(); st.State != StateMissing {
		t.Errorf("status = %+v", st)
	}

	missing := newTestCommand(t, &Command{Command: []string{filepath.Join(dir, "does-not-exist")}}, nil)
	if _, err := missing.Credential(testCtx(t)); err == nil || !strings.Contains(err.Error(), "could not be run") {
		t.Errorf("missing program: err = %v", err)
	}
}

func TestCommandFailureIsRememberedBriefly(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	count := filepath.Join(dir, "count")
	helper := writeScript(t, dir, "failing", `echo run >> "`+count+`"`+"\nexit 1\n")
	clock := newFakeClock()
	c := newTestCommand(t, &Command{Command: []string{helper}}, clock)
	ctx := testCtx(t)
	c.Credential(ctx)
	c.Credential(ctx)
	if n := countLines(t, count); n != 1 {
		t.Fatalf("failing helper ran %d times within a second, want 1", n)
	}
	clock.Advance(failureMemory)
	c.Credential(ctx)
	if n := countLines(t, count); n != 2 {
		t.Fatalf("failing helper ran %d times, want 2", n)
	}
}

func TestCommandRefusedForcesRerun(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	value := filepath.Join(dir, "value")
	if err := os.WriteFile(value, []byte("key-one\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	helper := writeScript(t, dir, "helper", `cat "`+value+`"`+"\n")
	c := newTestCommand(t, &Command{Command: []string{helper}, TTL: durationPtr(time.Hour)}, newFakeClock())
	ctx := testCtx(t)
	first, err := c.Credential(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Refused(ctx, first.Version) {
		t.Error("Refused returned true though the helper prints the same key")
	}
	if err := os.WriteFile(value, []byte("key-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if !c.Refused(ctx, first.Version) {
		t.Fatal("Refused did not run the helper again")
	}
	second, _ := c.Credential(ctx)
	if second.Secret != "key-two" {
		t.Errorf("after Refused: %q", second.Secret)
	}
}

func TestCommandCaddyfile(t *testing.T) {
	var c Command
	err := unmarshalCaddyfile(t, &c, "command /usr/local/bin/get-key --provider zai {\n\tttl 10m\n\ttimeout 5s\n}")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Command, " ") != "/usr/local/bin/get-key --provider zai" {
		t.Errorf("command = %q", c.Command)
	}
	if c.TTL == nil || time.Duration(*c.TTL) != 10*time.Minute {
		t.Errorf("ttl = %v", c.TTL)
	}
	if time.Duration(c.Timeout) != 5*time.Second {
		t.Errorf("timeout = %v", c.Timeout)
	}

	var sh Command
	if err := unmarshalCaddyfile(t, &sh, "command sh -c \"pass show zai | head -1\" {\n\tttl 0\n}"); err != nil {
		t.Fatal(err)
	}
	if len(sh.Command) != 3 || sh.Command[2] != "pass show zai | head -1" {
		t.Errorf("command = %q", sh.Command)
	}
	if sh.TTL == nil || *sh.TTL != 0 {
		t.Errorf("ttl 0 not kept: %v", sh.TTL)
	}

	var plain Command
	if err := unmarshalCaddyfile(t, &plain, "command get-key"); err != nil {
		t.Fatal(err)
	}
	if plain.TTL != nil || plain.Timeout != 0 {
		t.Errorf("defaults changed: %+v", plain)
	}

	for _, bad := range []string{
		"command",
		"command {\n\tttl 5m\n}",
		"command x {\n\tttl\n}",
		"command x {\n\tttl soon\n}",
		"command x {\n\tttl -5m\n}",
		"command x {\n\ttimeout 0\n}",
		"command x {\n\ttimeout 5s 6s\n}",
		"command x {\n\tretries 3\n}",
	} {
		var c Command
		if err := unmarshalCaddyfile(t, &c, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestCommandLoadedFromJSON(t *testing.T) {
	needShell(t)
	dir := t.TempDir()
	helper := writeScript(t, dir, "helper", "echo json-cmd-secret\n")
	m, err := loadModule(t, "llm.credentials.command", `{"command":["`+helper+`"],"ttl":"1m","timeout":"2s"}`)
	if err != nil {
		t.Fatal(err)
	}
	c := m.(*Command)
	cred, err := c.Credential(testCtx(t))
	if err != nil || cred.Secret != "json-cmd-secret" {
		t.Fatalf("%q, %v", cred.Secret, err)
	}
	assertJSONExcludes(t, c, "json-cmd-secret")
	if _, err := loadModule(t, "llm.credentials.command", `{"command":[]}`); err == nil {
		t.Error("an empty command was loaded")
	}
}
