package failover

import (
	"regexp"
	"strings"
	"testing"
)

func TestGlobMatch(t *testing.T) {
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
		{"*ab", "aab", true},
		{"*aab", "aaab", true},
		{"a*a", "a", false},
		{"a**b", "ab", true},
		{"?", "?", true}, // no other wildcards
		{"?", "x", false},
		{"[ab]", "a", false},
		{"[ab]", "[ab]", true},
		{"模型-*", "模型-1", true},
	}
	for _, tc := range cases {
		if got := globMatch(tc.pattern, tc.s); got != tc.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// TestGlobMatchExhaustive compares globMatch with a regexp translation on
// every pattern over {a, b, *} and every string over {a, b} up to a length.
func TestGlobMatchExhaustive(t *testing.T) {
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
			if got, want := globMatch(p, s), re.MatchString(s); got != want {
				t.Fatalf("globMatch(%q, %q) = %v, want %v", p, s, got, want)
			}
		}
	}
	if n < 40000 {
		t.Fatalf("only %d checks", n)
	}
}

func TestMapModel(t *testing.T) {
	zai := []ModelRule{
		{Pattern: "claude-*haiku*", Model: "glm-4.5-air"},
		{Pattern: "claude-*", Model: "glm-4.6"},
	}
	cases := []struct {
		name      string
		rules     []ModelRule
		requested string
		want      string
		matched   bool
	}{
		{"haiku first", zai, "claude-3-5-haiku-20241022", "glm-4.5-air", true},
		{"haiku 4.5", zai, "claude-haiku-4-5", "glm-4.5-air", true},
		{"other claude", zai, "claude-sonnet-4-5-20250929", "glm-4.6", true},
		{"opus", zai, "claude-opus-4-1", "glm-4.6", true},
		{"no match keeps the model", zai, "gpt-4o", "gpt-4o", false},
		{"empty model, no match", zai, "", "", false},
		{"no rules", nil, "claude-opus-4-1", "claude-opus-4-1", false},
		{"first match wins even when a later rule is exact", []ModelRule{
			{Pattern: "*", Model: "catch-all"},
			{Pattern: "claude-opus-4-1", Model: "exact"},
		}, "claude-opus-4-1", "catch-all", true},
		{"exact before catch-all", []ModelRule{
			{Pattern: "claude-opus-4-1", Model: "exact"},
			{Pattern: "*", Model: "catch-all"},
		}, "claude-opus-4-1", "exact", true},
		{"exact before catch-all, other model", []ModelRule{
			{Pattern: "claude-opus-4-1", Model: "exact"},
			{Pattern: "*", Model: "catch-all"},
		}, "claude-opus-4", "catch-all", true},
		{"star matches the empty model", []ModelRule{{Pattern: "*", Model: "default"}}, "", "default", true},
		{"exact only", []ModelRule{{Pattern: "glm-4.6", Model: "glm-4.6-fast"}}, "glm-4.6", "glm-4.6-fast", true},
		{"exact only, prefix does not match", []ModelRule{{Pattern: "glm-4.6", Model: "glm-4.6-fast"}}, "glm-4.6-air", "glm-4.6-air", false},
		{"mapping to the same name", []ModelRule{{Pattern: "m", Model: "m"}}, "m", "m", true},
	}
	for _, tc := range cases {
		got, matched := mapModel(tc.rules, tc.requested)
		if got != tc.want || matched != tc.matched {
			t.Errorf("%s: mapModel(%q) = %q, %v; want %q, %v", tc.name, tc.requested, got, matched, tc.want, tc.matched)
		}
	}
}

func BenchmarkGlobMatch(b *testing.B) {
	for b.Loop() {
		globMatch("claude-*haiku*", "claude-3-5-sonnet-20241022-with-a-long-suffix")
	}
}
