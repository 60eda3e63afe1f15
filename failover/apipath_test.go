package failover

import (
	"path"
	"strings"
	"testing"
)

func TestKindOfPath(t *testing.T) {
	for want, paths := range map[requestKind][]string{
		kindModel:    {"/v1/messages", "/v1/messages/", "/v1/chat/completions"},
		kindOptional: {"/v1/messages/count_tokens", "/v1/models", "/v1/models/claude-sonnet-4-5"},
		kindOther: {"/v1/models/a/b", "/", "", "/health", "/v1/messages/batches",
			"/v1/messagesx", "/v2/messages"},
	} {
		for _, path := range paths {
			if got := kindOfPath(path); got != want {
				t.Errorf("kindOfPath(%q) = %d, want %d", path, got, want)
			}
		}
	}
}

// A path without dot segments never leaves a base path it is appended to.
func FuzzHasDotSegment(f *testing.F) {
	for _, s := range []string{"/v1/messages", "/../admin", "/v1/./x", "/a/..", "/..."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if !strings.HasPrefix(p, "/") || hasDotSegment(p, "") {
			return
		}
		if cleaned := path.Clean("/api/anthropic" + p); !strings.HasPrefix(cleaned, "/api/anthropic") {
			t.Fatalf("%q leaves the base path: %q", p, cleaned)
		}
	})
}
