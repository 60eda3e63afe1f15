package repair

import (
	"crypto/sha256"
	"slices"
	"sync"
)

// DefaultBookSize is the number of signatures a SignatureBook made with
// NewSignatureBook(0) remembers.
const DefaultBookSize = 10000

// maxSigners bounds how many providers one signature is recorded for.
const maxSigners = 4

// Fingerprint identifies a thinking signature: the first 16 bytes of its
// SHA-256. The signature itself (often kilobytes) is never stored.
type Fingerprint [16]byte

// FingerprintOf returns the fingerprint of a signature (its unescaped value).
func FingerprintOf(signature []byte) Fingerprint {
	sum := sha256.Sum256(signature)
	return Fingerprint(sum[:16])
}

// SignatureBook remembers which provider signed which thinking block, so a
// proxy can strip, before sending, exactly the thinking blocks the chosen
// provider will refuse, instead of learning it from a 400 one block at a
// time (the API names only the first bad block of a request).
//
// The proxy records the signatures of the thinking blocks a provider
// produced (from the response: signature_delta events, or the
// redacted_thinking data) with Record, and may also record the ones a
// provider accepted in a request (ThinkingSignatures of a request that
// succeeded) — a signature can be recorded for several providers. Before an
// attempt it calls Foreign(body, provider) and strips what that selects.
//
// "Provider" names a signing domain, not necessarily a configured provider:
// two providers that reach the same API with different credentials (a
// subscription and an API key on api.anthropic.com) most likely verify each
// other's signatures, and should then be recorded under one name (the
// upstream host, say), or thinking blocks would be stripped for nothing.
//
// Foreign selects only blocks known to belong to a different provider and
// never known to belong to this one. A block never recorded is left alone:
// the client may hold it from a session that never went through this proxy,
// or from before a restart, and it is then most likely the provider's own.
// If it is not, the provider's 400 names it and the reactive repair
// (ParseRefusal, StripThinking) handles it.
//
// The book is bounded: it keeps the most recently first-recorded
// fingerprints in a ring of fixed size and forgets the oldest when full
// (FIFO rather than LRU). Foreign runs on the request path of every request
// with thinking blocks and so only reads, under a shared lock; an LRU would
// turn every lookup into a write. What eviction loses is the prevention for
// conversations idle for the last size new signatures, which the reactive
// repair still covers. At 10,000 entries the book takes under 2 MB.
//
// A SignatureBook is safe for concurrent use. The zero value is not usable:
// make one with NewSignatureBook.
type SignatureBook struct {
	mu   sync.RWMutex
	size int
	ring []Fingerprint // insertion order; ring[next] is the oldest once full
	next int
	m    map[Fingerprint]*signers
}

type signers struct {
	names [maxSigners]string
	n     int
}

func (s *signers) has(p string) bool {
	return slices.Contains(s.names[:s.n], p)
}

func (s *signers) add(p string) {
	if s.has(p) {
		return
	}
	if s.n == maxSigners { // forget the first recorded
		copy(s.names[:], s.names[1:])
		s.n--
	}
	s.names[s.n] = p
	s.n++
}

// NewSignatureBook returns a book that remembers up to size signatures
// (DefaultBookSize when size <= 0).
func NewSignatureBook(size int) *SignatureBook {
	if size <= 0 {
		size = DefaultBookSize
	}
	return &SignatureBook{size: size, m: make(map[Fingerprint]*signers)}
}

// Record notes that provider signed (or accepted) each of signatures.
// Empty signatures are ignored.
func (b *SignatureBook) Record(provider string, signatures [][]byte) {
	if len(signatures) == 0 {
		return
	}
	var small [8]Fingerprint
	fps := small[:0]
	for _, sig := range signatures {
		if len(sig) > 0 {
			fps = append(fps, FingerprintOf(sig))
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, fp := range fps {
		if s, ok := b.m[fp]; ok {
			s.add(provider)
			continue
		}
		if len(b.ring) < b.size {
			b.ring = append(b.ring, fp)
		} else {
			delete(b.m, b.ring[b.next])
			b.ring[b.next] = fp
			b.next = (b.next + 1) % b.size
		}
		s := &signers{}
		s.add(provider)
		b.m[fp] = s
	}
}

// Signers returns the providers a signature was recorded for, nil if it
// was not (or was forgotten).
func (b *SignatureBook) Signers(signature []byte) []string {
	fp := FingerprintOf(signature)
	b.mu.RLock()
	defer b.mu.RUnlock()
	if s, ok := b.m[fp]; ok {
		return slices.Clone(s.names[:s.n])
	}
	return nil
}

// Len returns the number of signatures remembered.
func (b *SignatureBook) Len() int {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return len(b.m)
}

// Foreign selects the thinking blocks of body's assistant messages whose
// signature was recorded for some provider other than provider and never
// for provider itself. Pass the result to StripThinking. It selects nothing
// (and does not read body) while the book is empty, and nothing for a body
// that is not valid JSON.
func (b *SignatureBook) Foreign(body []byte, provider string) Selector {
	if b.Len() == 0 {
		return Selector{}
	}
	sigs, err := ThinkingSignatures(body)
	if err != nil || len(sigs) == 0 {
		return Selector{}
	}
	fps := make([]Fingerprint, len(sigs))
	for i, t := range sigs {
		fps[i] = FingerprintOf(t.Signature)
	}
	var refs []BlockRef
	b.mu.RLock()
	for i, fp := range fps {
		if s, ok := b.m[fp]; ok && !s.has(provider) {
			refs = append(refs, sigs[i].Ref())
		}
	}
	b.mu.RUnlock()
	return SelectBlocks(refs...)
}
