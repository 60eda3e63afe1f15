package failover

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// Configs the start-up checks must read right: a handler in a named route
// a site invokes, one nested deep in handle_path and route blocks, a site
// on a Unix socket (no browser reaches it, so no rebinding warning), many
// sites.
func TestStartCheckConfigShapes(t *testing.T) {
	t.Setenv("LLMF_START_KEY", "sk-start")
	provider := failoverSite("\t\tprovider a {\n\t\t\tupstream http://127.0.0.1:1\n\t\t\tcredential env LLMF_START_KEY\n\t\t}\n")

	invoked := fmt.Sprintf("&(llm) {\n%s\n}\nhttp://:%d {\n\tbind 127.0.0.1\n\tinvoke llm\n}", provider, freePort(t))
	if warned := withMsg(loadLogged(t, freeAddr(t), invoked), hostlessWarning); len(warned) != 1 {
		t.Errorf("a hostless site invoking a named route with the handler: %d warnings; want 1", len(warned))
	}

	// a named route that invokes itself: the walk ends
	loop := fmt.Sprintf("&(loop) {\n\troute /again/* {\n\t\tinvoke loop\n\t}\n%s\n}\nhttp://:%d {\n\tbind 127.0.0.1\n\tinvoke loop\n}", provider, freePort(t))
	if warned := withMsg(loadLogged(t, freeAddr(t), loop), hostlessWarning); len(warned) != 1 {
		t.Errorf("a named route invoking itself: %d warnings; want 1", len(warned))
	}

	deep := provider
	for i := range 20 {
		if i%2 == 0 {
			deep = fmt.Sprintf("\thandle_path /p%d/* {\n%s\n\t}", i, deep)
		} else {
			deep = fmt.Sprintf("\troute /r%d/* {\n%s\n\t}", i, deep)
		}
	}
	nested := fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1\n%s\n}", freePort(t), deep)
	if warned := withMsg(loadLogged(t, freeAddr(t), nested), hostlessWarning); len(warned) != 1 {
		t.Errorf("the handler 20 blocks deep in a hostless site: %d warnings; want 1", len(warned))
	}

	socket := filepath.Join(t.TempDir(), "llm.sock")
	unix := fmt.Sprintf("http:// {\n\tbind unix/%s\n%s\n}", socket, provider)
	if warned := loadLogged(t, freeAddr(t), unix); len(withMsg(warned, hostlessWarning)) != 0 {
		t.Errorf("a site on a Unix socket only: %v; want no rebinding warning (no browser reaches it)", warned)
	}

	var sites []string
	for range 40 {
		sites = append(sites, fmt.Sprintf("http://127.0.0.1:%d {\n\tbind 127.0.0.1\n%s\n}", freePort(t), provider))
	}
	sites = append(sites, fmt.Sprintf("http://:%d {\n\tbind 127.0.0.1 [::1]\n%s\n}", freePort(t), provider))
	start := time.Now()
	warned := withMsg(loadLogged(t, freeAddr(t), sites...), hostlessWarning)
	t.Logf("41 sites loaded and checked in %v", time.Since(start).Round(time.Millisecond))
	if len(warned) != 1 {
		t.Errorf("41 sites, one of them hostless: %d warnings; want 1", len(warned))
	}
}
