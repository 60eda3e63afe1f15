package failover

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// adminAPI serves the providers' status and control on Caddy's admin
// endpoint:
//
//	GET  /llm/providers                  status of every provider, in priority order
//	GET  /llm/clients                    every client: requests, tokens by kind, last seen
//	GET  /llm/requests?limit=N           the request log, newest first (default 100)
//	GET  /llm/ui                         the dashboard, with reset and cooldown controls
//	POST /llm/providers/NAME/reset       close the breaker now
//	POST /llm/providers/NAME/cooldown    cool the provider down by hand (drain);
//	                                     the duration is ?duration=10m or a body {"duration":"10m"}
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.llm_failover",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/llm/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/llm/"), "/")
	if path == "providers" {
		if r.Method != http.MethodGet {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use GET", r.Method)}
		}
		now := timeNow()
		resp := StatusResponse{Providers: []ProviderStatus{}}
		for _, p := range liveProviders() {
			resp.Providers = append(resp.Providers, p.status(now))
		}
		return writeJSON(w, http.StatusOK, resp)
	}
	if path == "clients" {
		return serveClients(w, r)
	}
	if path == "requests" {
		return serveRequestLog(w, r)
	}
	if path == "ui" {
		return serveDashboard(w, r, dashboardAdmin)
	}
	rest, ok := strings.CutPrefix(path, "providers/")
	name, action, ok2 := strings.Cut(rest, "/")
	if !ok || !ok2 || name == "" {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown llm endpoint %q: use /llm/providers, /llm/clients, /llm/requests, /llm/ui, /llm/providers/NAME/reset or /llm/providers/NAME/cooldown", r.URL.Path)}
	}
	if r.Method != http.MethodPost {
		return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("method %s not allowed; use POST", r.Method)}
	}
	var p *Provider
	for _, q := range liveProviders() {
		if q.Name == name {
			p = q
		}
	}
	if p == nil {
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no provider named %q in the running config", name)}
	}
	switch action {
	case "reset":
		p.reset()
	case "cooldown":
		d, err := requestedDuration(r)
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: err}
		}
		p.coolFor(timeNow(), d)
	default:
		return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown action %q for provider %s: use reset or cooldown", action, name)}
	}
	return writeJSON(w, http.StatusOK, p.status(timeNow()))
}

// requestedDuration reads ?duration= or a JSON body {"duration": "10m"}.
func requestedDuration(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("duration")
	if v == "" && r.Body != nil {
		var body struct {
			Duration string `json:"duration"`
		}
		raw, _ := io.ReadAll(io.LimitReader(r.Body, 4096))
		if len(strings.TrimSpace(string(raw))) > 0 {
			if err := json.Unmarshal(raw, &body); err != nil {
				return 0, fmt.Errorf(`cooldown: body must be {"duration":"10m"}: %v`, err)
			}
		}
		v = body.Duration
	}
	if v == "" {
		return 0, fmt.Errorf(`cooldown: a duration is required: ?duration=10m or {"duration":"10m"}`)
	}
	d, err := caddy.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("cooldown: %q is not a positive duration such as 90s, 10m or 2h", v)
	}
	return d, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(v)
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
