package failover

import "testing"

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
