package repair

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func TestSignatureBookForeign(t *testing.T) {
	t.Parallel()
	body := build(styles[0], conversation())
	// Turn 1's block came from "anthropic", turn 3's from "zai"; the
	// redacted block (3,0) and turn 5's and 7's blocks were never recorded.
	b := NewSignatureBook(0)
	b.Record("anthropic", [][]byte{[]byte(signature(1))})
	b.Record("zai", [][]byte{[]byte(signature(2)), nil})
	if b.Len() != 2 {
		t.Fatalf("Len = %d", b.Len())
	}

	if got := b.Foreign(body, "anthropic").Blocks(); !slices.Equal(got, []BlockRef{{3, 1}}) {
		t.Errorf("foreign to anthropic: %v, want [{3 1}]", got)
	}
	if got := b.Foreign(body, "zai").Blocks(); !slices.Equal(got, []BlockRef{{1, 0}}) {
		t.Errorf("foreign to zai: %v, want [{1 0}]", got)
	}
	if got := b.Foreign(body, "other").Blocks(); !slices.Equal(got, []BlockRef{{1, 0}, {3, 1}}) {
		t.Errorf("foreign to other: %v", got)
	}

	// A signature accepted by both is foreign to neither.
	b.Record("zai", [][]byte{[]byte(signature(1))})
	if got := b.Signers([]byte(signature(1))); !slices.Equal(got, []string{"anthropic", "zai"}) {
		t.Errorf("Signers = %v", got)
	}
	if got := b.Foreign(body, "zai"); !got.Empty() {
		t.Errorf("foreign to zai after it accepted: %v", got.Blocks())
	}
	if b.Signers([]byte("never")) != nil {
		t.Error("unknown signature has signers")
	}

	// Record+Foreign+Strip: only anthropic's block goes for "other".
	out, n, err := StripThinking(body, b.Foreign(body, "anthropic"))
	if err != nil || n != 1 {
		t.Fatalf("n = %d, err = %v", n, err)
	}
	sigs, _ := ThinkingSignatures(out)
	for _, s := range sigs {
		if string(s.Signature) == signature(2) {
			t.Error("zai's block survived")
		}
	}

	// Redacted blocks are recorded by their data.
	b.Record("anthropic", [][]byte{[]byte("EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh2+0Hy8Yk3QQ==")})
	if got := b.Foreign(body, "zai").Blocks(); !slices.Equal(got, []BlockRef{{3, 0}}) {
		t.Errorf("redacted: %v", got)
	}
}

func TestSignatureBookEmptyAndBad(t *testing.T) {
	t.Parallel()
	b := NewSignatureBook(10)
	if !b.Foreign([]byte(`not json`), "x").Empty() {
		t.Error("empty book selected something")
	}
	b.Record("a", [][]byte{[]byte("s")})
	if !b.Foreign([]byte(`{"messages":[`), "x").Empty() {
		t.Error("malformed body selected something")
	}
	b.Record("a", nil)
	if b.Len() != 1 {
		t.Errorf("Len = %d", b.Len())
	}
}

func TestSignatureBookBounded(t *testing.T) {
	t.Parallel()
	b := NewSignatureBook(100)
	for i := range 250 {
		b.Record("p", [][]byte{fmt.Appendf(nil, "sig-%d", i)})
	}
	if b.Len() != 100 {
		t.Fatalf("Len = %d, want 100", b.Len())
	}
	for i := range 250 {
		known := b.Signers(fmt.Appendf(nil, "sig-%d", i)) != nil
		if known != (i >= 150) {
			t.Fatalf("sig-%d known = %v: the oldest should go first", i, known)
		}
	}
	// Recording a known signature again does not take a new slot.
	b.Record("q", [][]byte{[]byte("sig-249")})
	if b.Len() != 100 || b.Signers([]byte("sig-150")) == nil {
		t.Error("re-recording evicted something")
	}
}

func TestSignatureBookSignersBounded(t *testing.T) {
	t.Parallel()
	b := NewSignatureBook(10)
	for i := range maxSigners + 2 {
		b.Record(fmt.Sprint("p", i), [][]byte{[]byte("s")})
	}
	got := b.Signers([]byte("s"))
	want := []string{"p2", "p3", "p4", "p5"}
	if !slices.Equal(got, want) {
		t.Errorf("Signers = %v, want %v", got, want)
	}
}

func TestSignatureBookConcurrent(t *testing.T) {
	t.Parallel()
	b := NewSignatureBook(64)
	body := build(styles[0], conversation())
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				b.Record(fmt.Sprint("p", g%3), [][]byte{fmt.Appendf(nil, "%d-%d", g, i), []byte(signature(1 + i%4))})
				_ = b.Foreign(body, fmt.Sprint("p", i%3))
				_ = b.Len()
			}
		})
	}
	wg.Wait()
	if b.Len() != 64 {
		t.Errorf("Len = %d, want 64", b.Len())
	}
}
