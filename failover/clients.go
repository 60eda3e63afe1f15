package failover

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"

	"github.com/caddy-llm-failover/caddy-llm-failover/credsource"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/budget"
	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

// Client is one user of a shared gateway: a name, a key, and the providers
// it may use. Its name labels metrics and logs and fills {llm.client}.
type Client struct {
	// Name identifies the client in logs, metrics, GET /llm/clients and
	// the {llm.client} placeholder.
	Name string `json:"name"`

	// KeyRaw is the credential source (llm.credentials.*: env, file,
	// command, keychain) that holds the client's key. Only where the key
	// is (a variable name, a file path) is in the config, never the key.
	// The source is read again every second in the background, so a
	// rotated key is in force without a reload; a source that fails
	// admits nobody until it reads again.
	KeyRaw json.RawMessage `json:"key,omitempty" caddy:"namespace=llm.credentials inline_key=source"`

	// Providers names the providers this client may use; the others are
	// never tried for it, and their cooldowns do not concern it. Default:
	// all.
	Providers []string `json:"providers,omitempty"`

	// Limits cap the client's tokens, requests or spend over rolling
	// windows; any number. A request over one is answered with 429
	// rate_limit_error before any provider is asked.
	Limits []Limit `json:"limits,omitempty"`

	source  credsource.Source
	digest  atomic.Pointer[[sha256.Size]byte] // of the current key; nil while none could be read
	keyErr  atomic.Bool                       // the last read failed
	allowed []bool                            // per provider index; nil: all
	usage   *clientUsage
	budget  *budget.Budget // Limits with their counters (limits.go); nil without
}

// Bounds on reading client keys, which never happens on the request path.
const (
	// clientKeyRefresh is how often a client's key source is read again.
	clientKeyRefresh = time.Second
	// clientKeyReadTimeout bounds one read of a key source.
	clientKeyReadTimeout = 10 * time.Second
	// clientKeyStartWait bounds how long loading a config waits for the
	// first reads of the key sources; slower ones finish in the background.
	clientKeyStartWait = 2 * time.Second
)

// provisionClients loads the clients' key sources, checks their provider
// lists and starts reading their keys.
func provisionClients(ctx caddy.Context, h *Handler) error {
	seen := make(map[string]bool, len(h.Clients))
	var firstReads sync.WaitGroup
	for _, c := range h.Clients {
		if c == nil || c.Name == "" {
			return fmt.Errorf("a client needs a name")
		}
		if seen[c.Name] {
			return fmt.Errorf("client %q is declared twice", c.Name)
		}
		seen[c.Name] = true
		if c.KeyRaw == nil {
			return fmt.Errorf("client %s: a key source is required (key env VAR, key file PATH, ...)", c.Name)
		}
		src, err := loadCredentialSource(ctx, c, "KeyRaw", "client "+c.Name, "loading key source")
		if err != nil {
			return err
		}
		if pt, ok := src.(credsource.ClientPassthrough); ok && pt.PassesClientCredential() {
			return fmt.Errorf("client %s: passthrough cannot hold a client key; use env, file, command or keychain", c.Name)
		}
		c.source = src
		if err := c.restrictTo(h.Providers); err != nil {
			return err
		}
		u, _, err := clientUsages.LoadOrNew(c.Name, func() (caddy.Destructor, error) { return new(clientUsage), nil })
		if err != nil {
			return err
		}
		c.usage = u.(*clientUsage)

		logger := h.logger.With(zap.String("client", c.Name))
		firstReads.Add(1)
		go func() {
			c.readKey(ctx, logger, true)
			firstReads.Done()
			c.refreshKey(ctx, logger)
		}()
	}
	if len(h.Clients) > 0 {
		done := make(chan struct{})
		go func() { firstReads.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(clientKeyStartWait):
			h.logger.Warn("some client key sources are still being read; their clients are refused until they are")
		case <-ctx.Done():
		}
	}
	return nil
}

