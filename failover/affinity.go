package failover

import (
	"container/list"
	"hash/maphash"
	"net/http"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// Conversation affinity: with `policy spread`, the requests of one
// conversation go to the provider that served its previous request while
// that provider admits it, so the conversation keeps its prompt cache (a
// cached prompt costs a fraction of a cold one) and its thinking
// signatures stay in one account.

// sessionHeader is the conversation key Claude Code sends on every request.
const sessionHeader = "X-Claude-Code-Session-Id"

// Bounds of the conversation table.
const (
	maxConversations = 10000     // least recently used out beyond this
	conversationIdle = time.Hour // a conversation idle this long is forgotten
)

// affinityPoolKey names the conversation table in providerStates, beside
// the breakers, so a reload keeps it. No provider name starts with NUL.
const affinityPoolKey = "\x00llm_failover/conversations"

// affinityTable remembers which provider served each conversation last.
// It is bounded by count (LRU) and by idleness.
type affinityTable struct {
	seed maphash.Seed

	mu      sync.Mutex
	entries map[uint64]*list.Element // of *conversation
	lru     list.List                // front: most recently used
	max     int
	idle    time.Duration
}

type conversation struct {
	key      uint64
	provider string
	used     time.Time
}

func newAffinityTable(max int, idle time.Duration) *affinityTable {
	return &affinityTable{seed: maphash.MakeSeed(), entries: make(map[uint64]*list.Element), max: max, idle: idle}
}

// Destruct implements caddy.Destructor.
func (*affinityTable) Destruct() error { return nil }

// key identifies a conversation of one client: two clients that send the
// same session id are two conversations. The id itself is not kept.
func (t *affinityTable) key(clientKey, session string) uint64 {
	var h maphash.Hash
	h.SetSeed(t.seed)
	_, _ = h.WriteString(clientKey)
	_ = h.WriteByte(0)
	_, _ = h.WriteString(session)
	return h.Sum64()
}

// lookup returns the provider that served the conversation last, unless
// the conversation is unknown or idle.
func (t *affinityTable) lookup(key uint64, now time.Time) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	e, ok := t.entries[key]
	if !ok {
		return "", false
	}
	c := e.Value.(*conversation)
	if now.Sub(c.used) >= t.idle {
		t.removeLocked(e)
		return "", false
	}
	return c.provider, true
}

// record notes that provider served the conversation now.
func (t *affinityTable) record(key uint64, provider string, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e, ok := t.entries[key]; ok {
		c := e.Value.(*conversation)
		c.provider, c.used = provider, now
		t.lru.MoveToFront(e)
	} else {
		t.entries[key] = t.lru.PushFront(&conversation{key: key, provider: provider, used: now})
	}
	// the back holds the least recently used: drop what is over the bound
	// or idle, a few at a time, so no request pays for a full sweep
	for range 8 {
		back := t.lru.Back()
		if back == nil {
			break
		}
		if t.lru.Len() <= t.max && now.Sub(back.Value.(*conversation).used) < t.idle {
			break
		}
		t.removeLocked(back)
	}
}

func (t *affinityTable) removeLocked(e *list.Element) {
	delete(t.entries, e.Value.(*conversation).key)
	t.lru.Remove(e)
}

// len is the number of conversations kept.
func (t *affinityTable) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lru.Len()
}

// provisionAffinity sets up conversation affinity for `policy spread`,
// unless turned off.
func (h *Handler) provisionAffinity() error {
	if !h.spread || h.AffinityOff {
		return nil
	}
	v, _, err := providerStates.LoadOrNew(affinityPoolKey, func() (caddy.Destructor, error) {
		return newAffinityTable(maxConversations, conversationIdle), nil
	})
	if err != nil {
		return err
	}
	h.affinity = v.(*affinityTable)
	h.providerIndex = make(map[string]int, len(h.Providers))
	for i, p := range h.Providers {
		h.providerIndex[p.Name] = i
	}
	return nil
}

func (h *Handler) cleanupAffinity() {
	if h.affinity != nil {
		_, _ = providerStates.Delete(affinityPoolKey)
	}
}

// conversationKey returns the request's conversation key: Claude Code's
// session id, else the header named by `affinity header`; 0 for none.
func (h *Handler) conversationKey(r *http.Request, client *Client, clientKey string, cred clientCredential) uint64 {
	if h.affinity == nil {
		return 0
	}
	s := r.Header.Get(sessionHeader)
	if s == "" && h.AffinityHeader != "" {
		s = r.Header.Get(h.AffinityHeader)
	}
	if s == "" {
		return 0
	}
	// the client is part of the key: another client sending the same
	// session id must not move this conversation (and cool its prompt
	// cache). Only the seeded hash is kept, never the credential.
	who := clientKey
	switch {
	case client != nil:
		who = "client\x00" + client.Name
	case who == "" && len(cred.authorization) > 0:
		who = cred.authorization[0]
	case who == "" && len(cred.apiKey) > 0:
		who = cred.apiKey[0]
	}
	return h.affinity.key(who, s) | 1 // never 0
}

// pinnedProvider returns the index of the provider that served the
// request's conversation last, or -1.
func (h *Handler) pinnedProvider(req *llmRequest, now time.Time) int {
	if req.conversation == 0 {
		return -1
	}
	name, ok := h.affinity.lookup(req.conversation, now)
	if !ok {
		return -1
	}
	i, ok := h.providerIndex[name]
	if !ok {
		return -1
	}
	return i
}

// rememberConversation notes the provider that answered the request.
func (h *Handler) rememberConversation(req *llmRequest, p *Provider) {
	if req.conversation != 0 && h.affinity != nil {
		h.affinity.record(req.conversation, p.Name, timeNow())
	}
}
