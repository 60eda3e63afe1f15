package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/breaker"
)

var anthropicIDPattern = regexp.MustCompile(`^[a-zA-Z0-9_-]+$`)

type wireBlock struct {
	Type      string `json:"type"`
	ID        string `json:"id"`
	ToolUseID string `json:"tool_use_id"`
	Signature string `json:"signature"`
}

// blocksOf returns the raw content blocks of each message of a request.
func blocksOf(t *testing.T, body []byte) (roles []string, blocks [][]json.RawMessage) {
	t.Helper()
	var req struct {
		Messages []struct {
			Role    string          `json:"role"`
			Content json.RawMessage `json:"content"`
		} `json:"messages"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		t.Fatalf("request body: %v\n%s", err, body)
	}
	for _, m := range req.Messages {
		var bs []json.RawMessage
		_ = json.Unmarshal(m.Content, &bs)
		roles = append(roles, m.Role)
		blocks = append(blocks, bs)
	}
	return roles, blocks
}

// agentReply answers with a thinking block and a tool_use.
func agentReply(w http.ResponseWriter, sig, toolID string) {
	b, _ := json.Marshal(map[string]any{
		"id": "msg_x", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
		"content": []any{
			map[string]any{"type": "thinking", "thinking": "let me run it", "signature": sig},
			map[string]any{"type": "tool_use", "id": toolID, "name": "Bash", "input": map[string]any{"command": "ls"}},
		},
		"stop_reason": "tool_use", "stop_sequence": nil,
		"usage": map[string]any{"input_tokens": 10, "output_tokens": 5},
	})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// strictProvider enforces Anthropic's rules on history: tool ids must
// match the pattern, thinking signatures must be its own.
type strictProvider struct {
	mu       sync.Mutex
	issued   map[string]bool
	n        int
	fail529  int
	accepted [][]byte
}

func (s *strictProvider) handle(t *testing.T) func(w http.ResponseWriter, r *http.Request, body []byte) {
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.fail529 > 0 {
			s.fail529--
			replyError(529, "overloaded_error", "Overloaded")(w, r, body)
			return
		}
		roles, blocks := blocksOf(t, body)
		for mi, bs := range blocks {
			for ci, raw := range bs {
				var b wireBlock
				_ = json.Unmarshal(raw, &b)
				switch {
				case b.Type == "tool_use" && !anthropicIDPattern.MatchString(b.ID):
					replyError(400, "invalid_request_error", fmt.Sprintf("messages.%d.content.%d.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'", mi, ci))(w, r, body)
					return
				case b.Type == "tool_result" && !anthropicIDPattern.MatchString(b.ToolUseID):
					replyError(400, "invalid_request_error", fmt.Sprintf("messages.%d.content.%d.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'", mi, ci))(w, r, body)
					return
				case b.Type == "thinking" && roles[mi] == "assistant" && !s.issued[b.Signature]:
					replyError(400, "invalid_request_error", fmt.Sprintf("messages.%d.content.%d: Invalid `signature` in `thinking` block", mi, ci))(w, r, body)
					return
				}
			}
		}
		s.n++
		sig := fmt.Sprintf("strict-sig-%d", s.n)
		s.issued[sig] = true
		s.accepted = append(s.accepted, body)
		agentReply(w, sig, fmt.Sprintf("toolu_strict_%d", s.n))
	}
}

func mintingHandler() func(w http.ResponseWriter, r *http.Request, body []byte) {
	var mu sync.Mutex
	n := 0
	return func(w http.ResponseWriter, r *http.Request, body []byte) {
		mu.Lock()
		n++
		k := n
		mu.Unlock()
		agentReply(w, fmt.Sprintf("mint-sig-%d", k), fmt.Sprintf("functions.Bash:%d", k))
	}
}

// session is a client's conversation: each turn appends the previous
// assistant response and a tool_result for each of its tool_use blocks.
type session struct {
	messages []map[string]any
}

func newSession() *session {
	return &session{messages: []map[string]any{{"role": "user", "content": []json.RawMessage{json.RawMessage(`{"type":"text","text":"list the files"}`)}}}}
}

func (s *session) body() []byte {
	b, _ := json.Marshal(map[string]any{
		"model": "claude-sonnet-4-5", "max_tokens": 1024,
		"thinking": map[string]any{"type": "enabled", "budget_tokens": 512},
		"messages": s.messages,
	})
	return b
}

func (s *session) add(t *testing.T, response []byte) {
	t.Helper()
	var resp struct {
		Content []json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(response, &resp); err != nil || len(resp.Content) == 0 {
		t.Fatalf("response: %v %s", err, response)
	}
	var results []json.RawMessage
	for _, raw := range resp.Content {
		var b wireBlock
		_ = json.Unmarshal(raw, &b)
		if b.Type == "tool_use" {
			r, _ := json.Marshal(map[string]any{"type": "tool_result", "tool_use_id": b.ID, "content": "a.txt b.txt"})
			results = append(results, r)
		}
	}
	s.messages = append(s.messages,
		map[string]any{"role": "assistant", "content": resp.Content},
		map[string]any{"role": "user", "content": results})
}

// checkOnlyNeededChanges compares the blocks the client sent with the
// blocks an upstream received: every received block is byte-identical to
// a sent one, or is a sent block with only a bad tool id replaced; every
// sent block that needed no change arrived byte-identical.
func checkOnlyNeededChanges(t *testing.T, sent, received []byte, foreignSig func(string) bool) {
	t.Helper()
	_, sb := blocksOf(t, sent)
	_, rb := blocksOf(t, received)
	sentSet := map[string]bool{}
	var sentAll []json.RawMessage
	for _, bs := range sb {
		for _, b := range bs {
			sentSet[hashOf(b)] = true
			sentAll = append(sentAll, b)
		}
	}
	recvSet := map[string]bool{}
	for _, bs := range rb {
		for _, b := range bs {
			recvSet[hashOf(b)] = true
			if sentSet[hashOf(b)] {
				continue
			}
			var got wireBlock
			_ = json.Unmarshal(b, &got)
			newID := got.ID + got.ToolUseID
			matched := false
			for _, o := range sentAll {
				var orig wireBlock
				_ = json.Unmarshal(o, &orig)
				oldID := orig.ID + orig.ToolUseID
				if orig.Type == got.Type && oldID != "" && !anthropicIDPattern.MatchString(oldID) &&
					bytes.Equal(bytes.Replace(o, []byte(`"`+oldID+`"`), []byte(`"`+newID+`"`), 1), b) {
					matched = true
				}
			}
			if !matched {
				t.Fatalf("received a block the client did not send and that is not an id repair: %s", b)
			}
		}
	}
	for _, b := range sentAll {
		var orig wireBlock
		_ = json.Unmarshal(b, &orig)
		id := orig.ID + orig.ToolUseID
		needed := (id != "" && !anthropicIDPattern.MatchString(id)) || (orig.Type == "thinking" && foreignSig(orig.Signature))
		if !needed && !recvSet[hashOf(b)] {
			t.Fatalf("a block that needed no change did not arrive byte-identical: %s", b)
		}
	}
}

func runAgentSession(t *testing.T, strictRules ...string) (*fakeUpstream, *strictProvider) {
	clock := useFakeClock(t)
	sp := &strictProvider{issued: map[string]bool{}, fail529: 1}
	strict := newUpstream(t, "strict", nil)
	strict.setHandler(sp.handle(t))
	minting := newUpstream(t, "minting", mintingHandler())
	p := startProxy(t, failoverSite(strict.providerBlock(strictRules...), minting.providerBlock()))

	s := newSession()
	for turn := 1; turn <= 4; turn++ {
		if turn == 2 {
			clock.Advance(time.Hour) // strict's overloaded cooldown is over
		}
		sent := s.body()
		before := len(sp.accepted)
		res := post(t, p.URL+"/v1/messages", string(sent))
		out := readAll(t, res)
		if res.StatusCode != 200 {
			t.Fatalf("turn %d: %d %s", turn, res.StatusCode, out)
		}
		if turn > 1 {
			if res.Header.Get("X-LLM-Provider") != "strict" || len(sp.accepted) != before+1 {
				t.Fatalf("turn %d: answered by %q, want strict", turn, res.Header.Get("X-LLM-Provider"))
			}
			checkOnlyNeededChanges(t, sent, sp.accepted[len(sp.accepted)-1],
				func(sig string) bool { return strings.HasPrefix(sig, "mint-") })
		}
		s.add(t, []byte(out))
	}
	if s := snapshot(t, "strict"); s.State != breaker.Closed {
		t.Fatalf("strict: %s, want closed: a repairable refusal cools nothing", s.State)
	}
	return strict, sp
}

// A session that fails over to a provider minting its own tool ids and
// signatures continues on the strict provider: refusals are repaired and
// retried, and every block that needed no change arrives byte-identical.
func TestRepairSessionAcrossProviders(t *testing.T) {
	strict, _ := runAgentSession(t)
	// turn 1: 529; turns 2-4: a thinking refusal and a tool-id refusal
	// before each success (the client resends minting's history each turn)
	if got := strict.Hits(); got != 1+3*3 {
		t.Fatalf("strict hits = %d, want 10", got)
	}
}

// With `sanitize tool_ids thinking`, tool ids never reach strict unsanitized
// and a signature refused once is stripped before the next turn is sent.
func TestSanitizePreventsRefusals(t *testing.T) {
	strict, _ := runAgentSession(t, "sanitize tool_ids thinking")
	// turn 1: 529; turn 2: one thinking refusal (the signature was never
	// seen), then success; turns 3 and 4: first try
	if got := strict.Hits(); got != 1+2+1+1 {
		t.Fatalf("strict hits = %d, want 5", got)
	}
}

// The same original id maps the same way on every turn, and ids that
// sanitize to the same readable form stay distinct.
func TestSanitizeDeterministicAcrossTurns(t *testing.T) {
	useFakeClock(t)
	var mu sync.Mutex
	var seen []map[string]bool
	strict := newUpstream(t, "strict", func(w http.ResponseWriter, r *http.Request, body []byte) {
		_, blocks := blocksOf(t, body)
		ids := map[string]bool{}
		for _, bs := range blocks {
			for _, raw := range bs {
				var b wireBlock
				_ = json.Unmarshal(raw, &b)
				if b.Type == "tool_use" {
					ids[b.ID] = true
				}
			}
		}
		mu.Lock()
		seen = append(seen, ids)
		mu.Unlock()
		replyMessage("ok")(w, r, body)
	})
	p := startProxy(t, failoverSite(strict.providerBlock("sanitize tool_ids")))
	turn := func(ids ...string) string {
		var msgs []string
		msgs = append(msgs, `{"role":"user","content":"go"}`)
		for _, id := range ids {
			msgs = append(msgs,
				fmt.Sprintf(`{"role":"assistant","content":[{"type":"tool_use","id":%q,"name":"Bash","input":{}}]}`, id),
				fmt.Sprintf(`{"role":"user","content":[{"type":"tool_result","tool_use_id":%q,"content":"ok"}]}`, id))
		}
		return `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[` + strings.Join(msgs, ",") + `]}`
	}
	for _, body := range []string{
		turn("functions.Bash:0"),
		turn("functions.Bash:0", "functions:Bash.0"),
		turn("functions.Bash:0", "functions:Bash.0", "functions_Bash_0"),
	} {
		res := post(t, p.URL+"/v1/messages", body)
		if out := readAll(t, res); res.StatusCode != 200 {
			t.Fatalf("%d %s", res.StatusCode, out)
		}
	}
	for i, ids := range seen {
		for id := range ids {
			if !anthropicIDPattern.MatchString(id) {
				t.Fatalf("turn %d: id %q reached the upstream", i+1, id)
			}
		}
	}
	if len(seen[0]) != 1 || len(seen[1]) != 2 || len(seen[2]) != 3 {
		t.Fatalf("distinct ids per turn = %d %d %d, want 1 2 3", len(seen[0]), len(seen[1]), len(seen[2]))
	}
	for id := range seen[0] {
		if !seen[1][id] || !seen[2][id] {
			t.Fatalf("id %q of turn 1 is not mapped the same way later: %v %v", id, seen[1], seen[2])
		}
	}
	for id := range seen[1] {
		if !seen[2][id] {
			t.Fatalf("id %q of turn 2 is not mapped the same way on turn 3: %v", id, seen[2])
		}
	}
	if !seen[2]["functions_Bash_0"] {
		t.Fatalf("the valid id functions_Bash_0 was changed: %v", seen[2])
	}
}

// A provider that refuses the repaired request again: exactly two hits,
// the client gets the 400, nothing cools.
func TestRepairRetriesOnceNeverLoops(t *testing.T) {
	useFakeClock(t)
	msg := "messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
	p, a, b := startPair(t, "a", replyError(400, "invalid_request_error", msg),
		"b", replyMessage("from b"))
	body := `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"go"},` +
		`{"role":"assistant","content":[{"type":"tool_use","id":"functions.Bash:0","name":"Bash","input":{}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"functions.Bash:0","content":"ok"}]}]}`
	res := post(t, p.URL+"/v1/messages", body)
	out := readAll(t, res)
	if res.StatusCode != 400 || !strings.Contains(out, "should match pattern") {
		t.Fatalf("client got %d %s, want a's 400", res.StatusCode, out)
	}
	if a.Hits() != 2 || b.Hits() != 0 {
		t.Fatalf("hits a=%d b=%d, want 2 and 0", a.Hits(), b.Hits())
	}
	if got := string(a.bodies[0]); got != body {
		t.Fatalf("first attempt was changed: %s", got)
	}
	if strings.Contains(string(a.bodies[1]), "functions.Bash:0") {
		t.Fatalf("retry was not repaired: %s", a.bodies[1])
	}
	if s := snapshot(t, "a"); s.State != breaker.Closed {
		t.Fatalf("a: %s, want closed", s.State)
	}
	// the same refusal once more, for a request with nothing to repair:
	// passed through at once
	res = post(t, p.URL+"/v1/messages", simpleRequest)
	if readAll(t, res); res.StatusCode != 400 || a.Hits() != 3 {
		t.Fatalf("unrepairable: %d, a hits %d, want 400 and 3", res.StatusCode, a.Hits())
	}
}

// A refused field is dropped and the same provider retried.
func TestRepairDropsRefusedField(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", func(w http.ResponseWriter, r *http.Request, body []byte) {
		if bytes.Contains(body, []byte(`"context_management"`)) {
			replyError(400, "invalid_request_error", "context_management: Extra inputs are not permitted")(w, r, body)
			return
		}
		replyMessage("ok")(w, r, body)
	})
	p := startProxy(t, failoverSite(a.providerBlock()))
	res := post(t, p.URL+"/v1/messages", `{"model":"m","context_management":{"edits":[]},"max_tokens":64,"messages":[{"role":"user","content":"hi"}]}`)
	if out := readAll(t, res); res.StatusCode != 200 || a.Hits() != 2 {
		t.Fatalf("%d %s, hits %d; want 200 after 2", res.StatusCode, out, a.Hits())
	}
	if got := string(a.lastBody()); got != `{"model":"m","max_tokens":64,"messages":[{"role":"user","content":"hi"}]}` {
		t.Fatalf("retried body = %s", got)
	}
}

// drop_query, drop_field and drop_beta reach the upstream removed; the
// rest is byte-identical.
func TestDropRulesPrevent(t *testing.T) {
	useFakeClock(t)
	a := newUpstream(t, "a", replyMessage("ok"))
	p := startProxy(t, failoverSite(a.providerBlock(
		"drop_query beta",
		"drop_field context_management",
		"drop_beta context-management-*",
	)))
	body := `{"model":"claude-sonnet-4-5","context_management":{"edits":[{"type":"clear_tool_uses_20250919"}]},"max_tokens":64,"messages":[{"role":"user","content":"<b>&amp;</b>"}]}`
	res := post(t, p.URL+"/v1/messages?beta=true&x=1", body,
		"anthropic-beta", "context-management-2025-06-27,interleaved-thinking-2025-05-14")
	if out := readAll(t, res); res.StatusCode != 200 {
		t.Fatalf("%d %s", res.StatusCode, out)
	}
	if got := a.paths[0]; got != "/v1/messages?x=1" {
		t.Fatalf("path = %q", got)
	}
	if got := string(a.lastBody()); got != `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"<b>&amp;</b>"}]}` {
		t.Fatalf("body = %s", got)
	}
	if got := a.lastHeader().Get("Anthropic-Beta"); got != "interleaved-thinking-2025-05-14" {
		t.Fatalf("anthropic-beta = %q", got)
	}
	// a request with nothing to drop arrives as sent
	res = post(t, p.URL+"/v1/messages", simpleRequest, "anthropic-beta", "interleaved-thinking-2025-05-14")
	readAll(t, res)
	if string(a.lastBody()) != simpleRequest || a.paths[1] != "/v1/messages" ||
		a.lastHeader().Get("Anthropic-Beta") != "interleaved-thinking-2025-05-14" {
		t.Fatalf("unchanged request was changed: %s %s %q", a.lastBody(), a.paths[1], a.lastHeader().Get("Anthropic-Beta"))
	}
}

// After a context_window refusal from a provider with a declared window,
// only providers with a larger window are tried.
func TestContextWindowRouting(t *testing.T) {
	tooLong := replyError(400, "invalid_request_error", "prompt is too long: 215000 tokens > 200000 maximum")
	t.Run("larger window answers", func(t *testing.T) {
		useFakeClock(t)
		a := newUpstream(t, "a", tooLong)
		b := newUpstream(t, "b", replyMessage("from b"))
		c := newUpstream(t, "c", replyMessage("from c"))
		p := startProxy(t, failoverSite(a.providerBlock("context_window 200k"),
			b.providerBlock("context_window 128k"), c.providerBlock("context_window 1m")))
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		if out := readAll(t, res); res.StatusCode != 200 || !strings.Contains(out, "from c") {
			t.Fatalf("%d %s, want c's answer", res.StatusCode, out)
		}
		if a.Hits() != 1 || b.Hits() != 0 || c.Hits() != 1 {
			t.Fatalf("hits a=%d b=%d c=%d, want 1 0 1", a.Hits(), b.Hits(), c.Hits())
		}
	})
	t.Run("no larger window", func(t *testing.T) {
		useFakeClock(t)
		a := newUpstream(t, "a", tooLong)
		b := newUpstream(t, "b", replyMessage("from b"))
		p := startProxy(t, failoverSite(a.providerBlock("context_window 200k"), b.providerBlock("context_window 200000")))
		res := post(t, p.URL+"/v1/messages", simpleRequest)
		if out := readAll(t, res); res.StatusCode != 400 || !strings.Contains(out, "prompt is too long") {
			t.Fatalf("%d %s, want a's 400", res.StatusCode, out)
		}
		if b.Hits() != 0 {
			t.Fatalf("b hits = %d, want 0", b.Hits())
		}
	})
}
