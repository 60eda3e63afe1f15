package failover

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"unicode/utf8"

	"github.com/caddy-llm-failover/caddy-llm-failover/internal/jsonscan"
)

func TestScanRequest(t *testing.T) {
	cases := []struct {
		name      string
		body      string
		model     string
		found     bool   // a model was found (its position is known)
		modelJSON string // the bytes at [modelStart:modelEnd] when found; default: quoted model
	}{
		{name: "model then stream", body: `{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[],"stream":true}`,
			model: "claude-sonnet-4-5", found: true},
		{name: "stream first", body: `{"stream":true,"max_tokens":1,"model":"claude-opus-4-1"}`,
			model: "claude-opus-4-1", found: true},
		{name: "stream absent", body: `{"model":"m","messages":[{"role":"user","content":"hi"}]}`,
			model: "m", found: true},
		{name: "stream false", body: `{"model":"m","stream":false}`, model: "m", found: true},
		{name: "stream false first", body: `{"stream":false,"model":"m"}`, model: "m", found: true},
		{name: "stream as a string is not true", body: `{"model":"m","stream":"true"}`, model: "m", found: true},
		{name: "stream as a number is not true", body: `{"model":"m","stream":1}`, model: "m", found: true},
		{name: "stream null", body: `{"stream":null,"model":"m"}`, model: "m", found: true},
		{name: "stream only", body: `{"messages":[],"stream":true}`},
		{name: "nested model and stream keys do not match",
			body: `{"messages":[{"role":"user","content":[{"type":"text","text":"x","model":"evil"}]}],` +
				`"metadata":{"model":"evil2","stream":true,"inner":{"model":"evil3"}},"tools":[{"model":"evil4"}],` +
				`"model":"real","stream":false}`,
			model: "real", found: true},
		{name: "nested model only", body: `{"metadata":{"model":"evil","stream":true}}`},
		{name: "keys inside strings do not match",
			body:  `{"system":"say \"model\":\"evil\", and {\"stream\":true} [","model":"real"}`,
			model: "real", found: true},
		{name: "escaped quote in a key", body: `{"a\"model":"x","model\"":"y","model":"m"}`, model: "m", found: true},
		{name: "brackets inside nested strings",
			body:  `{"tools":[{"description":"use ] and } and [ { \\\" \\ \"}","x":"\\"}],"model":"m","stream":true}`,
			model: "m", found: true},
		{name: "escaped model", body: `{"model":"claude-\"quoted\"-\\back\\-\u00e9\u0041"}`,
			model: "claude-\"quoted\"-\\back\\-éA", found: true, modelJSON: `"claude-\"quoted\"-\\back\\-\u00e9\u0041"`},
		{name: "surrogate pair escape", body: `{"model":"\ud83d\ude00-model"}`, model: "😀-model", found: true,
			modelJSON: `"\ud83d\ude00-model"`},
		{name: "escaped slash", body: `{"model":"a\/b","stream":true}`, model: "a/b", found: true,
			modelJSON: `"a\/b"`},
		{name: "control escapes", body: `{"model":"a\tb\nc\u0000"}`, model: "a\tb\nc\x00", found: true,
			modelJSON: `"a\tb\nc\u0000"`},
		{name: "ends in escaped backslash", body: `{"x":"\\","model":"\\"}`, model: `\`, found: true, modelJSON: `"\\"`},
		{name: "raw UTF-8", body: `{"model":"模型-é"}`, model: "模型-é", found: true},
		{name: "empty model", body: `{"model":"","stream":true}`, model: "", found: true},
		{name: "whitespace everywhere", body: "\n\t{\r\n \"model\" \t:\n \"m\" ,\n\"stream\"\r\n:\ttrue\n}\n",
			model: "m", found: true},
		{name: "whitespace after true", body: `{"stream" : true , "model" : "m" }`, model: "m", found: true},
		{name: "scalars before", body: `{"max_tokens":1024,"temperature":0.7,"top_k":null,"x":true,"y":-1e+10,"model":"m"}`,
			model: "m", found: true},
		{name: "deep nesting before", body: `{"a":[[[[{"b":{"c":[{}]}}]]]],"model":"m"}`, model: "m", found: true},
		{name: "model null then model string", body: `{"model":null,"model":"m"}`, model: "m", found: true},
		{name: "model number", body: `{"model":42,"stream":true}`},
		{name: "duplicate keys: the last wins", body: `{"model":"a","stream":true,"messages":[],"model":"b","stream":false}`,
			model: "b", found: true},
		{name: "duplicate model, the last not a string", body: `{"model":"a","model":null,"stream":true}`},
		{name: "duplicate stream, the last true", body: `{"stream":false,"model":"m","stream":true}`, model: "m", found: true},
		{name: "model object", body: `{"model":{"model":"evil"},"stream":true}`},
		{name: "capitalised key", body: `{"Model":"m","STREAM":true}`},
		{name: "empty object", body: `{}`},
		{name: "empty object with spaces", body: ` { } `},
		{name: "empty", body: ``},
		{name: "spaces", body: "  \n "},
		{name: "array", body: `[{"model":"m","stream":true}]`},
		{name: "string", body: `"model"`},
		{name: "null", body: `null`},
		{name: "number", body: `42`},
		{name: "not JSON", body: `model=m&stream=true`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := []byte(tc.body)
			f := scanRequest(body)
			if f.Model != tc.model {
				t.Errorf("scanRequest(%s) = model %q, want %q", tc.body, f.Model, tc.model)
			}
			if found := f.modelEnd != 0; found != tc.found {
				t.Fatalf("model found = %v, want %v (%+v)", found, tc.found, f)
			}
			if !tc.found {
				return
			}
			want := tc.modelJSON
			if want == "" {
				q, _ := json.Marshal(tc.model)
				want = string(q)
			}
			if got := tc.body[f.modelStart:f.modelEnd]; got != want {
				t.Errorf("model bytes = %s, want %s", got, want)
			}
			if json.Valid(body) {
				var m map[string]any
				if err := json.Unmarshal(body, &m); err == nil {
					if m["model"] != tc.model {
						t.Errorf("encoding/json reads model %q, the scanner %q", m["model"], tc.model)
					}
				}
			}
		})
	}
}

func TestScanRequestTruncated(t *testing.T) {
	full := `{"system":[{"type":"text","text":"a \"quoted\" \\ text {[","cache_control":{"type":"ephemeral"}}],` +
		`"messages":[{"role":"user","content":"hi \u00e9"}],"max_tokens":32000,` +
		`"model":"claude-\"x\"-sonnet","metadata":{"user_id":"u"},"stream":true}`
	ff := scanRequest([]byte(full))
	if ff.Model != `claude-"x"-sonnet` {
		t.Fatalf("full body: %+v", ff)
	}
	for n := 0; n <= len(full); n++ {
		// a fresh slice of exactly n bytes, so reading past it fails loudly
		body := append([]byte(nil), full[:n]...)
		f := scanRequest(body)
		if f.modelEnd == 0 {
			if f.Model != "" {
				t.Fatalf("prefix %d: model %q without a position", n, f.Model)
			}
			continue
		}
		if f.Model != ff.Model || f.modelStart != ff.modelStart || f.modelEnd != ff.modelEnd {
			t.Fatalf("prefix %d: %+v, want the full body's model %+v", n, f, ff)
		}
	}
}

// rbWithModelBody has everything a re-marshal would change: HTML characters
// Go escapes, unicode escapes, odd key order, number forms and spacing.
const rbWithModelBody = `{ "zeta" : 1.50E+3, "system":"<b>a & b</b> \u003c\u003e\u0026 \u00e9 é \/ \ud83d\ude00",` +
	"\n\t\"model\" :  \"claude-3-5-haiku-20241022\" ,\n" +
	`"alpha":[1, 2.0, -0, {"b":null,"a":true}], "messages":[{"role":"user","content":"if a < b && c > d {}"}],` +
	`"stream":true, "extra":"\"quoted\" \\ back"}`

func TestWithModelReplacesOnlyModelBytes(t *testing.T) {
	for _, model := range []string{"glm-4.5-air", "x", "", "a much longer model name than the one it replaces, really", `we"ird<&>\`, "模型"} {
		t.Run(model, func(t *testing.T) {
			body := []byte(rbWithModelBody)
			orig := append([]byte(nil), body...)
			f := scanRequest(body)
			if f.Model != "claude-3-5-haiku-20241022" {
				t.Fatalf("scanRequest = %+v", f)
			}
			out := withModel(body, f, model)
			if !bytes.Equal(body, orig) {
				t.Fatal("withModel modified its input")
			}
			if !bytes.Equal(out[:f.modelStart], body[:f.modelStart]) {
				t.Errorf("prefix changed:\n got %q\nwant %q", out[:f.modelStart], body[:f.modelStart])
			}
			suffix := body[f.modelEnd:]
			if !bytes.HasSuffix(out, suffix) {
				t.Errorf("suffix changed:\n got %q\nwant suffix %q", out, suffix)
			}
			quoted := out[f.modelStart : len(out)-len(suffix)]
			var got string
			if err := json.Unmarshal(quoted, &got); err != nil || got != model {
				t.Errorf("model bytes %s decode to %q, %v; want %q", quoted, got, err, model)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not valid JSON: %s", out)
			}
			var in, res map[string]any
			_ = json.Unmarshal(body, &in)
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatal(err)
			}
			if res["model"] != model {
				t.Errorf("decoded model = %q, want %q", res["model"], model)
			}
			in["model"] = model
			a, _ := json.Marshal(in)
			b, _ := json.Marshal(res)
			if !bytes.Equal(a, b) {
				t.Errorf("other values changed:\n%s\n%s", a, b)
			}
			// scanning the output finds the new model where it was put
			g := scanRequest(out)
			if g.Model != model || g.modelStart != f.modelStart {
				t.Errorf("rescan = %+v", g)
			}
		})
	}
}

