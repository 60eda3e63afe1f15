package failover

import (
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/classify"
	"github.com/caddy-llm-failover/caddy-llm-failover/repair"
)

// Request repairs: history another provider produced (tool ids, thinking
// signatures) and fields, betas or query parameters a provider refuses.
//
// Two paths, both byte-preserving (package repair edits only what must
// change):
//   - prevention: a provider's `sanitize`, `drop_field`, `drop_beta` and
//     `drop_query` rules are applied to every attempt sent to it;
//   - reaction: a 400 that names something repairable (Class repairable,
//     or a refused beta or field) is held back from the client, the
//     buffered body is repaired and the same provider is tried once more.
//     The repaired body replaces the request's body for the attempts that
//     follow (a repaired history is valid everywhere). A second refusal is
//     passed through as client_error: never a loop.
//
// Nothing here runs for a provider without rules unless it refused.

// Sanitize values.
const (
	sanitizeToolIDs  = "tool_ids"
	sanitizeThinking = "thinking"
)

// providerRules is a provider's provisioned repair rules.
type providerRules struct {
	toolIDs  bool // sanitize tool_ids
	thinking bool // sanitize thinking
	body     bool // any rule that edits the body
	// domain is the signing domain of the provider's thinking blocks: the
	// upstream host. Two providers on the same host (a subscription and an
	// API key on api.anthropic.com) verify each other's signatures, so
	// they share it; a different host is assumed to sign on its own.
	domain string
}

func (p *Provider) provisionRules() error {
	r := providerRules{domain: p.upstreamURL.Host}
	for _, s := range p.Sanitize {
		switch s {
		case sanitizeToolIDs:
			r.toolIDs = true
		case sanitizeThinking:
			r.thinking = true
		default:
			return fmt.Errorf("sanitize: want tool_ids or thinking, got %q", s)
		}
	}
	if p.ContextWindow < 0 {
		return fmt.Errorf("context_window must not be negative")
	}
	r.body = r.toolIDs || r.thinking || len(p.DropFields) > 0
	p.rules = r
	return nil
}

// signatureBook remembers which signing domain (upstream host) signed, or
// refused, which thinking block. It is fed only while some provider has
// `sanitize thinking`, the only reader:
//   - after a committed success, the signatures of the thinking blocks in
//     the request the provider accepted are recorded for its domain (the
//     simplest source: no response parsing; a block the provider minted is
//     recorded on the next turn it accepts);
//   - after a refused signature, the blocks stripped for the retry are
//     recorded for "refused@<domain>", so Foreign strips them before the
//     next turn is sent there instead of waiting for the 400 again.
var signatureBook = repair.NewSignatureBook(0)

// prepareBody applies p's body rules to an attempt's body. It returns body
// itself when nothing changes, and whether thinking blocks were stripped
// (an error's block indexes then refer to the stripped body).
func prepareBody(p *Provider, body []byte) ([]byte, bool) {
	r := &p.rules
	stripped := false
	if r.toolIDs {
		if b, n, err := repair.SanitizeToolIDs(body); err == nil && n > 0 {
			body = b
		}
	}
	if r.thinking {
		if sel := signatureBook.Foreign(body, r.domain); !sel.Empty() {
			if b, n, err := repair.StripThinking(body, sel); err == nil && n > 0 {
				body, stripped = b, true
			}
		}
	}
	if len(p.DropFields) > 0 {
		if b, n, err := repair.DropFields(body, p.DropFields); err == nil && n > 0 {
			body = b
		}
	}
	return body, stripped
}

// applyHeaderRules drops the provider's (and a repair's) anthropic-beta
// values and query parameters from an attempt's request, whose header map
// is its own. The URL is copied before it is changed.
func applyHeaderRules(ar *http.Request, p *Provider, extraBetas []string) {
	drop := p.DropBetas
	if len(extraBetas) > 0 {
		drop = append(append([]string(nil), drop...), extraBetas...)
	}
	if len(drop) > 0 {
		dropBetas(ar.Header, drop)
	}
	if len(p.DropQuery) > 0 && ar.URL.RawQuery != "" {
		if q := repair.DropQuery(ar.URL.RawQuery, p.DropQuery); q != ar.URL.RawQuery {
			u := *ar.URL
			u.RawQuery = q
			ar.URL = &u
		}
	}
}

// pendingRepair is the repair a refusal asked for, applied before the
// provider is tried again.
type pendingRepair struct {
	provider  int
	kind      repair.RefusalKind
	body      []byte   // the repaired body; nil when the body stays
	dropBetas []string // anthropic-beta values to drop for the retry
}

// holdRefusal looks at a 400 the classifier called repairable or
// client_error, under the gate's lock: when the refusal names something a
// repair could fix and this provider has not been retried with that repair
// yet, it marks the verdict Retry, which makes the gate hold the response
// back from the client. It reads only the error message; the repair itself
// is worked out once the attempt is over (planRepair).
func (a *attempt) holdRefusal(v *classify.Verdict, errBody []byte) {
	msg := v.Message
	if msg == "" {
		msg = string(errBody)
	}
	ref := repair.ParseRefusal(msg)
	req := a.req
	if ref.Kind == repair.RefusalNone || (req.fail != nil && req.fail.repaired != nil && req.fail.repaired[a.idx]&(1<<ref.Kind) != 0) {
		// nothing to repair, or refused again after this very repair:
		// pass it through
		if v.Class == classify.Repairable {
			v.Class = classify.ClientError
		}
		return
	}
	a.refusal = &ref
	v.Class, v.Retry = classify.Repairable, true
}

