package classify

import (
	"regexp"
	"strings"
)

// A provider's error message is free text, and providers repeat what the
// client sent inside it: Anthropic answers a bad beta with "Unexpected
// value(s) `X` for the `anthropic-beta` header" and a bad model with "X is
// not a valid model ID", X being the client's bytes, at the very start of
// the message in the second case. So no word found anywhere in a message
// decides a class (a model named "quota-x" would bench a provider for
// everyone), and not even a fixed opening does (the model can be that
// opening). A message decides only when it is one of the known messages
// below, matched whole: fixed text whose variable parts are numbers or an
// amount, never text a client chose. Each entry names where it was seen.

// knownMessage is one provider message the classifier knows.
type knownMessage struct {
	// statuses the message is known with; the message alone decides
	// nothing under another status.
	statuses []int
	// re matches the whole message (anchored at both ends).
	re    *regexp.Regexp
	class Class
	scope string
}

// maxKnownMessage bounds the message length a known message is looked for
// in: every known message is far shorter.
const maxKnownMessage = 512

func known(statuses []int, pattern string, class Class, scope string) knownMessage {
	return knownMessage{statuses: statuses, re: regexp.MustCompile(`^(?:` + pattern + `)$`), class: class, scope: scope}
}

// knownMessages is the table of known provider messages, in the order they
// are tried. README's class table lists each one.
var knownMessages = []knownMessage{
	// Anthropic API, an API key without credit: 400 invalid_request_error.
	// Seen in anthropics/claude-quickstarts#229, anthropics/claude-code#4684.
	known([]int{400, 402, 403}, `Your credit balance is too low to access the Anthropic API\. Please go to Plans & Billing to upgrade or purchase credits\.`,
		Quota, ScopeProvider),

	// Claude subscription, extra usage spent: 400 invalid_request_error
	// (429 for a long-context request). The plan may be fine, but what
	// this provider would bill is gone, for every request: quota.
	// Seen in ex-machina-co/opencode-anthropic-auth#50,
	// griffinmartin/opencode-claude-auth#209, anthropics/claude-code#45276.
	known([]int{400, 429}, `You['’]re out of extra usage\. (?:Add more at claude\.ai/settings/usage and keep going|Ask your workspace admin to add more so you can keep going)\.`,
		Quota, ScopeProvider),

	// Claude subscription, a request it takes for a third-party app's:
	// 400 invalid_request_error. Decided by the request's shape (its
	// system prompt, headers): requests that look like Claude Code's still
	// pass, so this request goes on and nothing is benched. The credit
	// amount and currency vary; the organisation variant asks the admin.
	// Seen in anthropics/claude-code#45911, #45048, #45252,
	// ianjwhite99/opencode-with-claude#91, lehdqlsl/opencode-claude-auth-sync#11,
	// elidickinson/pi-claude-bridge#49.
	known([]int{400, 429}, `Third-party apps now draw from (?:your )?extra usage, not (?:your )?plan limits\. `+
		`(?:We['’]ve added a (?:[$€£][0-9][0-9,.]{0,12} )?credit (?:to your organization )?to get you started\. )?`+
		`(?:Claim it at claude\.ai/settings/usage|Ask your workspace admin to claim it|Add more at claude\.ai/settings/usage) and keep going\.`,
		Quota, ScopeRequest),

	// Claude subscription, a long-context (1M) request without extra
	// usage: 429 rate_limit_error. Other requests are fine.
	// Seen in anthropics/claude-code#38758, #42616, #50784, Wei-Shaw/sub2api#572.
	known([]int{429}, `Extra usage is required for long context requests\.`, RateLimit, ScopeRequest),

	// Z.ai Coding Plan window spent: 429, code 1308.
	// Seen in continuedev/continue#13195, hugalafutro/model-hotel#955.
	known([]int{429}, `Usage limit reached for [0-9]{1,4} hours?\. Your limit will reset at [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}`,
		Quota, ScopeProvider),

	// Anthropic API, prompt over the model's window: 400 invalid_request_error.
	// Seen in stackblitz/bolt.new#1748, earendil-works/pi#102, boldsoftware/exe.dev#62.
	known([]int{400, 413}, `prompt is too long: [0-9]{1,12} tokens > [0-9]{1,12} maximum`, ContextWindow, ScopeRequest),
	// Anthropic API, input plus max_tokens over the window: 400.
	known([]int{400}, "input length and `max_tokens` exceed context limit: [0-9]{1,12} \\+ [0-9]{1,12} > [0-9]{1,12}, decrease input length or `max_tokens` and try again",
		ContextWindow, ScopeRequest),

	// Anthropic API refusing history another provider produced (see the
	// repair package, which reads the same messages): 400
	// invalid_request_error, the path counted in numbers.
	known([]int{400}, `messages\.[0-9]{1,6}\.content\.[0-9]{1,6}\.(?:tool_use\.id|tool_use_id|tool_result\.tool_use_id): String should match pattern '\^\[a-zA-Z0-9_-\]\+\$'`,
		Repairable, ScopeRequest),
	known([]int{400}, "messages\\.[0-9]{1,6}\\.content\\.[0-9]{1,6}: Invalid `signature` in `thinking` block",
		Repairable, ScopeRequest),
	known([]int{400}, `messages\.[0-9]{1,6}\.content\.[0-9]{1,6}\.thinking\.signature: Field required`,
		Repairable, ScopeRequest),
}

// knownClass returns the class and scope of a known message, if msg is one
// under this status.
func knownClass(status int, msg string) (Class, string, bool) {
	msg = strings.TrimSpace(msg)
	if msg == "" || len(msg) > maxKnownMessage {
		return None, "", false
	}
	for _, k := range knownMessages {
		if !statusIn(status, k.statuses) || !k.re.MatchString(msg) {
			continue
		}
		return k.class, k.scope, true
	}
	return None, "", false
}

func statusIn(status int, statuses []int) bool {
	for _, s := range statuses {
		if s == status {
			return true
		}
	}
	return false
}
