package failover

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
)

// modelsUpstream answers GET /v1/models with the given list (Anthropic's
// format), counting list requests; anything else gets a message.
func modelsUpstream(t *testing.T, name string, lists *atomic.Int32, models ...[3]string) *fakeUpstream {
	t.Helper()
	var data []map[string]string
	for _, m := range models {
		data = append(data, map[string]string{"type": "model", "id": m[0], "display_name": m[1], "created_at": m[2]})
	}
	body, _ := json.Marshal(map[string]any{"data": data, "has_more": false})
	return newUpstream(t, name, func(w http.ResponseWriter, r *http.Request, b []byte) {
		if strings.HasPrefix(r.URL.Path, "/v1/models/") {
			replyError(404, "not_found_error", name+" has no model "+r.URL.Path)(w, r, b)
			return
		}
		if r.URL.Path != "/v1/models" {
			replyMessage("from "+name)(w, r, b)
			return
		}
		if lists != nil {
			lists.Add(1)
		}
		if r.URL.Query().Get("limit") != "1000" {
			http.Error(w, "want limit=1000", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
}

func listAll(t *testing.T, client *anthropic.Client, params anthropic.ModelListParams) []anthropic.ModelInfo {
	t.Helper()
	var out []anthropic.ModelInfo
	pager := client.Models.ListAutoPaging(context.Background(), params)
	for pager.Next() {
		out = append(out, pager.Current())
	}
	if err := pager.Err(); err != nil {
		t.Fatalf("listing models: %v", err)
	}
	return out
}

func modelIDs(ms []anthropic.ModelInfo) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

// The chain's list is the union of its providers' lists, each id once,
// most recent first, under the names a client sends (a `model` rule's
// literal name for the model it maps to); a slow provider and one without
// the endpoint are left out, and the lists are reused for a minute.
func TestModelsListIsTheChainsUnion(t *testing.T) {
	clock := useFakeClock(t)
	var listsA, listsZ, listsSlow atomic.Int32
	a := modelsUpstream(t, "ml_anthropic", &listsA,
		[3]string{"claude-sonnet-4-5", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z"},
		[3]string{"claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"})
	z := modelsUpstream(t, "ml_zai", &listsZ,
		[3]string{"glm-4.6", "GLM-4.6", "2025-09-30T00:00:00Z"},
		[3]string{"glm-4.5-air", "GLM-4.5-Air", "2025-07-28T00:00:00Z"})
	slow := newUpstream(t, "ml_slow", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		listsSlow.Add(1)
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
		_, _ = w.Write([]byte(`{"data":[{"id":"claude-slow"}]}`))
	})
	missing := newUpstream(t, "ml_404", replyError(404, "not_found_error", "no such endpoint"))
	p := startProxy(t, failoverSite(
		missing.providerBlock(),
		a.providerBlock(),
		z.providerBlock("model claude-haiku-4-5 glm-4.5-air", "model claude-sonnet-4-5 glm-4.6", "model claude-* glm-4.6"),
		slow.providerBlock(),
	))
	client := sdkClient(p)

	start := time.Now()
	got := listAll(t, client, anthropic.ModelListParams{Limit: anthropic.Int(2)})
	if took := time.Since(start); took > 3500*time.Millisecond {
		t.Fatalf("listing took %v: the slow provider was waited for", took)
	}
	// claude-sonnet-4-5 is ml_anthropic's (first in the chain); ml_zai
	// offers claude-haiku-4-5 (its rule's name for glm-4.5-air) and its own
	// names; the wildcard rule names nothing by itself
	want := []string{"glm-4.6", "claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "glm-4.5-air"}
	if !reflect.DeepEqual(modelIDs(got), want) {
		t.Fatalf("models %v, want %v", modelIDs(got), want)
	}
	// three pages were asked for; the providers' list requests are part
	// of the first, not requests of their own in the request log
	if n := len(requestLogEntries(t, p, "")); n != 3 {
		t.Fatalf("request log holds %d entries, want the client's 3", n)
	}
	byID := map[string]anthropic.ModelInfo{}
	for _, m := range got {
		byID[m.ID] = m
	}
	if byID["claude-sonnet-4-5"].DisplayName != "Claude Sonnet 4.5" || byID["claude-haiku-4-5"].DisplayName != "GLM-4.5-Air" ||
		byID["claude-haiku-4-5"].CreatedAt.Format(time.DateOnly) != "2025-07-28" || byID["glm-4.6"].Type != "model" {
		t.Fatalf("entries %+v", byID)
	}

	// before_id pages backwards; a bad limit is the client's error
	page, err := client.Models.List(context.Background(), anthropic.ModelListParams{BeforeID: anthropic.String("claude-haiku-4-5"), Limit: anthropic.Int(2)})
	if err != nil || !reflect.DeepEqual(modelIDs(page.Data), []string{"claude-sonnet-4-5", "claude-opus-4-1"}) || !page.HasMore ||
		page.FirstID != "claude-sonnet-4-5" || page.LastID != "claude-opus-4-1" {
		t.Fatalf("before_id page: %v %+v", err, page)
	}
	_, err = client.Models.List(context.Background(), anthropic.ModelListParams{Limit: anthropic.Int(5000)})
	wantAPIError(t, err, http.StatusBadRequest)

	// one model: the entry of the provider that offers that name first
	info, err := client.Models.Get(context.Background(), "claude-haiku-4-5", anthropic.ModelGetParams{})
	if err != nil || info.ID != "claude-haiku-4-5" || info.DisplayName != "GLM-4.5-Air" {
		t.Fatalf("get claude-haiku-4-5: %v %+v", err, info)
	}

	// every list so far came from the cache filled by the first request
	if listsA.Load() != 1 || listsZ.Load() != 1 || listsSlow.Load() != 1 {
		t.Fatalf("list requests a=%d z=%d slow=%d, want one each", listsA.Load(), listsZ.Load(), listsSlow.Load())
	}
	clock.Advance(modelsFresh + time.Second)
	listAll(t, client, anthropic.ModelListParams{})
	if listsA.Load() != 2 || listsZ.Load() != 2 || listsSlow.Load() != 2 {
		t.Fatalf("after a minute: a=%d z=%d slow=%d, want the lists asked for again", listsA.Load(), listsZ.Load(), listsSlow.Load())
	}
	// list requests feed no breaker: the slow and missing ones still serve
	for _, name := range []string{"ml_404", "ml_slow"} {
		if s := snapshot(t, name); s.ConsecutiveFailures != 0 {
			t.Fatalf("%s: %+v", name, s)
		}
	}
}

// A client limited to some providers sees only their models.
func TestModelsListOnlyTheClientsProviders(t *testing.T) {
	a := modelsUpstream(t, "mc_a", nil, [3]string{"claude-a", "A", "2025-01-01T00:00:00Z"})
	b := modelsUpstream(t, "mc_b", nil, [3]string{"claude-b", "B", "2025-01-02T00:00:00Z"})
	site, _ := clientKeySite(t, a, b, "")
	p := startGateway(t, site)
	for key, want := range map[string][]string{
		"carol-secret-key-1": {"claude-b"},
		"alice-secret-key-1": {"claude-b", "claude-a"},
	} {
		got := listAll(t, sdkClient(p, option.WithAPIKey(key)), anthropic.ModelListParams{})
		if !reflect.DeepEqual(modelIDs(got), want) {
			t.Fatalf("%s sees %v, want %v", strings.SplitN(key, "-", 2)[0], modelIDs(got), want)
		}
	}
	// carol asks for a model only a offers: not in her list, so the
	// request goes on to her provider, which does not have it
	hitsA := a.Hits()
	_, err := sdkClient(p, option.WithAPIKey("carol-secret-key-1")).Models.Get(context.Background(), "claude-a", anthropic.ModelGetParams{})
	if apiErr := wantAPIError(t, err, http.StatusNotFound); !strings.Contains(apiErr.Error(), "mc_b has no model") || a.Hits() != hitsA {
		t.Fatalf("carol's claude-a: %v; a hit %d times more", err, a.Hits()-hitsA)
	}
}

// A passthrough provider's list is asked for with the client's own
// credential and kept per client credential: each client sees what its
// own account offers.
func TestModelsListPassthroughPerClient(t *testing.T) {
	var lists atomic.Int32
	up := newUpstream(t, "mp_pass", func(w http.ResponseWriter, r *http.Request, _ []byte) {
		lists.Add(1)
		id := "claude-for-" + strings.TrimPrefix(r.Header.Get("X-Api-Key"), "sk-")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data":[{"type":"model","id":"` + id + `","display_name":"x","created_at":"2025-01-01T00:00:00Z"}]}`))
	})
	p := startProxy(t, failoverSite(up.providerBlock("credential passthrough")))
	for _, round := range []int{1, 2} {
		for _, who := range []string{"one", "two"} {
			got := listAll(t, sdkClient(p, option.WithAPIKey("sk-"+who)), anthropic.ModelListParams{})
			if want := []string{"claude-for-" + who}; !reflect.DeepEqual(modelIDs(got), want) {
				t.Fatalf("round %d, client %s sees %v, want %v", round, who, modelIDs(got), want)
			}
		}
	}
	if lists.Load() != 2 {
		t.Fatalf("%d list requests, want one per client credential", lists.Load())
	}
}
