package failover

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
	"github.com/caddy-llm-failover/caddy-llm-failover/internal/modellist"
)

// Model discovery for the chain: GET /v1/models answers with the models of
// every provider the client may use, merged (internal/modellist), under
// the names the client sends; GET /v1/models/{id} with the entry of the
// provider that offers that name first.
const (
	// modelsWait bounds the wait for the providers' lists: one that has
	// not answered by then is left out of this answer. Claude Code's own
	// discovery gives up after 3s, so the list must come sooner.
	modelsWait = 2500 * time.Millisecond
	// modelsFresh is how long a provider's list is reused; a failed or
	// late list is asked for again sooner.
	modelsFresh  = time.Minute
	modelsRetry  = 15 * time.Second
	modelsBody   = 4 << 20 // a provider's list answer, at most
	modelsCached = 256     // lists kept (per provider, and per client credential for passthrough)
)

// modelsCache keeps providers' lists per handler.
type modelsCache struct {
	mu      sync.Mutex
	entries map[string]modelsEntry
}

type modelsEntry struct {
	models []modellist.Model
	ok     bool
	until  time.Time
}

func (c *modelsCache) get(key string, now time.Time) (modelsEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || now.After(e.until) {
		return modelsEntry{}, false
	}
	return e, true
}

func (c *modelsCache) put(key string, e modelsEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil {
		c.entries = make(map[string]modelsEntry)
	}
	if _, ok := c.entries[key]; !ok && len(c.entries) >= modelsCached {
		for k, old := range c.entries {
			if now.After(old.until) {
				delete(c.entries, k)
			}
		}
		for k := range c.entries {
			if len(c.entries) < modelsCached {
				break
			}
			delete(c.entries, k)
		}
	}
	c.entries[key] = e
}

// serveModels answers GET /v1/models and GET /v1/models/{id} from the
// providers' lists. It returns false when the request is something else,
// or a model id no list offers: the request loop then passes it on as
// before.
func (h *Handler) serveModels(w http.ResponseWriter, req *llmRequest) bool {
	r := req.r
	if r.Method != http.MethodGet {
		return false
	}
	path := strings.TrimSuffix(r.URL.Path, "/")
	id, one := strings.CutPrefix(path, "/v1/models/")
	if path != "/v1/models" && (!one || id == "" || strings.Contains(id, "/")) {
		return false
	}
	var q modellist.Query
	if !one {
		var err error
		if q, err = modellist.ParseQuery(r.URL.Query()); err != nil {
			writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
			return true
		}
	}
	all, answered := h.chainModels(req)
	if one {
		m, ok := modellist.Find(all, id)
		if !ok {
			return false
		}
		_ = writeJSON(w, http.StatusOK, modellist.EntryOf(m))
		return true
	}
	if !answered {
		// no provider has a list to give: pass the request on as before
		return false
	}
	_ = writeJSON(w, http.StatusOK, modellist.Paginate(all, q))
	return true
}

// chainModels is the merged list of the providers the client may use, in
// the order they are tried; answered says whether any provider gave one.
func (h *Handler) chainModels(req *llmRequest) ([]modellist.Model, bool) {
	var order []int
	for _, tier := range h.tiers {
		for _, i := range tier.indices {
			if !req.tried[i] {
				order = append(order, i)
			}
		}
	}
	lists := make([][]modellist.Model, len(order))
	oks := make([]bool, len(order))
	ctx, cancel := context.WithTimeout(req.r.Context(), modelsWait)
	defer cancel()
	var wg sync.WaitGroup
	for k, i := range order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lists[k], oks[k] = h.providerModels(ctx, req, i)
		}()
	}
	wg.Wait()
	answered := false
	for k, i := range order {
		if !oks[k] {
			continue
		}
		answered = true
		p := h.Providers[i]
		lists[k] = modellist.Offered(lists[k], literalModelNames(p.Models), func(name string) string {
			m, _ := mapModel(p.Models, name)
			return m
		})
	}
	return modellist.Merge(lists...), answered
}

// literalModelNames are the patterns of model rules that name one model.
func literalModelNames(rules []ModelRule) []string {
	var out []string
	for _, r := range rules {
		if !strings.Contains(r.Pattern, "*") {
			out = append(out, r.Pattern)
		}
	}
	return out
}

// providerModels is provider i's list, from the cache or asked for now
// with the provider's credential (the client's, for passthrough).
func (h *Handler) providerModels(ctx context.Context, req *llmRequest, i int) ([]modellist.Model, bool) {
	p := h.Providers[i]
	key := p.Name
	if p.passthrough {
		key += "\x00" + req.clientKey
	}
	now := timeNow()
	if e, ok := h.models.get(key, now); ok {
		return e.models, e.ok
	}
	models, err := h.fetchModels(ctx, req, i)
	e := modelsEntry{models: models, ok: err == nil, until: now.Add(modelsFresh)}
	if err != nil {
		e.until = now.Add(modelsRetry)
		if c := h.logger.Check(zapcore.DebugLevel, "provider model list left out"); c != nil {
			c.Write(zap.String("provider", p.Name), zap.Error(err), zap.String("request_id", requestID(req.r)))
		}
	}
	h.models.put(key, e, now)
	return e.models, e.ok
}

// fetchModels asks provider i for GET /v1/models?limit=1000 as one attempt
// of a request that feeds no breaker, written to a bounded recorder.
func (h *Handler) fetchModels(ctx context.Context, req *llmRequest, i int) ([]modellist.Model, error) {
	r := req.r.Clone(ctx)
	r.Method = http.MethodGet
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = "/v1/models", "", "limit=1000"
	r.RequestURI = r.URL.RequestURI()
	r.Body, r.ContentLength = http.NoBody, 0
	r.Header.Del("Content-Length")
	sub := &llmRequest{r: r, kind: kindOther, client: req.client, clientKey: req.clientKey,
		clientCred: req.clientCred, oauthBeta: req.oauthBeta}
	sub.perProvider(len(h.Providers))
	for k := range sub.tried {
		sub.tried[k] = k != i
	}
	// part of the client's request: not a request of its own in the log
	defer releaseFailed(sub)
	rec := &listRecorder{header: make(http.Header)}
	if !h.tryProvider(rec, sub, i, breaker.Admission{OK: true}) {
		return nil, errModelsUnanswered
	}
	if rec.status != http.StatusOK || rec.overflow {
		return nil, &modelsStatusError{status: rec.status}
	}
	return modellist.Parse(rec.body)
}

type modelsError string

func (e modelsError) Error() string { return string(e) }

const errModelsUnanswered = modelsError("no answer")

type modelsStatusError struct{ status int }

func (e *modelsStatusError) Error() string {
	return "answered " + http.StatusText(e.status) + " (or a list over 4 MiB)"
}

// listRecorder is the ResponseWriter a list request is answered into,
// bounded to modelsBody.
type listRecorder struct {
	header   http.Header
	status   int
	body     []byte
	overflow bool
}

func (w *listRecorder) Header() http.Header { return w.header }

func (w *listRecorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

func (w *listRecorder) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if len(w.body)+len(b) > modelsBody {
		w.overflow = true
		return len(b), nil
	}
	w.body = append(w.body, b...)
	return len(b), nil
}

func (w *listRecorder) Flush() {}