func TestWithModelUnchanged(t *testing.T) {
	body := []byte(`{"model":"m","stream":true}`)
	f := scanRequest(body)
	if out := withModel(body, f, "m"); &out[0] != &body[0] || len(out) != len(body) {
		t.Error("withModel to the same model did not return the body itself")
	}
	noModel := []byte(`{"stream":true,"messages":[]}`)
	g := scanRequest(noModel)
	if out := withModel(noModel, g, "x"); !bytes.Equal(out, noModel) {
		t.Errorf("withModel without a model changed the body: %s", out)
	}
	if out := withModel(nil, requestFields{}, "x"); len(out) != 0 {
		t.Errorf("withModel(nil) = %q", out)
	}
}

// A model value that is not a valid JSON string (Go-only escapes such as
// \a, \x41, \101, \' and \U0001F600; raw control characters) makes the
// body invalid JSON: replacing it must not make the body valid, which the
// upstream would then read with a model the client never sent.
func TestScanRequestModelMustBeJSONString(t *testing.T) {
	for _, body := range []string{
		`{"model":"00\a"}`,
		`{"model":"claude-\x41","stream":true}`,
		`{"model":"claude-\101"}`,
		`{"model":"it\'s"}`,
		`{"model":"\U0001F600"}`,
		"{\"model\":\"a\tb\"}",
		"{\"model\":\"a\nb\"}",
		"{\"model\":\"a\x00b\"}",
	} {
		if json.Valid([]byte(body)) {
			t.Fatalf("test input %q is valid JSON", body)
		}
		f := scanRequest([]byte(body))
		if f.modelEnd == 0 {
			continue // not taken for a model: fine
		}
		if out := withModel([]byte(body), f, "x"); json.Valid(out) {
			t.Errorf("scanRequest(%q) reads model %q; withModel turns the invalid body into valid JSON %s", body, f.Model, out)
		}
	}
}

