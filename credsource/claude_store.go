package credsource

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Where Claude Code keeps its login.
const (
	// claudeCredentialsFile is the file, inside Claude Code's config
	// directory, that holds the login on Linux and Windows.
	claudeCredentialsFile = ".credentials.json"

	// DefaultClaudeKeychainService is the Keychain item Claude Code writes
	// on macOS for the default config directory.
	DefaultClaudeKeychainService = "Claude Code-credentials"

	// keychainReread is how often a Keychain-backed login is read again to
	// notice Claude Code's own refreshes and logouts (a file is checked on
	// every request instead, which is cheap).
	keychainReread = time.Minute
)

// claudeStore is where a Claude Code login is stored: a file or a Keychain
// item. A store keeps no state of its own: what was read last (its stamp,
// when) is kept by the Claude source, so that reads can run without any
// lock held.
type claudeStore interface {
	// where names the store in messages.
	where() string
	// changed reports, cheaply, whether the store may hold something other
	// than what was read at readAt with the given stamp.
	changed(stamp any, readAt, now time.Time) bool
	// read returns the stored JSON document and its stamp.
	read(ctx context.Context) (doc []byte, stamp any, err error)
	// write replaces the stored JSON document.
	write(ctx context.Context, doc []byte) error
	// slow reports whether reading runs a program (the Keychain), which a
	// request must not wait for.
	slow() bool
}

// defaultClaudeCredentialsPath is where Claude Code keeps its login file:
// $CLAUDE_CONFIG_DIR/.credentials.json when that variable is set (as Claude
// Code itself does), else ~/.claude/.credentials.json.
func defaultClaudeCredentialsPath() string {
	if dir := os.Getenv("CLAUDE_CONFIG_DIR"); dir != "" {
		return filepath.Join(dir, claudeCredentialsFile)
	}
	return filepath.Join("~", ".claude", claudeCredentialsFile)
}

// claudeFileStore is a credentials file. A change is noticed by its stat
// (the stamp), which is cheap enough to take on every request.
type claudeFileStore struct {
	path string
}

func (s *claudeFileStore) where() string { return "file " + s.path }

func (s *claudeFileStore) slow() bool { return false }

func (s *claudeFileStore) changed(stamp any, _, _ time.Time) bool {
	prev, _ := stamp.(os.FileInfo)
	info, err := os.Stat(s.path)
	return err != nil || !sameFile(prev, info)
}

func (s *claudeFileStore) read(context.Context) ([]byte, any, error) {
	info, err := os.Stat(s.path)
	if err == nil && info.IsDir() {
		return nil, nil, fmt.Errorf("%s is a directory", s.path)
	}
	var data []byte
	if err == nil {
		data, err = readSmallFile(s.path)
	}
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%s does not exist (log in with `claude /login`): %w", s.path, ErrMissing)
		}
		return nil, nil, fmt.Errorf("%s cannot be read: %s", s.path, fileErrReason(err))
	}
	return data, info, nil
}

func (s *claudeFileStore) write(_ context.Context, doc []byte) error {
	return writeFileAtomic(s.path, doc, 0o600)
}

// claudeKeychainStore is the macOS Keychain item Claude Code writes. It is
// read again at most every keychainReread, and before every refresh, in the
// background.
type claudeKeychainStore struct {
	service string
	account string // optional; found from the item when writing if empty
}

func (s *claudeKeychainStore) where() string {
	if s.account != "" {
		return fmt.Sprintf("Keychain item %q (account %q)", s.service, s.account)
	}
	return fmt.Sprintf("Keychain item %q", s.service)
}

func (s *claudeKeychainStore) slow() bool { return true }

func (s *claudeKeychainStore) changed(_ any, readAt, now time.Time) bool {
	return readAt.IsZero() || now.Sub(readAt) >= keychainReread
}

func (s *claudeKeychainStore) read(ctx context.Context) ([]byte, any, error) {
	out, err := readKeychainItem(ctx, s.service, s.account)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", s.where(), err)
	}
	out = bytes.TrimSpace(out)
	// `security -w` prints a value that contains a newline or non-ASCII
	// bytes as hex. Claude Code writes compact JSON, but be lenient.
	if len(out) > 0 && out[0] != '{' && len(out)%2 == 0 {
		if dec, err := hex.DecodeString(string(out)); err == nil {
			out = bytes.TrimSpace(dec)
		}
	}
	return out, nil, nil
}

