package glob

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMatch(t *testing.T) {
	t.Parallel()
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"claude-*haiku*", "claude-3-5-haiku-20241022", true},
		{"claude-*haiku*", "claude-haiku-4-5", true},
		{"claude-*haiku*", "claude-haiku", true}, // the stars match empty runs
		{"claude-*haiku*", "claude-sonnet-4-5", false},
		{"claude-*haiku*", "anthropic/claude-3-haiku", false},
		{"claude-*haiku*", "claude-3-HAIKU", false}, // case-sensitive
		{"claude-*", "claude-opus-4-1", true},
		{"claude-*", "claude-", true},
		{"claude-*", "claude", false},
		{"claude-*", "xclaude-opus", false},
		{"*", "", true},
		{"*", "anything at all", true},
		{"**", "x", true},
		{"", "", true},
		{"", "x", false},
		{"x", "", false},
		{"glm-4.6", "glm-4.6", true},
		{"glm-4.6", "glm-4x6", false}, // `.` is literal
		{"glm-4.6", "glm-4.6-air", false},
		{"glm-4.6", "glm-4.", false},
		{"*-4-5", "claude-sonnet-4-5", true},
		{"*-4-5", "claude-sonnet-4-5-20250929", false},
		{"*sonnet*", "sonnet", true},
		{"a*b*c", "abXbc", true},
		{"a*b*c", "abXbcX", false},
		{"a*b*c", "aXbYbc", true},
		{"a*c", "abcd", false},
		{"*ab", "aab", true},
		{"*aab", "aaab", true},
		{"a*a", "a", false},
		{"a**b", "ab", true},
		{"ab", "a", false},
		{"?", "?", true}, // no other wildcards
		{"?", "x", false},
		{"[ab]", "a", false},
		{"[ab]", "[ab]", true},
		{"模型-*", "模型-1", true},
	}
	for _, tc := range cases {
		if got := Match(tc.pattern, tc.s); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// TestMatchExhaustive compares Match with a regexp translation on every
// pattern over {a, b, *} and every string over {a, b} up to a length.
func TestMatchExhaustive(t *testing.T) {
	t.Parallel()
	all := func(alphabet string, maxLen int) []string {
		out := []string{""}
		prev := []string{""}
		for range maxLen {
			var next []string
			for _, p := range prev {
				for _, c := range alphabet {
					next = append(next, p+string(c))
				}
			}
			out = append(out, next...)
			prev = next
		}
		return out
	}
	patterns := all("ab*", 5)
	strs := all("ab", 6)
	n := 0
	for _, p := range patterns {
		re := regexp.MustCompile("^" + strings.ReplaceAll(regexp.QuoteMeta(p), `\*`, ".*") + "$")
		for _, s := range strs {
			n++
			if got, want := Match(p, s), re.MatchString(s); got != want {
				t.Fatalf("Match(%q, %q) = %v, want %v", p, s, got, want)
			}
		}
	}
	if n < 40000 {
		t.Fatalf("only %d checks", n)
	}
}

func TestMatchAny(t *testing.T) {
	t.Parallel()
	if !MatchAny([]string{"x", "context-management-*"}, "context-management-2025-06-27") {
		t.Error("the second pattern matches")
	}
	if MatchAny([]string{"x", "y*"}, "z") || MatchAny(nil, "") {
		t.Error("no pattern matches")
	}
}

// FuzzMatch checks Match against a regexp translation of the pattern.
func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{{"claude-*haiku*", "claude-3-5-haiku"}, {"a*b*c", "aXbYbc"}, {"*", ""}, {"**a", "ba"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 {
			return
		}
		re, err := regexp.Compile("^" + strings.ReplaceAll(regexp.QuoteMeta(pattern), `\*`, "(?s:.*)") + "$")
		if err != nil {
			return
		}
		// regexp reads UTF-8; compare on valid strings only
		if !utf8.ValidString(pattern) || !utf8.ValidString(s) {
			return
		}
		if got, want := Match(pattern, s), re.MatchString(s); got != want {
			t.Fatalf("Match(%q, %q) = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

func BenchmarkMatch(b *testing.B) {
	for b.Loop() {
		Match("claude-*haiku*", "claude-3-5-sonnet-20241022-with-a-long-suffix")
	}
}