// planRepair prepares the repair for a refusal held back by holdRefusal,
// as req.pending. It reports false when the repair would change nothing
// (no such block or field in the body, no such beta sent): the refusal is
// then the client's answer.
func (h *Handler) planRepair(req *llmRequest, a *attempt) bool {
	ref := *a.refusal
	pr := pendingRepair{provider: a.idx, kind: ref.Kind}
	switch ref.Kind {
	case repair.RefusalToolIDs:
		if b, n, err := repair.SanitizeToolIDs(req.body); err == nil && n > 0 {
			pr.body = b
		}
	case repair.RefusalThinking:
		sel := ref.Selector()
		if a.strippedThinking {
			// the named indexes refer to the body after this provider's
			// own stripping, not to req.body: strip every thinking block
			sel = repair.SelectAll()
		}
		if h.useBook {
			sel = sel.Union(signatureBook.Foreign(req.body, a.p.rules.domain))
		}
		if b, n, err := repair.StripThinking(req.body, sel); err == nil && n > 0 {
			pr.body = b
			if h.useBook && !sel.All() {
				learnRefused(req.body, sel, a.p.rules.domain)
			}
		}
	case repair.RefusalThinkingRequired:
		if b, n, err := repair.DropFields(req.body, []string{"thinking"}); err == nil && n > 0 {
			pr.body = b
		}
	case repair.RefusalFields:
		if b, n, err := repair.DropFields(req.body, ref.Names); err == nil && n > 0 {
			pr.body = b
		}
	case repair.RefusalBetas:
		if vals := req.r.Header.Values("Anthropic-Beta"); len(vals) > 0 {
			joined := strings.Join(vals, ",")
			if repair.DropBetas(joined, ref.Names) != joined {
				pr.dropBetas = ref.Names
			}
		}
	}
	if pr.body == nil && pr.dropBetas == nil {
		return false
	}
	req.failures().pending = &pr
	return true
}

// learnRefused records the signatures of the selected thinking blocks as
// refused by domain, so Foreign selects them for it next time.
func learnRefused(body []byte, sel repair.Selector, domain string) {
	sigs, err := repair.ThinkingSignatures(body)
	if err != nil {
		return
	}
	var refused [][]byte
	for _, s := range sigs {
		if sel.Selects(s.Message, s.Content) {
			refused = append(refused, s.Signature)
		}
	}
	signatureBook.Record("refused@"+domain, refused)
}

// recordAccepted records the signatures of the thinking blocks in a body
// that domain accepted.
func recordAccepted(body []byte, domain string) {
	sigs, err := repair.ThinkingSignatures(body)
	if err != nil || len(sigs) == 0 {
		return
	}
	out := make([][]byte, len(sigs))
	for k, s := range sigs {
		out[k] = s.Signature
	}
	signatureBook.Record(domain, out)
}

// applyRepair makes the pending repair the request's: the repaired body
// replaces req.body (for this provider and the ones after it), a beta
// drop applies to this provider's retry.
func (h *Handler) applyRepair(req *llmRequest) {
	fs := req.fail
	pr := fs.pending
	fs.pending = nil
	if fs.repaired == nil {
		fs.repaired = make([]uint8, len(h.Providers))
	}
	fs.repaired[pr.provider] |= 1 << pr.kind
	if pr.body != nil {
		req.body = pr.body
	}
	if pr.dropBetas != nil {
		fs.extraBetas, fs.extraBetasFor = pr.dropBetas, h.Providers[pr.provider]
	}
}

// extraBetasFor returns the anthropic-beta values a repair dropped for
// p's retry; ok is false when no repair dropped any for p.
func (req *llmRequest) extraBetasFor(p *Provider) (betas []string, ok bool) {
	if req.fail == nil || req.fail.extraBetasFor != p {
		return nil, false
	}
	return req.fail.extraBetas, true
}

// narrowByWindow follows a context_window refusal from p: when p declares
// its window, providers whose declared window is not larger are not tried
// for this request. Providers without a declaration stay in the running.
func (h *Handler) narrowByWindow(req *llmRequest, p *Provider) {
	w := p.ContextWindow
	if w <= 0 {
		return
	}
	for j, q := range h.Providers {
		if j < len(req.tried) && q.ContextWindow > 0 && q.ContextWindow <= w {
			req.tried[j] = true
		}
	}
}

// parseTokenCount reads a token count: 200000, 200k, 1m, 1.5m (k = 1000,
// m = 1,000,000, case-insensitive). The result is a whole positive number
// of at most 1e12.
func parseTokenCount(s string) (int64, error) {
	num, mult := s, 1.0
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			num, mult = s[:n-1], 1e3
		case 'm', 'M':
			num, mult = s[:n-1], 1e6
		}
	}
	if num == "" || strings.ContainsAny(num, "eExXpP_+-") {
		return 0, fmt.Errorf("want a token count such as 200k, 1m or 200000, got %q", s)
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("want a token count such as 200k, 1m or 200000, got %q", s)
	}
	v := f * mult
	if math.IsNaN(v) || v < 1 || v > 1e12 || v != math.Trunc(v) {
		return 0, fmt.Errorf("want a whole token count between 1 and 1e12, got %q", s)
	}
	return int64(v), nil
}
