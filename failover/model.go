package failover

import "github.com/caddy-llm-failover/caddy-llm-failover/internal/glob"

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
		if glob.Match(r.Pattern, requested) {
			return r.Model, true
		}
	}
	return requested, false
}
