package modellist

import (
	"encoding/json"
	"net/url"
	"reflect"
	"strings"
	"testing"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/glob"
)

func ids(ms []Model) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.ID)
	}
	return out
}

func pageIDs(p Page) []string {
	var out []string
	for _, e := range p.Data {
		out = append(out, e.ID)
	}
	return out
}

func TestParse(t *testing.T) {
	got, err := Parse([]byte(`{"data":[
		{"type":"model","id":"claude-a","display_name":"A","created_at":"2025-01-02T00:00:00Z"},
		{"id":""},{"id":7},{"id":"claude-a"},
		{"id":"glm-4.6","created_at":"yesterday"}],"has_more":false}`))
	if err != nil {
		t.Fatal(err)
	}
	want := []Model{{ID: "claude-a", DisplayName: "A", CreatedAt: "2025-01-02T00:00:00Z"}, {ID: "glm-4.6"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v", got)
	}
	for _, bad := range []string{``, `[]`, `{"data":null}`, `{"error":{"type":"not_found_error"}}`, `{"data":{}}`} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	var b strings.Builder
	b.WriteString(`{"data":[`)
	for i := 0; i < MaxPerProvider+5; i++ {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"id":"m` + strings.Repeat("x", i%7) + string(rune('a'+i%26)) + `-` + itoa(i) + `"}`)
	}
	b.WriteString(`]}`)
	if got, _ := Parse([]byte(b.String())); len(got) != MaxPerProvider {
		t.Fatalf("%d models kept, want %d", len(got), MaxPerProvider)
	}
}

func itoa(i int) string { b, _ := json.Marshal(i); return string(b) }

// A literal rule shows the client's name for the provider's model; a
// wildcard rule names nothing by itself, but a provider model it catches
// (sent as another model) is not shown under its own name unless that
// model is listed too.
func TestOffered(t *testing.T) {
	models := []Model{{ID: "glm-4.6", DisplayName: "GLM 4.6"}, {ID: "glm-4.5-air", DisplayName: "GLM 4.5 Air"}, {ID: "claude-x"}}
	rules := [][2]string{{"claude-sonnet-4-5", "glm-4.6"}, {"claude-*haiku*", "glm-4.5-air"}, {"claude-*", "glm-4.6"}, {"gone", "not-listed"}}
	mapName := func(n string) string {
		for _, r := range rules {
			if glob.Match(r[0], n) {
				return r[1]
			}
		}
		return n
	}
	got := Offered(models, []string{"claude-sonnet-4-5", "gone"}, mapName)
	want := []Model{{ID: "claude-sonnet-4-5", DisplayName: "GLM 4.6"}, {ID: "glm-4.6", DisplayName: "GLM 4.6"},
		{ID: "glm-4.5-air", DisplayName: "GLM 4.5 Air"}, {ID: "claude-x", DisplayName: "GLM 4.6"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v\nwant %+v", got, want)
	}
}

func TestMergeOrderAndFirstWins(t *testing.T) {
	a := []Model{{ID: "claude-old", CreatedAt: "2024-01-01T00:00:00Z", DisplayName: "from a"}, {ID: "claude-new", CreatedAt: "2025-06-01T00:00:00Z"}}
	b := []Model{{ID: "claude-old", DisplayName: "from b"}, {ID: "glm"}, {ID: "ant"}}
	got := Merge(a, b)
	if want := []string{"claude-new", "claude-old", "ant", "glm"}; !reflect.DeepEqual(ids(got), want) {
		t.Fatalf("order %v, want %v", ids(got), want)
	}
	if got[1].DisplayName != "from a" {
		t.Fatalf("claude-old from %q, want the first provider", got[1].DisplayName)
	}
}

func TestPaginate(t *testing.T) {
	var all []Model
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		all = append(all, Model{ID: id})
	}
	cases := []struct {
		q       Query
		want    []string
		hasMore bool
	}{
		{Query{Limit: 2}, []string{"a", "b"}, true},
		{Query{Limit: 2, AfterID: "b"}, []string{"c", "d"}, true},
		{Query{Limit: 2, AfterID: "d"}, []string{"e"}, false},
		{Query{Limit: 2, AfterID: "e"}, nil, false},
		{Query{Limit: 2, BeforeID: "e"}, []string{"c", "d"}, true},
		{Query{Limit: 2, BeforeID: "b"}, []string{"a"}, false},
		{Query{Limit: 10}, []string{"a", "b", "c", "d", "e"}, false},
		{Query{Limit: 2, AfterID: "zz"}, nil, false},
	}
	for _, c := range cases {
		p := Paginate(all, c.q)
		if !reflect.DeepEqual(pageIDs(p), c.want) || p.HasMore != c.hasMore {
			t.Errorf("%+v: %v has_more=%v, want %v %v", c.q, pageIDs(p), p.HasMore, c.want, c.hasMore)
		}
		b, _ := json.Marshal(p)
		if len(c.want) == 0 && !strings.Contains(string(b), `"data":[],"has_more":false,"first_id":null,"last_id":null`) {
			t.Errorf("empty page: %s", b)
		}
	}
	e := Paginate([]Model{{ID: "x"}}, Query{}).Data[0]
	if e.Type != "model" || e.DisplayName != "x" || e.CreatedAt != "1970-01-01T00:00:00Z" {
		t.Fatalf("entry %+v", e)
	}
}

func TestParseQuery(t *testing.T) {
	q, err := ParseQuery(url.Values{"limit": {"1000"}, "after_id": {"a"}})
	if err != nil || q != (Query{Limit: 1000, AfterID: "a"}) {
		t.Fatalf("%+v %v", q, err)
	}
	if q, _ := ParseQuery(url.Values{}); q.Limit != DefaultLimit {
		t.Fatalf("default limit %d", q.Limit)
	}
	for _, v := range []url.Values{{"limit": {"0"}}, {"limit": {"1001"}}, {"limit": {"x"}},
		{"after_id": {"a"}, "before_id": {"b"}}, {"after_id": {strings.Repeat("a", 300)}}} {
		if _, err := ParseQuery(v); err == nil {
			t.Errorf("%v accepted", v)
		}
	}
}

// Whatever a provider answers and whatever a client asks: no panic, each
// id once, a page is a run of the merged list in its order, within limit.
func FuzzModelList(f *testing.F) {
	f.Add([]byte(`{"data":[{"id":"a","created_at":"2025-01-01T00:00:00Z"},{"id":"b"}]}`), []byte(`{"data":[{"id":"b"},{"id":"c"}]}`), "limit=1&after_id=a")
	f.Add([]byte(`{"data":[]}`), []byte(`not json`), "before_id=c&limit=2")
	f.Add([]byte(`{"data":[{"id":"x","display_name":"X"},{"id":"x"}]}`), []byte(`{"data":[{"id":"y"}]}`), "limit=1000")
	f.Fuzz(func(t *testing.T, a, b []byte, query string) {
		la, _ := Parse(a)
		lb, _ := Parse(b)
		all := Merge(Offered(la, []string{"alias"}, func(s string) string { return s }), lb)
		seen := map[string]bool{}
		for _, m := range all {
			if seen[m.ID] {
				t.Fatalf("%q twice", m.ID)
			}
			seen[m.ID] = true
		}
		v, _ := url.ParseQuery(query)
		q, err := ParseQuery(v)
		if err != nil {
			return
		}
		p := Paginate(all, q)
		if len(p.Data) > q.Limit {
			t.Fatalf("%d entries, limit %d", len(p.Data), q.Limit)
		}
		if len(p.Data) > 0 {
			i := index(all, p.Data[0].ID)
			for k, e := range p.Data {
				if all[i+k].ID != e.ID {
					t.Fatalf("page is not a run of the list")
				}
			}
		}
		if _, err := json.Marshal(p); err != nil {
			t.Fatal(err)
		}
	})
}
