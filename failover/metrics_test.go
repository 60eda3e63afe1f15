package failover

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestModelLabelIsBounded(t *testing.T) {
	const provider = "label-unit"
	allowMappedModels(provider, []ModelRule{{Pattern: "claude-*", Model: "glm-4.6"}})
	labels := map[string]bool{}
	for i := 0; i < 5000; i++ {
		labels[modelLabel(provider, fmt.Sprintf("model-%d", i))] = true
	}
	if len(labels) != maxModelLabels+1 || !labels[otherModelLabel] {
		t.Fatalf("%d distinct labels for 5000 models; want %d and %q", len(labels), maxModelLabels+1, otherModelLabel)
	}
	if got := modelLabel(provider, "model-3"); got != "model-3" {
		t.Errorf("an early model lost its label: %q", got)
	}
	if got := modelLabel(provider, "glm-4.6"); got != "glm-4.6" {
		t.Errorf("a mapped model after the set is full: %q, want its own label", got)
	}
	if got := modelLabel("label-unit-2", "model-4999"); got != "model-4999" {
		t.Errorf("another provider's set is separate: %q", got)
	}
	long := strings.Repeat("é", 100) // 200 bytes
	got := modelLabel("label-unit-3", long)
	if len(got) > maxModelLabelLen || !utf8.ValidString(got) || !strings.HasPrefix(long, got) || len(got) < maxModelLabelLen-1 {
		t.Errorf("cut label %q (%d bytes); want a valid prefix of at most %d bytes", got, len(got), maxModelLabelLen)
	}
}

// Through the proxy: many model names, and huge ones, add a bounded set
// of series to /metrics.
func TestTokenMetricModelLabelBounded(t *testing.T) {
	up := newUpstream(t, "lbl-bound", replyMessage("ok"))
	p := startProxy(t, failoverSite(up.providerBlock()))
	for i := 0; i < 50; i++ {
		readAll(t, post(t, p.URL+"/v1/messages", fmt.Sprintf(`{"model":"m-%d","max_tokens":8,"messages":[]}`, i)))
	}
	huge := strings.Repeat("x", 100<<10)
	readAll(t, post(t, p.URL+"/v1/messages", `{"model":"`+huge+`","max_tokens":8,"messages":[]}`))
	_, text := adminGet(t, p, "/metrics")
	series := 0
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "caddy_llm_tokens_total{") && strings.Contains(line, `provider="lbl-bound"`) &&
			strings.Contains(line, `kind="input"`) {
			series++
			m := regexp.MustCompile(`model="([^"]*)"`).FindStringSubmatch(line)
			if m == nil || len(m[1]) > maxModelLabelLen {
				t.Errorf("model label too long or missing: %.200s", line)
			}
		}
	}
	if series != maxModelLabels+1 {
		t.Fatalf("%d input-token series for 51 models; want %d (the first %d and other)", series, maxModelLabels+1, maxModelLabels)
	}
	if v, ok := metricValue(t, text, "caddy_llm_tokens_total", `provider="lbl-bound"`, `model="other"`, `kind="input"`); !ok || v != "228" {
		t.Errorf("other's input tokens = %q; want 19 requests x 12 = 228", v)
	}
	if len(text) > 200<<10 {
		t.Errorf("/metrics is %d bytes", len(text))
	}

	// a mapped model keeps its own label once the set is full
	p.reload(failoverSite(up.providerBlock("model claude-* glm-4.6")))
	readAll(t, post(t, p.URL+"/v1/messages", `{"model":"claude-x","max_tokens":8,"messages":[]}`))
	_, text = adminGet(t, p, "/metrics")
	if _, ok := metricValue(t, text, "caddy_llm_tokens_total", `provider="lbl-bound"`, `model="glm-4.6"`, `kind="input"`); !ok {
		t.Fatalf("the mapped model has no series of its own:\n%s", grepLines(text, "lbl-bound"))
	}
}

// The label, {llm.model} and the upstream read the same model: the last
// top-level "model" key, however it is spelled.
func TestModelKeyIsTheOneUpstreamsRead(t *testing.T) {
	plain := newUpstream(t, "lbl-key-plain", replyMessage("ok"))
	mapping := newUpstream(t, "lbl-key-map", replyMessage("ok"))
	for _, tc := range []struct {
		name, provider, body, wantUpstream, wantLabel string
	}{
		{"duplicate key", "plain",
			`{"model":"claude-spoof","max_tokens":8,"messages":[],"model":"claude-real"}`, "claude-real", "claude-real"},
		{"escaped key last", "plain",
			`{"model":"claude-spoof","max_tokens":8,"mod\u0065l":"claude-esc","messages":[]}`, "claude-esc", "claude-esc"},
		{"escaped key mapped", "map",
			`{"model":"claude-haiku","max_tokens":8,"messages":[],"\u006dodel":"claude-opus-4"}`, "big", "big"},
		{"duplicate key mapped", "map",
			`{"model":"claude-opus-4","max_tokens":8,"messages":[],"model":"claude-haiku-4"}`, "small", "small"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, block := plain, plain.providerBlock()
			if tc.provider == "map" {
				up, block = mapping, mapping.providerBlock("model claude-opus* big", "model claude-haiku* small")
			}
			p := startProxy(t, failoverSite(block))
			res := post(t, p.URL+"/v1/messages", tc.body)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d: %s", res.StatusCode, readAll(t, res))
			}
			readAll(t, res)
			var got struct {
				Model string `json:"model"`
			}
			if err := json.Unmarshal(up.lastBody(), &got); err != nil || got.Model != tc.wantUpstream {
				t.Fatalf("upstream decoded model %q (%v); want %q\n%s", got.Model, err, tc.wantUpstream, up.lastBody())
			}
			_, text := adminGet(t, p, "/metrics")
			if _, ok := metricValue(t, text, "caddy_llm_tokens_total", `provider="`+up.name+`"`,
				`model="`+tc.wantLabel+`"`, `kind="input"`); !ok {
				t.Fatalf("no tokens series with model=%q:\n%s", tc.wantLabel, grepLines(text, "caddy_llm_tokens_total"))
			}
			if _, ok := metricValue(t, text, "caddy_llm_tokens_total", `model="claude-spoof"`); ok {
				t.Fatalf("the spoofed first model has a tokens series")
			}
		})
	}
}
