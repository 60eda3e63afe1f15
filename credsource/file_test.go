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

func newTestFile(t *testing.T, path string) *File {
	t.Helper()
	f := &File{Path: path}
	if err := f.Validate(); err != nil {
		t.Fatal(err)
	}
	f.setup(zap.NewNop())
	return f
}

func TestFileReadsTrimmedContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("  sk-file-secret-1\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newTestFile(t, path)
	cred, err := f.Credential(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if cred.Secret != "sk-file-secret-1" {
		t.Errorf("secret = %q, want trimmed content", cred.Secret)
	}
	if cred.Version != Fingerprint("sk-file-secret-1") {
		t.Errorf("version = %q", cred.Version)
	}
	if st := f.Status(); st.State != StateOK {
		t.Errorf("status = %+v, want ok", st)
	}
	assertJSONExcludes(t, f, "sk-file-secret-1")
}

func TestFileRotationIsPickedUp(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("old-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newTestFile(t, path)
	ctx := testCtx(t)
	c1, err := f.Credential(ctx)
	if err != nil || c1.Secret != "old-secret" {
		t.Fatalf("first read = %q, %v", c1.Secret, err)
	}

	// A different size.
	if err := os.WriteFile(path, []byte("a-longer-new-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	c2, err := f.Credential(ctx)
	if err != nil || c2.Secret != "a-longer-new-secret" {
		t.Fatalf("after rotation = %q, %v", c2.Secret, err)
	}
	if c2.Version == c1.Version {
		t.Error("version did not change with the secret")
	}

	// The same size, a new modification time.
	if err := os.WriteFile(path, []byte("b-longer-new-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	future := time.Now().Add(time.Hour)
	if err := os.Chtimes(path, future, future); err != nil {
		t.Fatal(err)
	}
	c3, err := f.Credential(ctx)
	if err != nil || c3.Secret != "b-longer-new-secret" {
		t.Fatalf("after same-size rotation = %q, %v", c3.Secret, err)
	}

	// Replaced by rename (a new inode), as secret mounts do.
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte("c-longer-new-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, future, future); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	c4, err := f.Credential(ctx)
	if err != nil || c4.Secret != "c-longer-new-secret" {
		t.Fatalf("after rename = %q, %v", c4.Secret, err)
	}
}

func TestFileUnchangedIsNotReread(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("cached-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, past, past); err != nil {
		t.Fatal(err)
	}
	f := newTestFile(t, path)
	if _, err := f.Credential(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	// Same size, same mtime: the stat says nothing changed, so the cached
	// value is served; Refused reads the file regardless.
	if err := os.WriteFile(path, []byte("cached-secreT"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, past, past); err != nil {
		t.Fatal(err)
	}
	c, err := f.Credential(testCtx(t))
	if err != nil || c.Secret != "cached-secret" {
		t.Fatalf("unchanged stat: got %q, %v; want the cached value", c.Secret, err)
	}
	if !f.Refused(testCtx(t), Fingerprint("cached-secret")) {
		t.Fatal("Refused did not notice the new content")
	}
	c, _ = f.Credential(testCtx(t))
	if c.Secret != "cached-secreT" {
		t.Errorf("after Refused: %q", c.Secret)
	}
	if f.Refused(testCtx(t), Fingerprint("cached-secreT")) {
		t.Error("Refused returned true for an unchanged file")
	}
}

func TestFileMissingAndEmpty(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "nope")
	f := newTestFile(t, path)

	_, err := f.Credential(testCtx(t))
	if !errors.Is(err, ErrMissing) {
		t.Fatalf("missing file: err = %v, want ErrMissing", err)
	}
	if !strings.Contains(err.Error(), path) {
		t.Errorf("error %q does not name the path", err)
	}
	if st := f.Status(); st.State != StateMissing || !strings.Contains(st.Reason, path) {
		t.Errorf("status = %+v", st)
	}

	if err := os.WriteFile(path, []byte(" \n\t"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = f.Credential(testCtx(t))
	if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "empty") || !strings.Contains(err.Error(), path) {
		t.Fatalf("empty file: err = %v", err)
	}

	// Filled later: seen without any change of configuration.
	if err := os.WriteFile(path, []byte("now-there"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := f.Credential(testCtx(t))
	if err != nil || c.Secret != "now-there" {
		t.Fatalf("filled file: %q, %v", c.Secret, err)
	}

	// A directory is reported as such, not as missing.
	f2 := newTestFile(t, dir)
	_, err = f2.Credential(testCtx(t))
	if err == nil || errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "directory") {
		t.Errorf("directory: err = %v", err)
	}
	if st := f2.Status(); st.State != StateInvalid {
		t.Errorf("directory status = %+v", st)
	}
}

func TestFileErrorsNeverContainContent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "big")
	secret := "sk-do-not-print"
	big := strings.Repeat(secret, maxSecretFileSize/len(secret)+2)
	if err := os.WriteFile(path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newTestFile(t, path)
	_, err := f.Credential(testCtx(t))
	if err == nil {
		t.Fatal("an oversized file was accepted")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error %q contains the content", err)
	}
}

func TestFileExpandsHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	if err := os.WriteFile(filepath.Join(home, "k"), []byte("home-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	f := newTestFile(t, "~/k")
	c, err := f.Credential(testCtx(t))
	if err != nil || c.Secret != "home-secret" {
		t.Fatalf("~ path: %q, %v", c.Secret, err)
	}
}

func TestFileCaddyfile(t *testing.T) {
	var f File
	if err := unmarshalCaddyfile(t, &f, `file /run/secrets/zai_key`); err != nil {
		t.Fatal(err)
	}
	if f.Path != "/run/secrets/zai_key" {
		t.Errorf("path = %q", f.Path)
	}
	for _, bad := range []string{
		`file`,
		`file /a /b`,
		"file /a {\n\tttl 5m\n}",
	} {
		var f File
		if err := unmarshalCaddyfile(t, &f, bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
	if err := (&File{}).Validate(); err == nil {
		t.Error("Validate accepted an empty path")
	}
}

func TestFileLoadedFromJSON(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(path, []byte("json-secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	m, err := loadModule(t, "llm.credentials.file", `{"path":"`+path+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.(Source).Credential(testCtx(t))
	if err != nil || c.Secret != "json-secret" {
		t.Fatalf("%q, %v", c.Secret, err)
	}
	if _, err := loadModule(t, "llm.credentials.file", `{}`); err == nil {
		t.Error("a file source without a path was loaded")
	}
}
