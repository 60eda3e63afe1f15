package failover

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

// Requests and answers from parties the proxy does not trust: the bytes
// a client sends, the headers a browser adds, the paths it asks for.

func init() {
	caddy.RegisterModule(panicHandler{})
	httpcaddyfile.RegisterHandlerDirective("test_panic", func(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
		return panicHandler{}, nil
	})
}

// panicHandler is a handler that panics: a stand-in for a bug in code the
// proxy runs before it commits an answer.
type panicHandler struct{}

func (panicHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{ID: "http.handlers.test_panic", New: func() caddy.Module { return panicHandler{} }}
}

func (panicHandler) ServeHTTP(http.ResponseWriter, *http.Request, caddyhttp.Handler) error {
	panic("test_panic: internal state at 0xdeadbeef")
}

func (panicHandler) UnmarshalCaddyfile(*caddyfile.Dispenser) error { return nil }

// A model name that is not valid UTF-8 is still served: the metric label
// it becomes is made valid, so nothing panics after the provider answered.
func TestInvalidUTF8ModelIsServed(t *testing.T) {
	up := newUpstream(t, "main", replyMessage("fine"))
	p := startProxy(t, failoverSite(up.providerBlock()))
	for i, model := range []string{"bad\xff\xfemodel", strings.Repeat("\xc3", 100), "ok-\xe2\x82"} {
		body := fmt.Sprintf(`{"model":"%s","max_tokens":8,"messages":[{"role":"user","content":"hi"}]}`, model)
		res := post(t, p.URL+"/v1/messages", body)
		got := readAll(t, res)
		if res.StatusCode != http.StatusOK || !strings.Contains(got, "fine") {
			t.Fatalf("model %d: %d %s, want the provider's answer", i, res.StatusCode, got)
		}
	}
	if up.Hits() != 3 {
		t.Fatalf("upstream hits %d, want 3", up.Hits())
	}
	metrics, err := http.Get("http://" + p.AdminAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text := readAll(t, metrics)
	if !utf8.ValidString(text) || !strings.Contains(text, `model="bad`) {
		t.Fatalf("metrics are not valid UTF-8 or lack the model's series")
	}
}

// The {llm.model} placeholder is valid UTF-8 whatever the client sent.
func TestModelPlaceholderIsValidUTF8(t *testing.T) {
	req := &llmRequest{model: "bad\xff\xfemodel", finished: true}
	v, ok := req.placeholder("llm.model")
	if !ok || !utf8.ValidString(v.(string)) || !strings.HasPrefix(v.(string), "bad") {
		t.Fatalf("{llm.model} = %q", v)
	}
}

// A panic before the answer is committed becomes a 500 api_error that
// names nothing internal; the server keeps serving.
func TestPanicBeforeCommitIsAnAPIError(t *testing.T) {
	up := newUpstream(t, "u", replyMessage("unused"))
	_ = up
	p := startProxy(t, "\troute {\n\t\tllm_failover\n\t\ttest_panic\n\t}")
	for i := 0; i < 3; i++ {
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		got := readAll(t, res)
		if res.StatusCode != http.StatusInternalServerError || !strings.Contains(got, `"api_error"`) {
			t.Fatalf("got %d %s, want a 500 api_error", res.StatusCode, got)
		}
		for _, internal := range []string{"test_panic", "0xdeadbeef", ".go:", "goroutine"} {
			if strings.Contains(got, internal) {
				t.Fatalf("answer names %q: %s", internal, got)
			}
		}
	}
}
