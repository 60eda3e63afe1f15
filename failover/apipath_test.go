package failover

import "testing"

func TestKindOfPath(t *testing.T) {
	for path, want := range map[string]requestKind{
		"/v1/messages":                 kindModel,
		"/v1/messages/":                kindModel,
		"/v1/chat/completions":         kindModel,
		"/v1/messages/count_tokens":    kindOptional,
		"/v1/models":                   kindOptional,
		"/v1/models/claude-sonnet-4-5": kindOptional,
		"/v1/models/a/b":               kindOther,
		"/":                            kindOther,
		"":                             kindOther,
		"/health":                      kindOther,
		"/v1/messages/batches":         kindOther,
		"/v1/messagesx":                kindOther,
		"/v2/messages":                 kindOther,
	} {
		if got := kindOfPath(path); got != want {
			t.Errorf("kindOfPath(%q) = %d, want %d", path, got, want)
		}
	}
}
