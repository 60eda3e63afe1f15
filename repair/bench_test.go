package repair

import (
	"fmt"
	"strings"
	"testing"
)

// bigConversation is a Claude Code session of about 1 MB: a 192 KB
// screenshot, then turns of thinking, tool calls (ids from another provider
// when foreignIDs) and tool output.
func bigConversation(foreignIDs, thinking bool) []byte {
	msgs := []msg{{role: "user", blocks: []string{userText, imageBlock(192 << 10), cacheText}}}
	out := strings.Repeat("ok  \tgithub.com/x/y/pkg\t0.012s <html> & \"quoted\" \\path\n", 40)
	size := len(build(styles[0], msgs))
	for i := 0; ; i++ {
		id := fmt.Sprintf("toolu_01%06dAbCdEf", i)
		if foreignIDs {
			id = fmt.Sprintf("functions.Bash:%d", i)
		}
		var a []string
		if thinking {
			a = append(a, thinkingBlock(i))
		}
		a = append(a, assistantTxt, toolUse(id, "go test ./..."))
		r := toolResult(id, out)
		msgs = append(msgs,
			msg{role: "assistant", blocks: a},
			msg{role: "user", blocks: []string{r}})
		size += len(strings.Join(a, ",")) + len(r) + 80
		if size >= 1<<20 {
			return build(styles[0], msgs)
		}
	}
}

func TestBigConversation(t *testing.T) {
	t.Parallel()
	for _, f := range []bool{false, true} {
		b := bigConversation(f, true)
		if len(b) < 1e6 || len(b) > 1<<20+8<<10 {
			t.Errorf("size %d, want about 1 MB", len(b))
		}
		decode(t, b)
	}
}

func benchBody(b *testing.B, body []byte, f func([]byte) ([]byte, int, error), wantN bool) {
	b.Helper()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_, n, err := f(body)
		if err != nil || (n > 0) != wantN {
			b.Fatalf("n = %d, err = %v", n, err)
		}
	}
}

func BenchmarkSanitizeToolIDs(b *testing.B) {
	b.Run("repair", func(b *testing.B) { benchBody(b, bigConversation(true, true), SanitizeToolIDs, true) })
	b.Run("nothing-to-do", func(b *testing.B) { benchBody(b, bigConversation(false, true), SanitizeToolIDs, false) })
}

func BenchmarkStripThinking(b *testing.B) {
	body := bigConversation(false, true)
	b.Run("all", func(b *testing.B) {
		benchBody(b, body, func(x []byte) ([]byte, int, error) { return StripThinking(x, SelectAll()) }, true)
	})
	one := SelectBlocks(BlockRef{Message: 41, Content: 0})
	b.Run("one-block", func(b *testing.B) {
		benchBody(b, body, func(x []byte) ([]byte, int, error) { return StripThinking(x, one) }, true)
	})
	noThinking := bigConversation(false, false)
	b.Run("nothing-to-do", func(b *testing.B) {
		benchBody(b, noThinking, func(x []byte) ([]byte, int, error) { return StripThinking(x, SelectAll()) }, false)
	})
}

func BenchmarkDropFields(b *testing.B) {
	body := bigConversation(false, true)
	b.Run("drop", func(b *testing.B) {
		benchBody(b, body, func(x []byte) ([]byte, int, error) {
			return DropFields(x, []string{"context_management", "container"})
		}, true)
	})
	b.Run("nothing-to-do", func(b *testing.B) {
		benchBody(b, body, func(x []byte) ([]byte, int, error) { return DropFields(x, []string{"container"}) }, false)
	})
}

func BenchmarkThinkingSignatures(b *testing.B) {
	body := bigConversation(false, true)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if s, err := ThinkingSignatures(body); err != nil || len(s) == 0 {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignatureBookForeign(b *testing.B) {
	body := bigConversation(false, true)
	book := NewSignatureBook(0)
	sigs, _ := ThinkingSignatures(body)
	for i, s := range sigs {
		book.Record([]string{"anthropic", "zai"}[i%2], [][]byte{s.Signature})
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if book.Foreign(body, "zai").Empty() {
			b.Fatal("nothing foreign")
		}
	}
}
