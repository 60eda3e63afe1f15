package credsource

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(File{})
}

// File reads the credential from a file: the whole file, with surrounding
// whitespace trimmed, is the credential. This suits Docker and Kubernetes
// secret mounts. Only the path is stored in the config.
//
// The file is checked (size, modification time, identity) on every request
// and read again when it changed, so a rotated secret is used without a
// reload. Kubernetes' symlink swaps of secret volumes are followed.
//
// Caddyfile: `credential file PATH`
type File struct {
	// Path of the file holding the credential. A leading `~/` is the home
	// directory of the user Caddy runs as.
	Path string `json:"path"`

	logger *zap.Logger

	mu     *sync.Mutex // set by Provision
	info   os.FileInfo // stat of the file when it was last read
	secret string
	err    error
}

// CaddyModule returns the Caddy module information.
func (File) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  Namespace + ".file",
		New: func() caddy.Module { return new(File) },
	}
}

// Provision sets up the source.
func (f *File) Provision(ctx caddy.Context) error {
	f.setup(ctx.Logger())
	return nil
}

func (f *File) setup(logger *zap.Logger) {
	if logger == nil {
		logger = zap.NewNop()
	}
	f.logger = logger
	f.mu = new(sync.Mutex)
}

// Validate checks the configuration.
func (f *File) Validate() error {
	if f.Path == "" {
		return fmt.Errorf("file credential: a path is required")
	}
	return nil
}

// Credential returns the file's trimmed content, read again if the file
// changed since the last read.
func (f *File) Credential(context.Context) (Credential, error) {
	return secretCredential(f.load(false))
}

// Status reports whether the file holds a credential.
func (f *File) Status() Status {
	_, err := f.load(false)
	return statusOf(err, StateInvalid)
}

// Refused reads the file again whatever its stat says: a different content
// means a retry may work.
func (f *File) Refused(_ context.Context, version string) bool {
	v, err := f.load(true)
	return err == nil && Fingerprint(v) != version
}

// load returns the credential, reading the file if it changed or force is
// set. Errors name the path, never the content.
func (f *File) load(force bool) (string, error) {
	if f.mu == nil {
		return "", errNotProvisioned
	}
	f.mu.Lock()
	defer f.mu.Unlock()

	path, err := expandHome(f.Path)
	if err != nil {
		return "", fmt.Errorf("credential file %s: %w", f.Path, err)
	}
	info, err := os.Stat(path)
	if err != nil {
		f.info, f.secret, f.err = nil, "", f.fileError(path, err)
		return "", f.err
	}
	if !force && sameFile(f.info, info) {
		return f.secret, f.err
	}

	prevVersion := Fingerprint(f.secret)
	// Failures are not cached (f.info stays nil): a fixed permission or a
	// file being filled is seen on the next call.
	f.info, f.secret, f.err = nil, "", nil
	if info.IsDir() {
		f.err = fmt.Errorf("credential file %s is a directory", path)
		return "", f.err
	}
	data, err := readSmallFile(path)
	if err != nil {
		f.err = f.fileError(path, err)
		return "", f.err
	}
	v := strings.TrimSpace(string(data))
	if v == "" {
		f.err = fmt.Errorf("credential file %s is empty: %w", path, ErrMissing)
		return "", f.err
	}
	// The stat taken before the read is kept, so a change made while
	// reading is seen next time.
	f.info, f.secret = info, v
	if prevVersion != "" && prevVersion != Fingerprint(v) {
		f.logger.Info("credential file changed", zap.String("path", path), zap.String("version", Fingerprint(v)))
	}
	return v, nil
}

func (f *File) fileError(path string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("credential file %s does not exist: %w", path, ErrMissing)
	}
	return fmt.Errorf("credential file %s cannot be read: %s", path, fileErrReason(err))
}

// UnmarshalCaddyfile sets up the source from Caddyfile tokens:
//
//	credential file PATH
func (f *File) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // module name
	if !d.NextArg() {
		return d.Err("file needs the path of the file that holds the key: file /run/secrets/anthropic-key")
	}
	f.Path = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	if d.NextBlock(d.Nesting()) {
		return d.Errf("file credential takes no block")
	}
	return nil
}

// Interface guards
var (
	_ Source                = (*File)(nil)
	_ Refresher             = (*File)(nil)
	_ StatusReporter        = (*File)(nil)
	_ caddy.Provisioner     = (*File)(nil)
	_ caddy.Validator       = (*File)(nil)
	_ caddyfile.Unmarshaler = (*File)(nil)
)
