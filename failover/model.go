package failover

import "strings"

// ModelRule maps the models a client asks for to the model a provider
// serves. Rules are tried in order; the first match wins.
type ModelRule struct {
	// Pattern is matched against the requested model. `*` matches any run
	// of characters (including none); everything else matches itself.
	Pattern string `json:"pattern"`
	// Model is the name sent to the provider instead.
	Model string `json:"model"`
}

// mapModel returns the model to send for the requested one, and whether a
// rule matched. No rule matching leaves the model as the client sent it.
func mapModel(rules []ModelRule, requested string) (string, bool) {
	for _, r := range rules {
		if globMatch(r.Pattern, requested) {
			return r.Model, true
		}
	}
	return requested, false
}

// globMatch reports whether s matches pattern, where `*` matches any run of
// characters. Greedy with backtracking to the last star: linear in practice.
func globMatch(pattern, s string) bool {
	p, i := 0, 0
	star, mark := -1, 0
	for i < len(s) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, i
			p++
		case p < len(pattern) && pattern[p] == s[i]:
			p++
			i++
		case star >= 0:
			p = star + 1
			mark++
			i = mark
		default:
			return false
		}
	}
	return strings.Trim(pattern[p:], "*") == ""
}
