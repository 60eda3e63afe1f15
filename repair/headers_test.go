package repair

import "testing"

func TestDropBetas(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		drop []string
		want string
	}{
		{"oauth-2025-04-20,interleaved-thinking-2025-05-14", []string{"oauth-2025-04-20"}, "interleaved-thinking-2025-05-14"},
		{"claude-code-20250219, oauth-2025-04-20 ,interleaved-thinking-2025-05-14", []string{"oauth-2025-04-20"}, "claude-code-20250219,interleaved-thinking-2025-05-14"},
		{"a,context-management-2025-06-27,b", []string{"context-management-*"}, "a,b"},
		{"a,b", []string{"*"}, ""},
		{"a,,b", []string{"a"}, "b"},
		{"a, b", []string{"c"}, "a, b"},
		{"a,b", nil, "a,b"},
		{"", []string{"a"}, ""},
		{"fine-grained-tool-streaming-2025-05-14", []string{"*-streaming-*"}, ""},
		{"ab", []string{"a"}, "ab"},
	}
	for _, tt := range tests {
		if got := DropBetas(tt.in, tt.drop); got != tt.want {
			t.Errorf("DropBetas(%q, %q) = %q, want %q", tt.in, tt.drop, got, tt.want)
		}
	}
}

func TestDropQuery(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in    string
		names []string
		want  string
	}{
		{"beta=true", []string{"beta"}, ""},
		{"beta=true&x=a%20b", []string{"beta"}, "x=a%20b"},
		{"x=1&beta=true&y=%2F", []string{"beta"}, "x=1&y=%2F"},
		{"x=1&be%74a=true", []string{"beta"}, "x=1"},
		{"beta", []string{"beta"}, ""},
		{"betas=1&x=2", []string{"beta"}, "betas=1&x=2"},
		{"x=1;y=2", []string{"beta"}, "x=1;y=2"},
		{"beta=1&beta=2&z", []string{"beta", "z"}, ""},
		{"", []string{"beta"}, ""},
		{"a=1", nil, "a=1"},
	}
	for _, tt := range tests {
		if got := DropQuery(tt.in, tt.names); got != tt.want {
			t.Errorf("DropQuery(%q, %q) = %q, want %q", tt.in, tt.names, got, tt.want)
		}
	}
}
