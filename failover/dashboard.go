package failover

import (
	"bytes"
	_ "embed"
	"fmt"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(Dashboard{})
	httpcaddyfile.RegisterHandlerDirective("llm_dashboard", parseDashboardCaddyfile)
	// it answers every request it gets, as respond and file_server do
	httpcaddyfile.RegisterDirectiveOrder("llm_dashboard", httpcaddyfile.Before, "respond")
}

// dashboardPage is the whole dashboard: one HTML file with its style and
// script inline, no outside resource, so it works offline.
//
//go:embed dashboard.html
var dashboardPage []byte

// dashboardMode says where the page is served: on the admin endpoint,
// with controls, or through llm_dashboard, read-only.
type dashboardMode int

const (
	dashboardAdmin dashboardMode = iota
	dashboardReadOnly
)

// Dashboard is the llm_dashboard handler: the dashboard page, read-only
// (no reset or cooldown controls), and the JSON it reads, on any site
// route, so it can sit behind `basic_auth` or `forward_auth`:
//
//	GET .../            the page
//	GET .../providers   as GET /llm/providers on the admin endpoint
//	GET .../clients     as GET /llm/clients
//	GET .../requests    as GET /llm/requests (?limit=N)
//
// It answers every request it gets (other methods with 405), so it ends
// its route.
type Dashboard struct{}

// CaddyModule returns the Caddy module information.
func (Dashboard) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.llm_dashboard",
		New: func() caddy.Module { return new(Dashboard) },
	}
}

// UnmarshalCaddyfile sets up the handler. Syntax:
//
//	llm_dashboard
func (d *Dashboard) UnmarshalCaddyfile(disp *caddyfile.Dispenser) error {
	disp.Next() // directive name
	if disp.NextArg() {
		return disp.ArgErr()
	}
	if disp.NextBlock(0) {
		return disp.Errf("llm_dashboard takes no options")
	}
	return nil
}

func parseDashboardCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var d Dashboard
	err := d.UnmarshalCaddyfile(h.Dispenser)
	return &d, err
}

// ServeHTTP serves the page or one of its JSON documents.
func (Dashboard) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		return caddyhttp.Error(http.StatusMethodNotAllowed, fmt.Errorf("llm_dashboard is read-only: method %s not allowed; use GET", r.Method))
	}
	var err error
	switch {
	case strings.HasSuffix(r.URL.Path, "/providers"):
		err = serveProviders(w, r)
	case strings.HasSuffix(r.URL.Path, "/clients"):
		err = serveClients(w, r)
	case strings.HasSuffix(r.URL.Path, "/requests"):
		err = serveRequestLog(w, r)
	default:
		err = serveDashboard(w, r, dashboardReadOnly)
	}
	if apiErr, ok := err.(caddy.APIError); ok {
		return caddyhttp.Error(apiErr.HTTPStatus, apiErr.Err)
	}
	return err
}

// serveProviders writes what GET /llm/providers returns.
func serveProviders(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiError(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed; use GET", r.Method))
	}
	now := timeNow()
	resp := StatusResponse{Providers: []ProviderStatus{}}
	for _, p := range liveProviders() {
		resp.Providers = append(resp.Providers, p.status(now))
	}
	return writeJSON(w, http.StatusOK, resp)
}

// serveDashboard writes the page. Its JSON is read relative to where the
// browser found the page: the admin endpoint's /llm/, or the directory
// of the llm_dashboard route (as the browser saw it, before any
// handle_path stripped a prefix).
func serveDashboard(w http.ResponseWriter, r *http.Request, mode dashboardMode) error {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiError(http.StatusMethodNotAllowed, fmt.Errorf("method %s not allowed; use GET", r.Method))
	}
	base, controls := "/llm/", "0"
	if mode == dashboardAdmin {
		controls = "1"
	} else {
		path := r.URL.Path
		if orig, ok := r.Context().Value(caddyhttp.OriginalRequestCtxKey).(http.Request); ok && orig.URL != nil {
			path = orig.URL.Path
		}
		base = path
		if !strings.HasSuffix(base, "/") {
			base += "/"
		}
	}
	page := bytes.Replace(dashboardPage, []byte(`data-api="/llm/"`), []byte(`data-api="`+htmlAttr(base)+`"`), 1)
	page = bytes.Replace(page, []byte(`data-controls="0"`), []byte(`data-controls="`+controls+`"`), 1)
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	// the page needs nothing from anywhere else, and says so
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	_, err := w.Write(page)
	return err
}

// htmlAttr escapes s for a double-quoted HTML attribute.
func htmlAttr(s string) string {
	return strings.NewReplacer(`&`, "&amp;", `"`, "&quot;", `<`, "&lt;", `>`, "&gt;").Replace(s)
}

// Interface guards
var (
	_ caddyhttp.MiddlewareHandler = (*Dashboard)(nil)
	_ caddyfile.Unmarshaler       = (*Dashboard)(nil)
)
