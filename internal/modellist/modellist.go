// Package modellist is the model list a gateway offers for a chain of
// providers, in Anthropic's list format: reading one provider's page,
// naming its models as a client sends them, merging the providers' lists
// (each id once), and paging the result with limit, after_id and
// before_id. Pure: no I/O, no clock.
package modellist

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"time"
)

// Bounds.
const (
	// MaxPerProvider is how many models one provider's list may hold; the
	// rest are dropped. Anthropic's own page limit.
	MaxPerProvider = 1000
	// DefaultLimit and MaxLimit are Anthropic's page sizes.
	DefaultLimit = 20
	MaxLimit     = 1000
	// maxIDLen bounds an id read from a provider or a query.
	maxIDLen = 256
)

// Model is one entry of a list: what Anthropic's /v1/models returns.
type Model struct {
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

// Parse reads a provider's /v1/models answer (Anthropic's list format):
// its data entries with an id, at most MaxPerProvider of them, each id
// once. Entries without a usable id are skipped.
func Parse(body []byte) ([]Model, error) {
	var page struct {
		Data []json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(body, &page); err != nil {
		return nil, fmt.Errorf("not a model list: %v", err)
	}
	if page.Data == nil {
		return nil, errors.New("not a model list: no data array")
	}
	out := make([]Model, 0, min(len(page.Data), MaxPerProvider))
	seen := make(map[string]bool, cap(out))
	for _, raw := range page.Data {
		if len(out) == MaxPerProvider {
			break
		}
		var m Model
		if json.Unmarshal(raw, &m) != nil || m.ID == "" || len(m.ID) > maxIDLen || seen[m.ID] {
			continue
		}
		if len(m.DisplayName) > maxIDLen {
			m.DisplayName = m.DisplayName[:maxIDLen]
		}
		if _, err := time.Parse(time.RFC3339, m.CreatedAt); err != nil {
			m.CreatedAt = ""
		}
		seen[m.ID] = true
		out = append(out, m)
	}
	return out, nil
}

// Offered is what a provider offers under the names a client sends. A
// name is offered when the provider's mapping (mapName: the model a
// client's name is sent as) turns it into a model the provider lists; it
// is shown with that model's display name and date. The candidate names
// are the provider's own model ids and the literal names its mapping
// rules know (a pattern with a wildcard names no model by itself).
func Offered(models []Model, literalNames []string, mapName func(string) string) []Model {
	byID := make(map[string]int, len(models))
	for i, m := range models {
		byID[m.ID] = i
	}
	out := make([]Model, 0, len(models)+len(literalNames))
	seen := make(map[string]bool, cap(out))
	offer := func(name string) {
		if seen[name] || name == "" {
			return
		}
		i, ok := byID[mapName(name)]
		if !ok {
			return
		}
		seen[name] = true
		m := models[i]
		m.ID = name
		out = append(out, m)
	}
	for _, n := range literalNames {
		offer(n)
	}
	for _, m := range models {
		offer(m.ID)
	}
	return out
}

// Merge joins the lists of the providers, in the order they are tried:
// each id once, as the first provider offering it lists it. The result
// is ordered as Anthropic orders its list, most recent first (then by
// id), so that paging is stable.
func Merge(lists ...[]Model) []Model {
	var out []Model
	seen := make(map[string]bool)
	for _, l := range lists {
		for _, m := range l {
			if !seen[m.ID] {
				seen[m.ID] = true
				out = append(out, m)
			}
		}
	}
	created := make(map[string]time.Time, len(out))
	for _, m := range out {
		t, _ := time.Parse(time.RFC3339, m.CreatedAt)
		created[m.ID] = t
	}
	sort.SliceStable(out, func(i, j int) bool {
		ti, tj := created[out[i].ID], created[out[j].ID]
		if !ti.Equal(tj) {
			return ti.After(tj)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Find returns the entry with the given id.
func Find(all []Model, id string) (Model, bool) {
	for _, m := range all {
		if m.ID == id {
			return m, true
		}
	}
	return Model{}, false
}

// Query is a list request's paging: Anthropic's limit, after_id and
// before_id.
type Query struct {
	Limit    int
	AfterID  string
	BeforeID string
}

// ParseQuery reads the paging parameters. An error says what to write.
func ParseQuery(v url.Values) (Query, error) {
	q := Query{Limit: DefaultLimit, AfterID: v.Get("after_id"), BeforeID: v.Get("before_id")}
	if s := v.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > MaxLimit {
			return q, fmt.Errorf("limit: %q is not a whole number from 1 to %d", truncate(s), MaxLimit)
		}
		q.Limit = n
	}
	if q.AfterID != "" && q.BeforeID != "" {
		return q, errors.New("after_id and before_id: give one of them, not both")
	}
	if len(q.AfterID) > maxIDLen || len(q.BeforeID) > maxIDLen {
		return q, fmt.Errorf("after_id or before_id: longer than %d bytes", maxIDLen)
	}
	return q, nil
}

func truncate(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// Page is one page of a list, as Anthropic writes it.
type Page struct {
	Data    []Entry `json:"data"`
	HasMore bool    `json:"has_more"`
	FirstID *string `json:"first_id"`
	LastID  *string `json:"last_id"`
}

// Entry is a model as a list page shows it.
type Entry struct {
	Type        string `json:"type"`
	ID          string `json:"id"`
	DisplayName string `json:"display_name"`
	CreatedAt   string `json:"created_at"`
}

// EntryOf is a model as Anthropic shows it: a missing display name is the
// id, a missing date the Unix epoch (clients parse it as a date).
func EntryOf(m Model) Entry {
	e := Entry{Type: "model", ID: m.ID, DisplayName: m.DisplayName, CreatedAt: m.CreatedAt}
	if e.DisplayName == "" {
		e.DisplayName = m.ID
	}
	if e.CreatedAt == "" {
		e.CreatedAt = "1970-01-01T00:00:00Z"
	}
	return e
}

// Paginate returns the page q asks for: the Limit entries after AfterID,
// the Limit entries just before BeforeID, or the first Limit entries.
// has_more says whether more entries lie beyond the page in the
// direction of travel. An id not in the list gives an empty page.
func Paginate(all []Model, q Query) Page {
	limit := q.Limit
	if limit < 1 || limit > MaxLimit {
		limit = DefaultLimit
	}
	start, end := 0, 0
	hasMore := false
	switch {
	case q.AfterID != "":
		i := index(all, q.AfterID)
		if i < 0 {
			break
		}
		start = i + 1
		end = min(start+limit, len(all))
		hasMore = end < len(all)
	case q.BeforeID != "":
		i := index(all, q.BeforeID)
		if i < 0 {
			break
		}
		end = i
		start = max(0, end-limit)
		hasMore = start > 0
	default:
		end = min(limit, len(all))
		hasMore = end < len(all)
	}
	p := Page{Data: make([]Entry, 0, end-start), HasMore: hasMore}
	for _, m := range all[start:end] {
		p.Data = append(p.Data, EntryOf(m))
	}
	if len(p.Data) > 0 {
		first, last := p.Data[0].ID, p.Data[len(p.Data)-1].ID
		p.FirstID, p.LastID = &first, &last
	}
	return p
}

func index(all []Model, id string) int {
	for i, m := range all {
		if m.ID == id {
			return i
		}
	}
	return -1
}
