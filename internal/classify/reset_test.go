package classify

import (
	"net/http"
	"testing"
	"time"
)

// A reset time a provider gives is capped, whatever its form, and the
// unified (subscription) reset counts only for quota and rate limits.
func TestClassifyResetIsCapped(t *testing.T) {
	t.Parallel()
	far := clsNow.Add(80 * 365 * 24 * time.Hour)
	capAt := clsNow.Add(DefaultMaxReset)
	cases := []clsCase{
		{name: "Retry-After HTTP-date in year 9999", status: 429,
			header: clsHeader("retry-after", "Fri, 01 Jan 9999 00:00:00 GMT"),
			want:   RateLimit, reset: capAt},
		{name: "Retry-After HTTP-date on 529", status: 529,
			header: clsHeader("retry-after", far.Format(http.TimeFormat)),
			body:   clsAnthropic("overloaded_error", "Overloaded"), want: Overloaded, reset: capAt},
		{name: "Retry-After seconds over the cap", status: 429,
			header: clsHeader("retry-after", "1e300"), want: RateLimit, reset: capAt},
		{name: "Retry-After Inf", status: 429,
			header: clsHeader("retry-after", "+Inf"), want: RateLimit, reset: capAt},
		{name: "unified reset in year 2100", status: 429,
			header: clsUnified("rejected", time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)),
			want:   Quota, reset: capAt},
		{name: "tokens reset 9999-12-31", status: 429,
			header: clsExhausted("tokens", "9999-12-31T23:59:59Z"),
			want:   RateLimit, reset: capAt},
		{name: "a reset just under the cap is kept", status: 429,
			header: clsUnified("rejected", clsNow.Add(7*24*time.Hour)),
			want:   Quota, reset: clsNow.Add(7 * 24 * time.Hour)},
		// an overloaded or failing subscription carries its allowed
		// window's reset on every answer: it cools by its class
		{name: "529 with unified allowed and a reset 4h away", status: 529,
			header: clsUnified("allowed", clsNow.Add(4*time.Hour)),
			body:   clsAnthropic("overloaded_error", "Overloaded"), want: Overloaded},
		{name: "529 even with unified rejected cools as overloaded", status: 529,
			header: clsUnified("rejected", clsNow.Add(4*time.Hour)),
			body:   clsAnthropic("overloaded_error", "Overloaded"), want: Overloaded},
		{name: "500 with unified headers", status: 500,
			header: clsUnified("allowed", clsNow.Add(4*time.Hour)),
			body:   clsAnthropic("api_error", "Internal server error"), want: ServerError},
		{name: "529 with a tokens reset", status: 529,
			header: clsExhausted("tokens", clsNow.Add(time.Hour).Format(time.RFC3339)),
			body:   clsAnthropic("overloaded_error", "Overloaded"), want: Overloaded},
		{name: "429 rate limit takes the unified reset", status: 429,
			header: clsUnified("allowed_warning", clsNow.Add(2*time.Hour)),
			body:   clsAnthropic("rate_limit_error", "slow down"), want: RateLimit, reset: clsNow.Add(2 * time.Hour)},
	}
	runClsCases(t, cases)
}

func TestClassifyMaxResetOption(t *testing.T) {
	t.Parallel()
	h := clsHeader("retry-after", "86400")
	if v := Response(429, h, nil, nil, clsNow, time.Hour); !v.ResetAt.Equal(clsNow.Add(time.Hour)) {
		t.Errorf("max_reset 1h: ResetAt %v, want %v", v.ResetAt, clsNow.Add(time.Hour))
	}
	if v := Response(429, h, nil, nil, clsNow, 30*24*time.Hour); !v.ResetAt.Equal(clsNow.Add(24 * time.Hour)) {
		t.Errorf("max_reset 30d: ResetAt %v, want %v", v.ResetAt, clsNow.Add(24*time.Hour))
	}
	far := clsUnified("rejected", clsNow.Add(20*24*time.Hour))
	if v := Response(429, far, nil, nil, clsNow, 30*24*time.Hour); !v.ResetAt.Equal(clsNow.Add(20 * 24 * time.Hour)) {
		t.Errorf("max_reset 30d, unified reset in 20d: ResetAt %v", v.ResetAt)
	}
}
