package failover

import "strings"

// requestKind says what a request is to the failover loop, by its path.
type requestKind uint8

const (
	// kindOther is not a model call (Claude Code's `HEAD /` preconnect,
	// a health check): it goes to the first provider that admits it, its
	// answer passes through untouched, and it feeds no breaker.
	kindOther requestKind = iota
	// kindModel is a model call (/v1/messages, /v1/chat/completions):
	// classified, failed over, fed to the breakers.
	kindModel
	// kindOptional is a model-API endpoint some providers lack
	// (/v1/messages/count_tokens; /v1/models when models.go has no list
	// to answer with): a 404, 405 or 501 tries the next provider and
	// cools nothing.
	kindOptional
)

// kindOfPath classifies a request path (without the query). Pure.
func kindOfPath(path string) requestKind {
	path = strings.TrimSuffix(path, "/")
	switch path {
	case "/v1/messages", "/v1/chat/completions":
		return kindModel
	case "/v1/messages/count_tokens", "/v1/models":
		return kindOptional
	}
	if rest, ok := strings.CutPrefix(path, "/v1/models/"); ok && rest != "" && !strings.Contains(rest, "/") {
		return kindOptional // GET /v1/models/{model_id}
	}
	return kindOther
}

// lacksEndpoint reports whether an answer to a kindOptional request says
// the provider does not have that endpoint.
func lacksEndpoint(status int) bool {
	return status == 404 || status == 405 || status == 501
}

// heldAnswer is who gave the failed answer an exhausted request may get.
type heldAnswer struct {
	provider *Provider
	class    Class
}

// hasDotSegment reports whether a path has a `.` or `..` segment, in its
// decoded form (so `%2e%2e` is one) or its raw form. The upstream path is
// the provider's base path followed by the request's: such a segment would
// climb out of the base path, with the provider's credential. Pure.
func hasDotSegment(path, rawPath string) bool {
	for _, p := range [...]string{path, rawPath} {
		for seg := range strings.SplitSeq(p, "/") {
			if seg == "." || seg == ".." {
				return true
			}
		}
	}
	return false
}