// Upstreams decode JSON with the last duplicate key winning (Go's
// encoding/json, Python's json), so the model they read is the last one:
// a mapping must change that one, or it is bypassed by a body that names
// the model twice.
func TestWithModelDuplicateModelKey(t *testing.T) {
	body := []byte(`{"model":"claude-3-5-haiku","messages":[],"model":"claude-opus-4-1","stream":true}`)
	f := scanRequest(body)
	out := withModel(body, f, "glm-4.6")
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatal(err)
	}
	if m["model"] != "glm-4.6" {
		t.Errorf("scanRequest reported model %q; after withModel an upstream reads model %q, want %q\n%s",
			f.Model, m["model"], "glm-4.6", out)
	}
}

// rbTopLevel walks the top level of a JSON object and returns its keys as
// written (raw, quotes included); ok is false when body is not a valid JSON
// object.
func rbTopLevel(body []byte) (keys []string, ok bool) {
	if !json.Valid(body) {
		return nil, false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return nil, false
	}
	it := jsonscan.Object(body)
	for it.Next() {
		m := &it.Member
		keys = append(keys, `"`+string(m.Key)+`"`)
	}
	return keys, true
}

// requestModel stops at the first model only when the rest cannot hold
// another: each spelling of a later key is read as the last one.
func TestRequestModelLaterKey(t *testing.T) {
	for _, later := range []string{`"model"`, `"\u006dodel"`, `"m\u006Fdel"`, `"mo\u0064el"`, `"mod\u0065l"`,
		`"mode\u006c"`, `"mode\u006C"`, `"\u006d\u006f\u0064\u0065\u006c"`} {
		body := []byte(`{"model":"first","messages":[{"role":"user","content":"6 \u0036 \u006"}],` + later + `:"last"}`)
		if f := requestModel(body); f.Model != "last" {
			t.Errorf("%s: requestModel = %q, want the later key's", body, f.Model)
		}
	}
	for _, rest := range []string{`"messages":[]`, `"x":"\u0066 \u0036d 6d u006d \u006"`, `"m":"model"`} {
		body := []byte(`{"model":"first",` + rest + `}`)
		if mayHoldModelKey(body[len(`{"model":"first"`):]) && !bytes.Contains([]byte(rest), []byte(`"model"`)) {
			t.Errorf("%s: a full scan for nothing", rest)
		}
		if f := requestModel(body); f.Model != "first" {
			t.Errorf("%s: requestModel = %q", body, f.Model)
		}
	}
}

