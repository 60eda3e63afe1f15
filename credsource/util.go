package credsource

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// expandHome replaces a leading "~" (alone or followed by a path separator)
// with the current user's home directory. "~user" is not supported and is
// returned unchanged.
func expandHome(p string) (string, error) {
	if p != "~" && !strings.HasPrefix(p, "~/") && !strings.HasPrefix(p, "~"+string(filepath.Separator)) {
		return p, nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("expanding %s: %w", p, err)
	}
	return filepath.Join(home, p[1:]), nil
}

// sameFile reports whether two stats of a path describe the same, unchanged
// file: same file (inode on Unix), same size, same modification time.
func sameFile(a, b os.FileInfo) bool {
	return a != nil && b != nil && os.SameFile(a, b) &&
		a.Size() == b.Size() && a.ModTime().Equal(b.ModTime())
}

// maxSecretFileSize caps how much of a credential file is read: a secret is
// small, and a misconfigured path (a log file, /dev/zero) must not be read
// into memory whole.
const maxSecretFileSize = 1 << 20

// readSmallFile reads a whole file of at most maxSecretFileSize bytes.
func readSmallFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxSecretFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxSecretFileSize)
	}
	return data, nil
}

// fileErrReason returns the reason of a file error without the path (which
// the caller names itself) and without any file content.
func fileErrReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// writeFileAtomic replaces path with data: it writes a temporary file in the
// same directory, syncs it and renames it over path, so a reader sees either
// the old or the new content, never a partial one. A symlinked path is
// resolved first so the link itself is kept.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmpName := tmp.Name()
	fail := func(err error) error {
		_ = tmp.Close()
		_ = os.Remove(tmpName)
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fail(err)
	}
	if err := tmp.Sync(); err != nil {
		return fail(err)
	}
	if err := tmp.Close(); err != nil {
		_ = os.Remove(tmpName)
		return err
	}
	if err := os.Rename(tmpName, path); err != nil {
		_ = os.Remove(tmpName)
		return err
	}
	return nil
}

// capString shortens s to at most n bytes (on a rune boundary), marking the
// cut, for messages that quote external output.
func capString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

func utf8RuneStart(b byte) bool { return b&0xC0 != 0x80 }

// errNotProvisioned is returned by a source used without Provision (a
// programming error: Caddy always provisions modules it loads).
var errNotProvisioned = errors.New("credential source used before it was provisioned")
