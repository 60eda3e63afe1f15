package failover

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// The llm_dashboard directive serves the page read-only and its JSON on a
// site route, under the prefix the browser used, and refuses anything but
// GET.
func TestDashboardDirectiveReadOnly(t *testing.T) {
	a := newUpstream(t, "db_a", replyMessage("ok"))
	p := startProxy(t, failoverSite(a.providerBlock())+"\n\thandle_path /ops/* {\n\t\tllm_dashboard\n\t}")
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))

	res, err := http.Get(p.URL + "/ops/")
	if err != nil {
		t.Fatal(err)
	}
	page := readAll(t, res)
	if res.StatusCode != 200 || !strings.Contains(page, `data-api="/ops/"`) || !strings.Contains(page, `data-controls="0"`) {
		t.Fatalf("GET /ops/: %d, page without its read-only settings:\n%.400s", res.StatusCode, page)
	}
	if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	for _, outside := range []string{"http://", "https://", "//cdn", "@import"} {
		if strings.Contains(page, outside) {
			t.Errorf("the page refers to something outside it: %q", outside)
		}
	}
	for path, want := range map[string]string{"providers": `"name":"db_a"`, "requests": `"provider":"db_a"`, "clients": `"clients":[]`} {
		res, err := http.Get(p.URL + "/ops/" + path)
		if err != nil {
			t.Fatal(err)
		}
		if body := readAll(t, res); res.StatusCode != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /ops/%s: %d %s, want %s", path, res.StatusCode, body, want)
		}
	}
	res = post(t, p.URL+"/ops/providers/db_a/reset", "")
	readAll(t, res)
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST through llm_dashboard: %d, want 405", res.StatusCode)
	}

	code, adminPage := adminGet(t, p, "/llm/ui")
	if code != 200 || !strings.Contains(adminPage, `data-api="/llm/"`) || !strings.Contains(adminPage, `data-controls="1"`) {
		t.Fatalf("GET /llm/ui: %d\n%.400s", code, adminPage)
	}
}

// chromium finds Debian's chromium, or skips the test.
func chromium(t *testing.T) string {
	t.Helper()
	// Debian's /usr/bin/chromium is a shell script; the binary behind it
	// keeps the pipe chromedp talks through
	if _, err := os.Stat("/usr/lib/chromium/chromium"); err == nil {
		return "/usr/lib/chromium/chromium"
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if path, err := exec.LookPath(name); err == nil {
			return path
		}
	}
	t.Skip("no chromium on PATH: install it (apt-get install chromium) to run the dashboard's browser test")
	return ""
}

// browser starts a headless chromium with its own profile, no network
// beyond loopback requests the page makes.
func browser(t *testing.T) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromium(t)),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting chromium: %v", err)
	}
	return ctx
}

// within gives a step of the browser test its own time limit.
func within(ctx context.Context, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(ctx, d)
	time.AfterFunc(d, cancel)
	return ctx
}

// The admin dashboard in a real browser: what a person sees (a cooling
// provider with its class and a countdown, an 87% window with its reset,
// a request with its model), and a reset that works, from the keyboard.
// DASHBOARD_SCREENSHOT=1 rewrites docs/dashboard.png.
func TestDashboardInBrowser(t *testing.T) {
	ctx := browser(t)
	cool := newUpstream(t, "anthropic", replyError(429, "rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit", "retry-after", "900"))
	sub := newUsageSub(t, "claude_max", 0.87, time.Now().Add(72*time.Minute))
	spare := newUpstream(t, "zai", replyMessage("spare"))
	p := startProxy(t, failoverSite(cool.providerBlock(), sub.providerBlock(), spare.providerBlock("tier 1")))
	readAll(t, post(t, p.URL+"/v1/messages", simpleRequest))
	readAll(t, post(t, p.URL+"/v1/messages", strings.Replace(simpleRequest, "claude-sonnet-4-5", "claude-opus-4-1", 1)))

	// Caddy's admin endpoint refuses a browser request that names no
	// origin (its cross-site protection): the page is opened as from a
	// link on the admin origin, which sends it as Referer
	ui := "http://" + p.AdminAddr + "/llm/ui"
	err := chromedp.Do(within(ctx, 20*time.Second),
		chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, page.Navigate, page.NavigateParams{URL: ui, Referrer: ui})
			return err
		}),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-provider="anthropic"] .countdown`)),
	)
	if err != nil {
		t.Fatal(err)
	}
	text, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`body`)))
	if err != nil {
		t.Fatal(err)
	}
	row, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-provider="anthropic"]`)))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"cooling", "rate_limit", "m ", "left"} {
		if !strings.Contains(row, want) {
			t.Errorf("the cooling provider's row lacks %q: %q", want, row)
		}
	}
	reset := sub.reset.Local().Format("15:04")
	for _, want := range []string{"5h 87% · resets " + reset, "claude-opus-4-1", "anthropic rate_limit 429 → claude_max success 200", "Tier 1", "zai"} {
		if !strings.Contains(text, want) {
			t.Errorf("the page lacks %q:\n%s", want, text)
		}
	}
	if os.Getenv("DASHBOARD_SCREENSHOT") != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("..", "docs", "dashboard.png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}

	// reset from the keyboard: focus Reset, Enter, then confirm with Enter
	err = chromedp.Do(within(ctx, 10*time.Second),
		chromedp.Focus(chromedp.CSS(`button[data-reset="anthropic"]`)),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`#confirm-yes`)),
		chromedp.KeyEvent("\r"),
	)
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(within(ctx, 10*time.Second), chromedp.WaitNotPresent(chromedp.CSS(`tr[data-provider="anthropic"] .countdown`))); err != nil {
		status, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`body`)))
		t.Fatalf("the countdown stayed after reset: %v\n%s", err, status)
	}
	if row, err = chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`tr[data-provider="anthropic"]`))); err != nil || !strings.Contains(row, "ready") {
		t.Errorf("after reset the row reads %q (%v), want ready", row, err)
	}
	if s := providerStatuses(t, p)["anthropic"]; s["state"] != "closed" {
		t.Errorf("after the page's reset, anthropic is %v", s["state"])
	}
}