// Reading the model of an ordinary request allocates nothing once its name
// was seen: clients name the same few models request after request.
func TestRequestModelNoAllocation(t *testing.T) {
	body := bytes.ReplaceAll(rbClaudeCodeBody(64<<10), []byte(`,"model":"not-this-one"`), nil)
	nested := rbClaudeCodeBody(64 << 10) // nested "model" keys: the whole top level is read
	for _, b := range [][]byte{body, nested} {
		requestModel(b)
		allocs := testing.AllocsPerRun(20, func() {
			if f := requestModel(b); f.Model != "claude-sonnet-4-5-20250929" {
				t.Fatalf("model %q", f.Model)
			}
		})
		if allocs != 0 {
			t.Errorf("%v allocations, want 0", allocs)
		}
	}
}

// Names share slots of the cache; every reader, concurrent or not, gets
// the name its own body holds.
func TestModelNameCache(t *testing.T) {
	long := strings.Repeat("m", maxModelName+1)
	names := []string{long, "", "é", `a"b`}
	for i := range 40 {
		names = append(names, fmt.Sprintf("model-%d", i))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				want := names[(i+g)%len(names)]
				q, _ := json.Marshal(want)
				if f := requestModel([]byte(`{"model":` + string(q) + `}`)); f.Model != want {
					t.Errorf("model %q, want %q", f.Model, want)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func FuzzScanRequest(f *testing.F) {
	for _, seed := range []string{
		`{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"hi"}],"stream":true}`,
		`{"stream":true,"model":"m"}`,
		`{"messages":[{"model":"evil"}],"model":"real"}`,
		`{"model":"a\"b\\c\u00e9\ud83d\ude00"}`,
		`{"model":null}`,
		`{"model":"x"}`,
		`{"model":"a","stream":true,"model":"b","stream":false}`,
		` { "model" : "m" , "stream" : false } `,
		`[{"model":"m"}]`,
		`{"model":"m"`,
		`{"model":"m\`,
		`{"a":{"b":[1,2,{"c":"]}"}]},"model":"m","stream":true}`,
		rbWithModelBody,
		``,
		`{"model":"a","mod\u0065l":"b"}`,
		`{"\u006d\u006f\u0064\u0065\u006c":"esc","stream":true}`,
		`{"model":"a","messages":[{"model":"nested"}],"stream":tru`,
		`{"model":"a","x":"\u00e9\u006c","model":1}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		orig := append([]byte(nil), body...)
		fl := scanRequest(body)
		// the cheap path reads the same model as the full scan
		if rm := requestModel(body); rm.Model != fl.Model || rm.modelStart != fl.modelStart || rm.modelEnd != fl.modelEnd {
			if json.Valid(body) {
				t.Fatalf("requestModel %+v, scanRequest %+v", rm, fl)
			}
		}
		if !bytes.Equal(body, orig) {
			t.Fatal("scanRequest modified its input")
		}
		if fl.modelEnd == 0 {
			if fl.Model != "" || fl.modelStart != 0 {
				t.Fatalf("model %q at %d without an end", fl.Model, fl.modelStart)
			}
			return
		}
		if fl.modelStart <= 0 || fl.modelEnd > len(body) || fl.modelEnd-fl.modelStart < 2 ||
			body[fl.modelStart] != '"' || body[fl.modelEnd-1] != '"' {
			t.Fatalf("model bounds [%d:%d] of %d bytes are not a string", fl.modelStart, fl.modelEnd, len(body))
		}
		out := withModel(body, fl, "x")
		if !bytes.Equal(body, orig) {
			t.Fatal("withModel modified its input")
		}
		if !json.Valid(body[fl.modelStart:fl.modelEnd]) {
			t.Fatalf("model bytes %q are not a JSON string", body[fl.modelStart:fl.modelEnd])
		}
		if vin, vout := json.Valid(body), json.Valid(out); vin != vout {
			t.Fatalf("input valid=%v, output valid=%v\nin:  %q\nout: %q", vin, vout, body, out)
		}
		keys, isObject := rbTopLevel(body)
		if !isObject {
			return
		}
		var in map[string]any
		_ = json.Unmarshal(body, &in)
		inModel, isString := in["model"].(string)
		if !isString {
			return
		}
		_ = keys // a key spelled with escapes is the same key
		if utf8.Valid(body) && fl.Model != inModel {
			t.Fatalf("scanner model %q, encoding/json %q", fl.Model, inModel)
		}
		var res map[string]any
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("output does not decode: %v\n%q", err, out)
		}
		if res["model"] != "x" {
			t.Fatalf("output model = %v, want x\n%q", res["model"], out)
		}
	})
}

// rbClaudeCodeBody builds a realistic Claude Code request of about size
// bytes: model first, a long system prompt, tool definitions, a history of
// tool calls with code (full of quotes, backslashes and newlines), stream
// last.
func rbClaudeCodeBody(size int) []byte {
	var b bytes.Buffer
	b.WriteString(`{"model":"claude-sonnet-4-5-20250929","max_tokens":32000,"temperature":1,`)
	b.WriteString(`"system":[{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude.","cache_control":{"type":"ephemeral"}},`)
	sys, _ := json.Marshal(strings.Repeat("You are an interactive CLI tool that helps users with software engineering tasks. "+
		"IMPORTANT: Assist with defensive security tasks only. Use the <example> tags & follow \"instructions\".\n", 40))
	b.WriteString(`{"type":"text","text":` + string(sys) + `,"cache_control":{"type":"ephemeral"}}],`)
	b.WriteString(`"tools":[`)
	for i := range 16 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"name":"Tool%d","description":"Performs operation %d. Usage:\n- The path must be absolute\n- Use \"quotes\" for paths with spaces","input_schema":{"type":"object","properties":{"file_path":{"type":"string","description":"The absolute path"},"limit":{"type":"number"},"replace_all":{"type":"boolean","default":false}},"required":["file_path"],"additionalProperties":false,"$schema":"http://json-schema.org/draft-07/schema#"}}`, i, i)
	}
	b.WriteString(`],"messages":[`)
	code, _ := json.Marshal("func main() {\n\tfmt.Printf(\"%s\\n\", `raw`)\n\tif a < b && c > d {\n\t\treturn \"\\\\\"\n\t}\n}\n")
	first := true
	for i := 0; b.Len() < size-200; i++ {
		if !first {
			b.WriteByte(',')
		}
		first = false
		id := fmt.Sprintf("toolu_01%022d", i)
		fmt.Fprintf(&b, `{"role":"assistant","content":[{"type":"thinking","thinking":"Let me look at the file %d.","signature":"EqQBCkYIBxgCKkA%040d"},{"type":"tool_use","id":"%s","name":"Read","input":{"file_path":"/src/main%d.go"}}]},`, i, i, id, i)
		fmt.Fprintf(&b, `{"role":"user","content":[{"type":"tool_result","tool_use_id":"%s","content":%s},{"type":"text","text":"<system-reminder>model: keep going</system-reminder>","model":"not-this-one"}]}`, id, code)
	}
	b.WriteString(`],"metadata":{"user_id":"user_abc_account_def_session_0123"},"stream":true}`)
	return b.Bytes()
}

func TestRbClaudeCodeBodyIsRealistic(t *testing.T) {
	body := rbClaudeCodeBody(200 << 10)
	if !json.Valid(body) || len(body) < 190<<10 || len(body) > 210<<10 {
		t.Fatalf("benchmark body: valid=%v, %d bytes", json.Valid(body), len(body))
	}
	f := scanRequest(body)
	if f.Model != "claude-sonnet-4-5-20250929" {
		t.Fatalf("scanRequest = %+v", f)
	}
	out := withModel(body, f, "glm-4.6")
	var m struct {
		Model  string `json:"model"`
		Stream bool   `json:"stream"`
	}
	if err := json.Unmarshal(out, &m); err != nil || m.Model != "glm-4.6" || !m.Stream {
		t.Fatalf("after withModel: %+v, %v", m, err)
	}
}

func BenchmarkScanRequest(b *testing.B) {
	body := rbClaudeCodeBody(200 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		f := scanRequest(body)
		if f.Model == "" {
			b.Fatal("model not found")
		}
	}
}

func BenchmarkWithModel(b *testing.B) {
	body := rbClaudeCodeBody(200 << 10)
	f := scanRequest(body)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		_ = withModel(body, f, "glm-4.6")
	}
}

// BenchmarkScanRequestBaselineJSON is what scanRequest saves: reading the
// same field with encoding/json.
func BenchmarkScanRequestBaselineJSON(b *testing.B) {
	body := rbClaudeCodeBody(200 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		var m struct {
			Model string `json:"model"`
		}
		if err := json.Unmarshal(body, &m); err != nil || m.Model == "" {
			b.Fatal(err)
		}
	}
}

// BenchmarkRequestModel is the happy path: a Claude Code body whose only
// "model" key is the first one (no full scan).
func BenchmarkRequestModel(b *testing.B) {
	body := bytes.ReplaceAll(rbClaudeCodeBody(200<<10), []byte(`,"model":"not-this-one"`), nil)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if f := requestModel(body); f.Model != "claude-sonnet-4-5-20250929" {
			b.Fatal(f.Model)
		}
	}
}

// BenchmarkRequestModelNestedKeys: nested "model" keys force the full scan.
func BenchmarkRequestModelNestedKeys(b *testing.B) {
	body := rbClaudeCodeBody(200 << 10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if f := requestModel(body); f.Model != "claude-sonnet-4-5-20250929" {
			b.Fatal(f.Model)
		}
	}
}