// write stores the document with `security add-generic-password -U`. The
// JSON is compacted first: a value with a newline would be hex-encoded by
// `security -w` on the next read, which Claude Code cannot read back.
//
// The document is passed on the command line (as Claude Code does), where
// other processes of the same user can see it for the moment `security`
// runs.
func (s *claudeKeychainStore) write(ctx context.Context, doc []byte) error {
	var compact bytes.Buffer
	if err := json.Compact(&compact, doc); err != nil {
		return err
	}
	security, err := securityPath()
	if err != nil {
		return err
	}
	account := s.account
	if account == "" {
		account = s.findAccount(ctx, security)
	}
	if account == "" {
		return fmt.Errorf("%s: cannot tell its account name; set it with `keychain SERVICE ACCOUNT`", s.where())
	}
	_, err = runCommand(ctx, defaultCommandTimeout, []string{
		security, "add-generic-password", "-U", "-s", s.service, "-a", account, "-w", compact.String(),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", s.where(), err)
	}
	return nil
}

// findAccount returns the account name of the existing item, so that the
// update replaces it instead of adding a second item. Without -w, `security
// find-generic-password` prints only the item's attributes, not the
// password. Claude Code names the account after the user, which is the
// fallback.
func (s *claudeKeychainStore) findAccount(ctx context.Context, security string) string {
	out, err := runCommand(ctx, defaultCommandTimeout, []string{security, "find-generic-password", "-s", s.service})
	if err == nil {
		for _, line := range strings.Split(string(out), "\n") {
			line = strings.TrimSpace(line)
			if v, ok := strings.CutPrefix(line, `"acct"<blob>=`); ok {
				if a, err := strconv.Unquote(v); err == nil && a != "" {
					return a
				}
			}
		}
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// claudeToken is the part of Claude Code's login that this source uses.
type claudeToken struct {
	access    string
	refresh   string
	expiresAt time.Time // zero: unknown or never
	scopes    []string
}

// errNotJSON marks a store whose content is not JSON (maybe caught mid-write).
var errNotJSON = errors.New("not valid JSON")

// parseClaudeCredentials extracts the token from Claude Code's credentials
// document. Errors never quote the content.
func parseClaudeCredentials(doc []byte) (claudeToken, error) {
	var top struct {
		OAuth *struct {
			AccessToken  string          `json:"accessToken"`
			RefreshToken string          `json:"refreshToken"`
			ExpiresAt    json.RawMessage `json:"expiresAt"`
			Scopes       json.RawMessage `json:"scopes"`
		} `json:"claudeAiOauth"`
	}
	if len(bytes.TrimSpace(doc)) == 0 {
		return claudeToken{}, fmt.Errorf("is empty: %w", errNotJSON)
	}
	if !json.Valid(doc) {
		return claudeToken{}, errNotJSON
	}
	if err := json.Unmarshal(doc, &top); err != nil {
		return claudeToken{}, fmt.Errorf("has an unexpected structure (%s)", jsonTypeError(err))
	}
	if top.OAuth == nil || top.OAuth.AccessToken == "" {
		return claudeToken{}, fmt.Errorf("holds no claudeAiOauth.accessToken (log in with `claude /login`): %w", ErrMissing)
	}
	tok := claudeToken{access: top.OAuth.AccessToken, refresh: top.OAuth.RefreshToken}
	if ms, ok := parseEpochMillis(top.OAuth.ExpiresAt); ok && ms > 0 {
		tok.expiresAt = time.UnixMilli(ms)
	}
	var scopes []string
	if json.Unmarshal(top.OAuth.Scopes, &scopes) == nil {
		tok.scopes = scopes
	}
	return tok, nil
}

// parseEpochMillis reads a JSON number (or a numeric string) of epoch
// milliseconds.
func parseEpochMillis(raw json.RawMessage) (int64, bool) {
	s := strings.TrimSpace(string(raw))
	if s == "" || s == "null" {
		return 0, false
	}
	if uq, err := strconv.Unquote(s); err == nil {
		s = uq
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return int64(f), true
	}
	return 0, false
}

// jsonTypeError describes a decoding error by field, without values.
func jsonTypeError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s is a JSON %s", te.Field, te.Value)
	}
	return "cannot decode"
}

// mergeClaudeCredentials writes tok into the credentials document doc and
// returns the new document. Every other key, at the top level and inside
// claudeAiOauth, is kept as it was.
func mergeClaudeCredentials(doc []byte, tok claudeToken) ([]byte, error) {
	top := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(doc)) > 0 {
		if err := json.Unmarshal(doc, &top); err != nil {
			return nil, fmt.Errorf("the stored document is not a JSON object")
		}
		if top == nil {
			top = map[string]json.RawMessage{}
		}
	}
	oauth := map[string]json.RawMessage{}
	if raw, ok := top["claudeAiOauth"]; ok {
		if err := json.Unmarshal(raw, &oauth); err != nil || oauth == nil {
			oauth = map[string]json.RawMessage{}
		}
	}
	set := func(key string, v any) error {
		b, err := marshalJSON(v)
		if err != nil {
			return err
		}
		oauth[key] = b
		return nil
	}
	if err := set("accessToken", tok.access); err != nil {
		return nil, err
	}
	if tok.refresh != "" {
		if err := set("refreshToken", tok.refresh); err != nil {
			return nil, err
		}
	}
	if tok.expiresAt.IsZero() {
		delete(oauth, "expiresAt")
	} else if err := set("expiresAt", tok.expiresAt.UnixMilli()); err != nil {
		return nil, err
	}
	if tok.scopes != nil {
		if err := set("scopes", tok.scopes); err != nil {
			return nil, err
		}
	}
	b, err := marshalJSON(oauth)
	if err != nil {
		return nil, err
	}
	top["claudeAiOauth"] = b
	return marshalJSON(top)
}

// marshalJSON is json.Marshal without HTML escaping, so kept values are
// written back byte for byte (compacted).
func marshalJSON(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
