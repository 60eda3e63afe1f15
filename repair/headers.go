package repair

import (
	"net/url"
	"strings"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/glob"
)

// DropBetas removes values from an anthropic-beta header value (a
// comma-separated list). A pattern in drop matches a value exactly, or with
// '*' standing for any run of characters ("context-management-*"); values
// are compared after trimming spaces. The kept values are joined with ","
// (empty entries dropped); the result is "" when none is kept, and the
// caller should then delete the header. When nothing matches, headerValue
// is returned as it is.
func DropBetas(headerValue string, drop []string) string {
	if headerValue == "" || len(drop) == 0 {
		return headerValue
	}
	hit := false
	for v := range strings.SplitSeq(headerValue, ",") {
		if glob.MatchAny(drop, strings.TrimSpace(v)) {
			hit = true
			break
		}
	}
	if !hit {
		return headerValue
	}
	var b strings.Builder
	b.Grow(len(headerValue))
	for v := range strings.SplitSeq(headerValue, ",") {
		v = strings.TrimSpace(v)
		if v == "" || glob.MatchAny(drop, v) {
			continue
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(v)
	}
	return b.String()
}

// DropQuery removes the named parameters (compared after query unescaping)
// from a raw query string, keeping the others byte for byte and in order:
// DropQuery("beta=true&x=1", []string{"beta"}) is "x=1". When none is there
// rawQuery is returned as it is.
func DropQuery(rawQuery string, names []string) string {
	if rawQuery == "" || len(names) == 0 {
		return rawQuery
	}
	hit := false
	for part := range strings.SplitSeq(rawQuery, "&") {
		if queryNamed(part, names) {
			hit = true
			break
		}
	}
	if !hit {
		return rawQuery
	}
	var b strings.Builder
	b.Grow(len(rawQuery))
	first := true
	for part := range strings.SplitSeq(rawQuery, "&") {
		if queryNamed(part, names) {
			continue
		}
		if !first {
			b.WriteByte('&')
		}
		first = false
		b.WriteString(part)
	}
	return b.String()
}

func queryNamed(part string, names []string) bool {
	key, _, _ := strings.Cut(part, "=")
	if k, err := url.QueryUnescape(key); err == nil {
		key = k
	}
	for _, n := range names {
		if key == n {
			return true
		}
	}
	return false
}