// restrictTo resolves the client's provider names to indices.
func (c *Client) restrictTo(providers []*Provider) error {
	if len(c.Providers) == 0 {
		return nil
	}
	if len(providers) == 0 {
		return fmt.Errorf("client %s: providers needs provider blocks (wrap mode has none)", c.Name)
	}
	if err := c.checkProviders(providers); err != nil {
		return err
	}
	c.allowed = make([]bool, len(providers))
	for _, name := range c.Providers {
		c.allowed[slices.IndexFunc(providers, func(p *Provider) bool { return p.Name == name })] = true
	}
	return nil
}

// checkProviders says which name of the client's providers line names no
// provider, and which names there are to write instead.
func (c *Client) checkProviders(providers []*Provider) error {
	for _, name := range c.Providers {
		if !slices.ContainsFunc(providers, func(p *Provider) bool { return p.Name == name }) {
			names := make([]string, len(providers))
			for i, p := range providers {
				names[i] = p.Name
			}
			return fmt.Errorf("client %s: no provider named %q; the providers are: %s", c.Name, name, strings.Join(names, ", "))
		}
	}
	return nil
}

// cleanupClients releases the clients' usage records.
func (h *Handler) cleanupClients() {
	for _, c := range h.Clients {
		if c != nil && c.usage != nil {
			_, _ = clientUsages.Delete(c.Name)
		}
	}
}

// refreshKey reads the key source again every clientKeyRefresh until the
// config is unloaded.
func (c *Client) refreshKey(ctx context.Context, logger *zap.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(clientKeyRefresh):
			c.readKey(ctx, logger, false)
		}
	}
}

// readKey reads the key source once and puts its digest in force. What a
// source reports on failure goes to the log only. The read at load is
// also the one `caddy validate` makes (a key file may well not be there
// yet): its failure is a warning that says what will happen; a failure
// once running is an error, logged at the next read, a second later.
func (c *Client) readKey(ctx context.Context, logger *zap.Logger, atLoad bool) {
	rctx, cancel := context.WithTimeout(ctx, clientKeyReadTimeout)
	cred, err := c.source.Credential(rctx)
	cancel()
	if err == nil && cred.Secret == "" {
		err = fmt.Errorf("the key source yielded an empty key")
	}
	if err != nil {
		if ctx.Err() != nil {
			return // unloading
		}
		c.digest.Store(nil)
		if atLoad {
			logger.Warn("client key not readable now; while it is not, this client's requests are refused with 401", zap.Error(err))
			return
		}
		if !c.keyErr.Swap(true) {
			logger.Error("client key unavailable; the client is refused until it can be read", zap.Error(err))
		}
		return
	}
	d := sha256.Sum256([]byte(cred.Secret))
	if old := c.digest.Load(); old == nil || *old != d {
		c.digest.Store(&d)
	}
	if c.keyErr.Swap(false) {
		logger.Info("client key readable again")
	}
}

// match returns the client whose key is key, comparing SHA-256 digests in
// constant time; nil when none matches.
func (h *Handler) match(key string) *Client {
	d := sha256.Sum256([]byte(key))
	var found *Client
	for _, c := range h.Clients {
		k := c.digest.Load()
		if k != nil && subtle.ConstantTimeCompare(k[:], d[:]) == 1 && found == nil {
			found = c
		}
	}
	return found
}

// mayUse reports whether the client may use the provider at index i of
// the handler's providers; true without a client or a limit.
func (c *Client) mayUse(i int) bool {
	return c == nil || c.allowed == nil || (i < len(c.allowed) && c.allowed[i])
}

// markDisallowed sets up a request's tried list: the providers the client
// may not use count as tried, so they are never selected for it.
func (c *Client) markDisallowed(tried []bool) {
	if c != nil && c.allowed != nil {
		for i := range tried {
			tried[i] = i >= len(c.allowed) || !c.allowed[i]
		}
	}
}

// label is the client's metric label value: its name, "" without clients.
func (c *Client) label() string {
	if c == nil {
		return ""
	}
	return c.Name
}

