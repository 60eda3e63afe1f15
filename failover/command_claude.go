package failover

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
)

// claudeCommand is `caddy llm claude`: points Claude Code at the proxy by
// setting env.ANTHROPIC_BASE_URL in its settings file.
func claudeCommand() *cobra.Command {
	c := &cobra.Command{
		Use:   "claude [--settings PATH] [--url URL] [--undo]",
		Short: "Points Claude Code at the proxy (env.ANTHROPIC_BASE_URL in its settings)",
		Long: `
Sets env.ANTHROPIC_BASE_URL in Claude Code's settings file, keeping every
other key, so every Claude Code session goes through the proxy. The file is
backed up first (PATH.llm-failover.bak; an existing backup, the original,
is kept) and replaced atomically; a symlink is written through. --undo
puts the backup back.

The URL is --url, else the first site of the running Caddy that serves
llm_failover (read from its admin API, found like 'caddy llm' finds it),
which must be on this machine (localhost or a loopback address).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fl := caddycmd.Flags{FlagSet: cmd.Flags()}
			addr := fl.String("address") // the parent's persistent flags are not inherited: read ours
			exitOnError(runClaudeCommand(os.Stdout, claudeOptions{
				settings: fl.String("settings"), url: fl.String("url"), undo: fl.Bool("undo"),
				address: addr, config: fl.String("config"), adapter: fl.String("adapter"),
			}))
			return nil
		},
	}
	c.Flags().String("settings", "", "Claude Code's settings file (default ~/.claude/settings.json)")
	c.Flags().String("url", "", "The proxy's URL (default: the first llm_failover site of the running Caddy)")
	c.Flags().Bool("undo", false, "Restore the settings file from the backup")
	c.Flags().String("address", "", "The address of the running Caddy's admin API")
	c.Flags().StringP("config", "c", "", "Configuration file, to find the admin address")
	c.Flags().StringP("adapter", "a", "", "Name of the config adapter to apply (when --config is used)")
	return c
}

type claudeOptions struct {
	settings, url            string
	undo                     bool
	address, config, adapter string
}

// backupSuffix names the backup next to the settings file.
const backupSuffix = ".llm-failover.bak"

// maxSettingsFile bounds the settings file read.
const maxSettingsFile = 8 << 20

func runClaudeCommand(out io.Writer, o claudeOptions) (int, error) {
	path := o.settings
	if path == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return 1, fmt.Errorf("finding Claude Code's settings: %v (use --settings)", err)
		}
		path = filepath.Join(home, ".claude", "settings.json")
	}
	if o.undo {
		return undoClaudeSettings(out, path)
	}
	url := o.url
	if url == "" {
		addr, err := caddycmd.DetermineAdminAPIAddress(o.address, nil, o.config, o.adapter)
		if err != nil {
			return 1, fmt.Errorf("finding the admin API address: %v", err)
		}
		if url, err = proxyURLFromAdmin(addr); err != nil {
			return 1, err
		}
		// whatever answers on the admin address could name any site, and
		// Claude Code would send its credential there
		if !loopbackURL(url) {
			return 1, fmt.Errorf("the llm_failover site the admin endpoint at %s names, %s, is not on this machine; "+
				"if that is the proxy you mean, give it with --url", addr, url)
		}
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return 2, fmt.Errorf("--url %q: want http://HOST:PORT or https://HOST", url)
	}
	old, changed, err := setClaudeBaseURL(path, url)
	if err != nil {
		return 1, err
	}
	if !changed {
		fmt.Fprintf(out, "%s: env.ANTHROPIC_BASE_URL is already %s; nothing changed\n", path, url)
		fmt.Fprint(out, claudeLoginNote)
		return 0, nil
	}
	if old == "" {
		old = "(unset)"
	}
	fmt.Fprintf(out, "%s: env.ANTHROPIC_BASE_URL: %s -> %s\nbackup: %s (caddy llm claude --undo restores it)\n",
		path, old, url, throughLinks(path)+backupSuffix)
	fmt.Fprint(out, claudeLoginNote)
	return 0, nil
}

// claudeLoginNote: the base URL alone does not get Claude Code past its
// start; with neither a login nor a key it says "Not logged in".
const claudeLoginNote = `Claude Code still needs its own credential: log in (claude, then /login) to use
a Claude subscription, or set ANTHROPIC_API_KEY: any value when the proxy holds
the providers' keys, your client key when the proxy has client blocks (then also
CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1, or Claude Code sends that key to
api.anthropic.com as well).
`

// loopbackURL reports whether a URL's host is this machine: localhost or
// a loopback address.
func loopbackURL(s string) bool {
	u, err := neturl.Parse(s)
	if err != nil {
		return false
	}
	host := u.Hostname()
	return strings.EqualFold(host, "localhost") || isLoopback(host)
}

// throughLinks is where writing path lands: the file a symlink (a dotfile
// manager's) points to, so that the link stays a link; path itself when
// it is no link or does not exist yet.
func throughLinks(path string) string {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		return real
	}
	return path
}

// setClaudeBaseURL merges env.ANTHROPIC_BASE_URL into the settings file,
// keeping every other key. The previous file goes to the backup (an empty
// backup: there was no file) unless a backup is there already: the first
// one is the original, which --undo restores. It returns the previous
// value.
func setClaudeBaseURL(path, url string) (old string, changed bool, err error) {
	path = throughLinks(path)
	raw, mode, existed, err := readSettings(path)
	if err != nil {
		return "", false, err
	}
	updated, old, changed, err := mergeBaseURL(raw, url)
	if err != nil {
		return "", false, fmt.Errorf("%s %v; fix it or use --settings", path, err)
	}
	if !changed {
		return old, false, nil
	}
	backup := raw
	if !existed {
		backup = nil
	}
	if _, err := os.Lstat(path + backupSuffix); errors.Is(err, fs.ErrNotExist) {
		if err := writeAtomic(path+backupSuffix, backup, mode); err != nil {
			return "", false, fmt.Errorf("writing the backup: %v", err)
		}
	}
	if err := writeAtomic(path, updated, mode); err != nil {
		return "", false, err
	}
	return old, true, nil
}

// mergeBaseURL sets env.ANTHROPIC_BASE_URL in a settings document (empty:
// none yet), keeping every other key and value. Pure.
func mergeBaseURL(raw []byte, url string) (updated []byte, old string, changed bool, err error) {
	settings := map[string]json.RawMessage{}
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &settings); err != nil {
			return nil, "", false, fmt.Errorf("is not a JSON object: %v", err)
		}
		if settings == nil { // the document was null
			settings = map[string]json.RawMessage{}
		}
	}
	env := map[string]json.RawMessage{}
	if e, ok := settings["env"]; ok && string(e) != "null" {
		if err := json.Unmarshal(e, &env); err != nil {
			return nil, "", false, fmt.Errorf(`has an "env" that is not a JSON object: %v`, err)
		}
	}
	if v, ok := env["ANTHROPIC_BASE_URL"]; ok {
		_ = json.Unmarshal(v, &old)
	}
	if old == url {
		return raw, old, false, nil
	}
	env["ANTHROPIC_BASE_URL"], _ = json.Marshal(url)
	if settings["env"], err = marshalIndented(env, "  "); err != nil {
		return nil, "", false, err
	}
	out, err := marshalIndented(settings, "")
	if err != nil {
		return nil, "", false, err
	}
	return append(out, '\n'), old, true, nil
}

// marshalIndented writes an object with sorted keys, two-space indented as
// Claude Code writes its settings; prefix indents nested objects.
func marshalIndented(m map[string]json.RawMessage, prefix string) (json.RawMessage, error) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	b.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(k)
		var v bytes.Buffer
		if err := json.Indent(&v, m[k], prefix+"  ", "  "); err != nil {
			return nil, err
		}
		b.WriteString("\n" + prefix + "  ")
		b.Write(name)
		b.WriteString(": ")
		b.Write(v.Bytes())
	}
	if len(keys) > 0 {
		b.WriteString("\n" + prefix)
	}
	b.WriteString("}")
	return b.Bytes(), nil
}

func undoClaudeSettings(out io.Writer, path string) (int, error) {
	path = throughLinks(path)
	backup, mode, existed, err := readSettings(path + backupSuffix)
	if err != nil {
		return 1, err
	}
	if !existed {
		return 1, fmt.Errorf("no backup at %s: nothing to undo", path+backupSuffix)
	}
	if len(backup) == 0 {
		// there was no settings file before
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return 1, err
		}
		fmt.Fprintf(out, "%s: removed (there was none before)\n", path)
	} else {
		if err := writeAtomic(path, backup, mode); err != nil {
			return 1, err
		}
		fmt.Fprintf(out, "%s: restored from %s\n", path, path+backupSuffix)
	}
	if err := os.Remove(path + backupSuffix); err != nil {
		return 1, err
	}
	return 0, nil
}

// readSettings reads a file that may not exist yet.
func readSettings(path string) (raw []byte, mode fs.FileMode, existed bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, 0o600, false, nil
	}
	if err != nil {
		return nil, 0, false, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, false, err
	}
	if st.Size() > maxSettingsFile {
		return nil, 0, false, fmt.Errorf("%s is larger than %d bytes: not a settings file", path, maxSettingsFile)
	}
	raw, err = io.ReadAll(io.LimitReader(f, maxSettingsFile))
	return raw, st.Mode().Perm(), true, err
}

// writeAtomic replaces path with data: a temporary file in the same
// directory, renamed over it, so a reader never sees half a file.
func writeAtomic(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// proxyURLFromAdmin finds the URL of the first site (by server name) of
// the running Caddy whose routes run llm_failover.
func proxyURLFromAdmin(addr string) (string, error) {
	raw, err := adminCall(addr, http.MethodGet, "/config/apps/http/servers")
	if err != nil {
		return "", err
	}
	var servers map[string]struct {
		Listen      []string          `json:"listen"`
		Routes      []json.RawMessage `json:"routes"`
		TLSPolicies json.RawMessage   `json:"tls_connection_policies"`
	}
	if err := json.Unmarshal(raw, &servers); err != nil || len(servers) == 0 {
		return "", fmt.Errorf("the Caddy at %s runs no HTTP server; give the proxy's URL with --url", addr)
	}
	names := make([]string, 0, len(servers))
	for n := range servers {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		srv := servers[n]
		for _, route := range srv.Routes {
			if !bytes.Contains(route, []byte(`"handler":"llm_failover"`)) || len(srv.Listen) == 0 {
				continue
			}
			var r struct {
				Match []struct {
					Host []string `json:"host"`
				} `json:"match"`
			}
			_ = json.Unmarshal(route, &r)
			host := ""
			if len(r.Match) > 0 && len(r.Match[0].Host) > 0 && !strings.Contains(r.Match[0].Host[0], "*") {
				host = r.Match[0].Host[0]
			}
			return siteURL(srv.Listen[0], host, len(srv.TLSPolicies) > 0 && string(srv.TLSPolicies) != "null")
		}
	}
	return "", fmt.Errorf("the Caddy at %s runs no llm_failover site; give the proxy's URL with --url", addr)
}

// siteURL makes a URL of a server's listen address ("tcp/127.0.0.1:4181",
// ":4181") and the site's host matcher.
func siteURL(listen, host string, tls bool) (string, error) {
	if i := strings.Index(listen, "/"); i >= 0 {
		listen = listen[i+1:]
	}
	lh, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("reading the listen address %q: %v; give the proxy's URL with --url", listen, err)
	}
	if host == "" {
		host = lh
	}
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "127.0.0.1"
	}
	scheme := "http"
	if tls {
		scheme = "https"
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		return scheme + "://" + host, nil
	}
	return scheme + "://" + net.JoinHostPort(host, port), nil
}
