package failover

import (
	"sync"
	"unicode/utf8"
)

// Bounds of the model label of caddy_llm_tokens_total: the model is
// whatever the client sent, so without a bound every new name would be a
// new series for as long as the process runs.
const (
	// maxModelLabels is how many distinct model names a provider gets as
	// labels beyond the models its mappings send.
	maxModelLabels = 32
	// maxModelLabelLen cuts a longer model name (at a UTF-8 boundary).
	maxModelLabelLen = 64
	// otherModelLabel stands for every model past the first
	// maxModelLabels.
	otherModelLabel = "other"
)

// modelLabelSet is the set of model labels one provider has used.
type modelLabelSet struct {
	mu     sync.RWMutex
	mapped map[string]bool // models the provider's mappings send: always labels
	seen   map[string]bool // the first maxModelLabels others
}

// modelLabelSets holds a set per provider name. Like the metrics, it
// outlives a config reload; provider names come from the configuration.
var modelLabelSets sync.Map // provider name -> *modelLabelSet

func modelLabelsFor(provider string) *modelLabelSet {
	if s, ok := modelLabelSets.Load(provider); ok {
		return s.(*modelLabelSet)
	}
	s, _ := modelLabelSets.LoadOrStore(provider, &modelLabelSet{mapped: map[string]bool{}, seen: map[string]bool{}})
	return s.(*modelLabelSet)
}

// allowMappedModels makes the models a provider's mappings send labels of
// their own, however many other names clients send.
func allowMappedModels(provider string, rules []ModelRule) {
	if len(rules) == 0 {
		return
	}
	s := modelLabelsFor(provider)
	s.mu.Lock()
	for _, r := range rules {
		s.mapped[cutModelLabel(r.Model)] = true
	}
	s.mu.Unlock()
}

// modelLabel is the label a model gets for a provider.
func modelLabel(provider, model string) string {
	model = cutModelLabel(model)
	s := modelLabelsFor(provider)
	s.mu.RLock()
	known := s.mapped[model] || s.seen[model]
	s.mu.RUnlock()
	if known {
		return model
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[model] {
		return model
	}
	if len(s.seen) >= maxModelLabels {
		return otherModelLabel
	}
	s.seen[model] = true
	return model
}

// cutModelLabel cuts a model name to maxModelLabelLen bytes without
// splitting a UTF-8 sequence.
func cutModelLabel(model string) string {
	if len(model) <= maxModelLabelLen {
		return model
	}
	cut := maxModelLabelLen
	for cut > 0 && !utf8.RuneStart(model[cut]) {
		cut--
	}
	return model[:cut]
}