// countUsage adds a response's tokens to the client's usage.
func (c *Client) countUsage(u streaminspect.Usage) {
	if c == nil {
		return
	}
	c.usage.input.Add(u.InputTokens)
	c.usage.output.Add(u.OutputTokens)
	c.usage.cacheRead.Add(u.CacheReadTokens)
	c.usage.cacheCreation.Add(u.CacheCreationTokens)
}

// clientUsage is what a client used, kept across config reloads in
// clientUsages, keyed by client name.
type clientUsage struct {
	requests                                atomic.Uint64
	lastSeen                                atomic.Int64 // unix nanoseconds
	input, output, cacheRead, cacheCreation atomic.Int64
	spend                                   atomic.Int64 // micro-dollars, at the serving providers' prices
}

func (u *clientUsage) seen(now time.Time) {
	u.requests.Add(1)
	u.lastSeen.Store(now.UnixNano())
}

// Destruct implements caddy.Destructor.
func (*clientUsage) Destruct() error { return nil }

var clientUsages = caddy.NewUsagePool()

// ClientStatus is one client in GET /llm/clients. It never holds the key:
// Key is ok, or unavailable when its source cannot be read.
type ClientStatus struct {
	Name      string      `json:"name"`
	Providers []string    `json:"providers,omitempty"`
	Key       string      `json:"key"`
	Requests  uint64      `json:"requests"`
	Tokens    TokenCounts `json:"tokens"`
	LastSeen  string      `json:"last_seen,omitempty"`
	// SpendUSD is what the client's answers cost at the serving
	// providers' prices, in US dollars, since this instance started.
	SpendUSD float64 `json:"spend_usd"`
	// Limits are the client's limits: used, limit, window, when it frees
	// up.
	Limits []budget.Status `json:"limits,omitempty"`
}

// TokenCounts are tokens by kind, as providers reported them.
type TokenCounts struct {
	Input         int64 `json:"input"`
	Output        int64 `json:"output"`
	CacheRead     int64 `json:"cache_read"`
	CacheCreation int64 `json:"cache_creation"`
}

// ClientsResponse is the body of GET /llm/clients.
type ClientsResponse struct {
	Clients []ClientStatus `json:"clients"`
	// Limits are the handlers' own limits, on all traffic together.
	Limits []budget.Status `json:"limits,omitempty"`
}

func (c *Client) status() ClientStatus {
	s := ClientStatus{
		Name:      c.Name,
		Providers: c.Providers,
		Key:       "ok",
		Requests:  c.usage.requests.Load(),
		Tokens: TokenCounts{
			Input: c.usage.input.Load(), Output: c.usage.output.Load(),
			CacheRead: c.usage.cacheRead.Load(), CacheCreation: c.usage.cacheCreation.Load(),
		},
	}
	if c.digest.Load() == nil {
		s.Key = "unavailable"
	}
	s.SpendUSD = dollars(c.usage.spend.Load())
	if c.budget != nil {
		s.Limits = c.budget.Statuses(timeNow())
	}
	if ns := c.usage.lastSeen.Load(); ns != 0 {
		s.LastSeen = time.Unix(0, ns).UTC().Format(time.RFC3339)
	}
	return s
}

// liveClients returns each client of the running config once, by name;
// the newest config's declaration wins.
func liveClients() []*Client {
	return liveByName(func(h *Handler) []*Client { return h.Clients }, func(c *Client) string { return c.Name })
}

// serveClients answers GET /llm/clients.
func serveClients(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use GET", r.Method)}
	}
	resp := ClientsResponse{Clients: []ClientStatus{}}
	for _, c := range liveClients() {
		resp.Clients = append(resp.Clients, c.status())
	}
	for _, b := range liveHandlerBudgets() {
		resp.Limits = append(resp.Limits, b.Statuses(timeNow())...)
	}
	return writeJSON(w, http.StatusOK, resp)
}
