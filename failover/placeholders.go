package failover

import (
	"strings"
)

// placeholder resolves the {llm.*} placeholders the Handler doc lists
// (all but {llm.client}, set when the client is admitted), once the
// request is finished: for access logs and the handlers after this one.
// Nothing is computed for a request whose placeholders nobody reads.
func (req *llmRequest) placeholder(key string) (any, bool) {
	name, ok := strings.CutPrefix(key, "llm.")
	if !ok || !req.finished {
		return nil, false
	}
	switch name {
	case "provider":
		if req.answeredBy == "" && req.fail != nil && req.fail.lastProvider != nil {
			return req.fail.lastProvider.Name, true
		}
		return req.answeredBy, true
	case "attempts":
		return req.attempts, true
	case "failover_classes":
		if req.fail == nil {
			return "", true
		}
		var classes strings.Builder
		for i, c := range req.fail.classes {
			if i > 0 {
				classes.WriteByte(',')
			}
			classes.WriteString(string(c))
		}
		return classes.String(), true
	case "model":
		// what the client sent: a log line, span attribute or header it
		// lands in gets valid UTF-8 and at most maxLoggedString bytes
		model := req.sentModel
		if model == "" {
			model = req.model
		}
		return boundedString(model), true
	case "input_tokens":
		return req.usage.InputTokens, true
	case "output_tokens":
		return req.usage.OutputTokens, true
	}
	return nil, false
}
