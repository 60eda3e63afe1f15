package streaminspect_test

import (
	"fmt"
	"os"

	"github.com/caddy-llm-failover/caddy-llm-failover/streaminspect"
)

func ExampleParser() {
	var p streaminspect.Parser
	handle := func(ev *streaminspect.Event) bool {
		// ev.Data is only valid here; copy it to keep it.
		fmt.Printf("%q %q\n", ev.Type, ev.Data)
		return true
	}
	p.Feed([]byte("event: ping\ndata: {}\n\ndata: a\r"), handle)
	p.Feed([]byte("\ndata: b\n\n"), handle)
	// Output:
	// "ping" "{}"
	// "" "a\nb"
}

func ExampleInspector() {
	var in streaminspect.Inspector // HoldFirstContent
	for _, chunk := range []string{
		"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n",
		"event: ping\ndata: {\"type\": \"ping\"}\n\n",
		"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
	} {
		v := in.Feed([]byte(chunk))
		fmt.Println(v)
		if v == streaminspect.Failed {
			fmt.Println(in.Error())
		}
	}
	// Output:
	// pending
	// pending
	// failed
	// overloaded_error: Overloaded
}

func ExampleWatcher() {
	var w streaminspect.Watcher
	w.Feed([]byte("data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n"))
	w.Feed([]byte("data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2}}\n\ndata: [DONE]\n\n"))
	_, failed := w.Failed()
	fmt.Printf("terminal=%v failed=%v %+v\n", w.Terminal(), failed, w.Usage())
	// Output:
	// terminal=true failed=false {InputTokens:9 OutputTokens:2 CacheReadTokens:0 CacheCreationTokens:0}
}

func ExampleErrorEvent() {
	os.Stdout.Write(streaminspect.ErrorEvent("overloaded_error", "Upstream said \"no\"\n"))
	// Output:
	// event: error
	// data: {"type":"error","error":{"type":"overloaded_error","message":"Upstream said \"no\"\n"}}
}
