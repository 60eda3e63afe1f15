package credsource

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
)

// fakeSecurity is a fake macOS `security` program first on PATH. It appends
// its arguments (one per line, then "--") to args; find-generic-password
// with -w prints the file item, without -w prints attributes naming the
// account "tester"; add-generic-password stores its -w value in item. When
// the file fail exists, it prints that file to stderr and exits with 44 if
// the file says "notfound", else 1.
type fakeSecurity struct {
	dir, args, item, fail string
}

func newFakeSecurity(t *testing.T) *fakeSecurity {
	t.Helper()
	needShell(t)
	dir := t.TempDir()
	fs := &fakeSecurity{
		dir:  dir,
		args: filepath.Join(dir, "args"),
		item: filepath.Join(dir, "item"),
		fail: filepath.Join(dir, "fail"),
	}
	writeScript(t, dir, "security", `
for a in "$@"; do printf '%s\n' "$a" >> "`+fs.args+`"; done
echo -- >> "`+fs.args+`"
if [ -f "`+fs.fail+`" ]; then
	cat "`+fs.fail+`" >&2
	if grep -q notfound "`+fs.fail+`"; then exit 44; fi
	exit 1
fi
case "$1" in
find-generic-password)
	for a in "$@"; do
		if [ "$a" = "-w" ]; then cat "`+fs.item+`"; echo; exit 0; fi
	done
	echo 'keychain: "/Users/tester/Library/Keychains/login.keychain-db"'
	echo 'class: "genp"'
	echo 'attributes:'
	echo '    "acct"<blob>="tester"'
	echo '    "svce"<blob>="whatever"'
	;;
add-generic-password)
	while [ $# -gt 0 ]; do
		if [ "$1" = "-w" ]; then shift; printf '%s' "$1" > "`+fs.item+`"; fi
		shift
	done
	;;
*)
	echo "unexpected command $1" >&2
	exit 2
	;;
esac
`)
	prependPath(t, dir)
	return fs
}

