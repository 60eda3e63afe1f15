// Package glob matches names against patterns in which `*` stands for any
// run of bytes (including none) and every other byte matches itself: the
// patterns of `model` rules, `drop_beta` values and `price` lines.
package glob

// Match reports whether s matches pattern. Greedy with backtracking to
// the last star: linear in practice, and it allocates nothing.
func Match(pattern, s string) bool {
	star, back := -1, 0 // the last '*' in pattern, and where in s it started matching
	p, i := 0, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, back = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			back++
			p, i = star+1, back
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// MatchAny reports whether s matches one of patterns.
func MatchAny(patterns []string, s string) bool {
	for _, p := range patterns {
		if Match(p, s) {
			return true
		}
	}
	return false
}
