package repair_test

import (
	"fmt"

	"github.com/caddy-llm-failover/caddy-llm-failover/repair"
)

// A proxy about to send a conversation to "anthropic" that an earlier
// failover sent to "zai": the thinking block zai signed goes, zai's tool ids
// are rewritten, and every other byte stays as the client sent it.
func Example() {
	body := []byte(`{"model":"claude-sonnet-4-5","messages":[` +
		`{"role":"user","content":"list <files> & count"},` +
		`{"role":"assistant","content":[{"type":"thinking","thinking":"ls","signature":"zai-sig"},` +
		`{"type":"tool_use","id":"functions.Bash:0","name":"Bash","input":{"command":"ls"}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"functions.Bash:0","content":"a.go"}]}]}`)

	book := repair.NewSignatureBook(0)
	book.Record("zai", [][]byte{[]byte("zai-sig")}) // seen in zai's response

	body, stripped, _ := repair.StripThinking(body, book.Foreign(body, "anthropic"))
	body, renamed, _ := repair.SanitizeToolIDs(body)
	fmt.Println(stripped, renamed)
	fmt.Println(string(body))
	// Output:
	// 1 2
	// {"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"list <files> & count"},{"role":"assistant","content":[{"type":"tool_use","id":"functions_Bash_0_a97d1507","name":"Bash","input":{"command":"ls"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"functions_Bash_0_a97d1507","content":"a.go"}]}]}
}

// The reactive path: a provider refused the request; the error says which
// repair to make before retrying it once.
func ExampleParseRefusal() {
	for _, msg := range []string{
		"messages.1.content.0.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
		"messages.3.content.0: Invalid `signature` in `thinking` block",
		"Unexpected value(s) `context-management-2025-06-27` for the `anthropic-beta` header. Please consult our documentation.",
		"prompt is too long: 210000 tokens > 200000 maximum",
	} {
		r := repair.ParseRefusal(msg)
		fmt.Println(r.Kind, r.Blocks, r.Names)
	}
	// Output:
	// tool_ids [{1 0}] []
	// thinking [{3 0}] []
	// betas [] [context-management-2025-06-27]
	// none [] []
}

func ExampleDropBetas() {
	fmt.Println(repair.DropBetas("claude-code-20250219,oauth-2025-04-20,context-management-2025-06-27",
		[]string{"oauth-2025-04-20", "context-management-*"}))
	fmt.Println(repair.DropQuery("beta=true", []string{"beta"}) == "")
	// Output:
	// claude-code-20250219
	// true
}