func (f *fakeSecurity) setItem(t *testing.T, v string) {
	t.Helper()
	if err := os.WriteFile(f.item, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (f *fakeSecurity) setFail(t *testing.T, stderr string) {
	t.Helper()
	if err := os.WriteFile(f.fail, []byte(stderr), 0o600); err != nil {
		t.Fatal(err)
	}
}

// calls returns the recorded invocations, each a list of arguments.
func (f *fakeSecurity) calls(t *testing.T) [][]string {
	t.Helper()
	data, err := os.ReadFile(f.args)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var calls [][]string
	var cur []string
	for _, line := range strings.Split(strings.TrimSuffix(string(data), "\n"), "\n") {
		if line == "--" {
			calls = append(calls, cur)
			cur = nil
			continue
		}
		cur = append(cur, line)
	}
	return calls
}

func newTestKeychain(t *testing.T, k *Keychain, clock *fakeClock) *Keychain {
	t.Helper()
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	if clock != nil {
		k.now = clock.Now
	}
	k.setup(zap.NewNop())
	return k
}

func TestKeychainReadsItem(t *testing.T) {
	sec := newFakeSecurity(t)
	sec.setItem(t, "sk-keychain-secret")
	k := newTestKeychain(t, &Keychain{Service: "zai api key", Account: "me"}, nil)
	cred, err := k.Credential(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Secret != "sk-keychain-secret" || cred.Version != Fingerprint("sk-keychain-secret") {
		t.Errorf("credential = %+v", cred)
	}
	calls := sec.calls(t)
	want := "find-generic-password -s zai api key -a me -w"
	if len(calls) != 1 || strings.Join(calls[0], " ") != want {
		t.Errorf("security called with %q, want [%q]", calls, want)
	}
	if calls[0][2] != "zai api key" {
		t.Errorf("service passed as %q, want one argument", calls[0][2])
	}
	if st := k.Status(); st.State != StateOK {
		t.Errorf("status = %+v", st)
	}
	assertJSONExcludes(t, k, "sk-keychain-secret")
}

func TestKeychainWithoutAccount(t *testing.T) {
	sec := newFakeSecurity(t)
	sec.setItem(t, "v")
	k := newTestKeychain(t, &Keychain{Service: "svc"}, nil)
	if _, err := k.Credential(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(sec.calls(t)[0], " "); got != "find-generic-password -s svc -w" {
		t.Errorf("security called with %q", got)
	}
}

func TestKeychainTTLAndRefused(t *testing.T) {
	sec := newFakeSecurity(t)
	sec.setItem(t, "first")
	clock := newFakeClock()
	k := newTestKeychain(t, &Keychain{Service: "svc", TTL: durationPtr(time.Minute)}, clock)
	ctx := testCtx(t)
	c1, _ := k.Credential(ctx)
	sec.setItem(t, "second")
	c2, _ := k.Credential(ctx)
	if c2.Secret != "first" || len(sec.calls(t)) != 1 {
		t.Fatalf("within the TTL: got %q after %d reads", c2.Secret, len(sec.calls(t)))
	}
	if !k.Refused(ctx, c1.Version) {
		t.Fatal("Refused did not notice the changed item")
	}
	c3, _ := k.Credential(ctx)
	if c3.Secret != "second" || len(sec.calls(t)) != 2 {
		t.Errorf("after Refused: got %q after %d reads", c3.Secret, len(sec.calls(t)))
	}
	if k.Refused(ctx, c3.Version) {
		t.Error("Refused returned true for an unchanged item")
	}
	sec.setItem(t, "third")
	clock.Advance(time.Minute)
	c4, _ := k.Credential(ctx)
	if c4.Secret != "third" {
		t.Errorf("after the TTL: %q", c4.Secret)
	}
}

func TestKeychainErrors(t *testing.T) {
	sec := newFakeSecurity(t)
	sec.setItem(t, "sk-never-in-errors")
	clock := newFakeClock()
	k := newTestKeychain(t, &Keychain{Service: "svc"}, clock)
	ctx := testCtx(t)

	sec.setFail(t, "security: SecKeychainSearchCopyNext: The specified item could not be found in the keychain. notfound\n")
	_, err := k.Credential(ctx)
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), `"svc"`) {
		t.Errorf("missing item: err = %v", err)
	}
	if st := k.Status(); st.State != StateMissing {
		t.Errorf("status = %+v", st)
	}

	clock.Advance(failureMemory)
	sec.setFail(t, "  security: User interaction is not allowed.  \n")
	_, err = k.Credential(ctx)
	if err == nil || errors.Is(err, ErrMissing) {
		t.Fatalf("locked keychain: err = %v", err)
	}
	if !strings.Contains(err.Error(), ": security: User interaction is not allowed.") {
		t.Errorf("error %q lacks the trimmed stderr", err)
	}
	if strings.Contains(err.Error(), "sk-never-in-errors") {
		t.Errorf("error %q contains the secret", err)
	}
	if st := k.Status(); st.State != StateRefreshFailed {
		t.Errorf("status = %+v", st)
	}

	clock.Advance(failureMemory)
	if err := os.Remove(sec.fail); err != nil {
		t.Fatal(err)
	}
	sec.setItem(t, "\n")
	if _, err := k.Credential(ctx); !errors.Is(err, ErrMissing) {
		t.Errorf("empty item: err = %v", err)
	}
}

func TestKeychainSecurityNotInstalled(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	k := newTestKeychain(t, &Keychain{Service: "svc"}, nil)
	_, err := k.Credential(testCtx(t))
	if err == nil || !strings.Contains(err.Error(), "security program was not found") {
		t.Errorf("err = %v", err)
	}
}

func TestKeychainCaddyfile(t *testing.T) {
	var k Keychain
	if err := unmarshalCaddyfile(t, &k, "keychain \"zai key\" me {\n\tttl 1h\n}"); err != nil {
		t.Fatal(err)
	}
	if k.Service != "zai key" || k.Account != "me" || k.TTL == nil || time.Duration(*k.TTL) != time.Hour {
		t.Errorf("parsed %+v", k)
	}
	var k2 Keychain
	if err := unmarshalCaddyfile(t, &k2, "keychain svc"); err != nil {
		t.Fatal(err)
	}
	if k2.Service != "svc" || k2.Account != "" || k2.TTL != nil {
		t.Errorf("parsed %+v", k2)
	}
	for _, bad := range []string{
		"keychain",
		"keychain a b c",
		"keychain svc {\n\tttl\n}",
		"keychain svc {\n\tttl forever\n}",
		"keychain svc {\n\taccount me\n}",
	} {
		var k Keychain
		if err := unmarshalCaddyfile(t, &k, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if err := (&Keychain{}).Validate(); err == nil {
		t.Error("Validate accepted an empty service")
	}
}
