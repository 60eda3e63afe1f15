package classify

import (
	"net/http"
	"testing"
	"time"
)

// BenchmarkClassify runs the classifier on the error responses it meets
// most: only failed attempts pay for it, never a success.
func BenchmarkClassify(b *testing.B) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		name   string
		status int
		header http.Header
		body   []byte
	}{
		{"429 rate_limit with retry-after", 429, http.Header{"Retry-After": {"30"},
			"Anthropic-Ratelimit-Requests-Remaining": {"0"}, "Anthropic-Ratelimit-Requests-Reset": {"2026-11-28T12:00:30Z"}},
			[]byte(`{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}`)},
		{"429 unified rejected", 429, http.Header{"Anthropic-Ratelimit-Unified-Status": {"rejected"},
			"Anthropic-Ratelimit-Unified-Reset": {"1795900000"}},
			[]byte(`{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}`)},
		{"529 overloaded", 529, http.Header{}, []byte(`{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}`)},
		{"400 client error", 400, http.Header{}, []byte(`{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`)},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if v := classifyDefault(c.status, c.header, c.body, nil, now); v.Class == None {
					b.Fatal("unclassified")
				}
			}
		})
	}
}
