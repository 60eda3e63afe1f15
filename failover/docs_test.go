package failover

import (
	"bufio"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
)

// fragmentMarker, as the first line of a ```caddy block, marks a block
// that is deliberately not a complete config, so that a reader does not
// paste it as one: the docs test adapts it inside a site (or, when the
// line says "inside llm_failover", inside llm_failover in a site). A
// syntax summary ("# fragment: the syntax ...") is not adapted. Every
// other block must adapt as it is.
const fragmentMarker = "# fragment"

// caddyBlock is one ```caddy block of a Markdown file.
type caddyBlock struct {
	line int // of the opening fence, 1-based
	text string
}

func caddyBlocks(t *testing.T, path string) []caddyBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []caddyBlock
	var cur *caddyBlock
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && (trimmed == "```caddy" || trimmed == "```Caddyfile" || trimmed == "```caddyfile"):
			cur = &caddyBlock{line: n}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, *cur)
			cur = nil
		case cur != nil:
			cur.text += line + "\n"
		}
	}
	if cur != nil {
		t.Fatalf("%s:%d: unclosed code block", path, cur.line)
	}
	return blocks
}

// siteAddress matches the first line of a complete Caddyfile: global
// options or a site address.
var siteAddress = regexp.MustCompile(`^(\{|[a-z]+://|[\w.\[\]:-]*:\d+|localhost|[\w-]+(\.[\w-]+)+)`)

// startsWhole says whether a block is a whole Caddyfile: its first line
// that is not a comment is global options or a site address.
func startsWhole(text string) bool {
	for _, line := range strings.Split(text, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		return siteAddress.MatchString(line)
	}
	return false
}

// adaptable turns a block into the Caddyfile the docs test adapts: a whole
// block as it is; a fragment inside a site, or inside llm_failover in a
// site; ok is false for a syntax summary, which is not adapted.
func adaptable(text string) (caddyfile string, ok bool) {
	first, _, _ := strings.Cut(text, "\n")
	switch {
	case !strings.HasPrefix(first, fragmentMarker):
		return text, true
	case strings.Contains(first, "syntax"):
		return "", false
	case strings.Contains(first, "inside llm_failover"):
		return "http://127.0.0.1:4181 {\nllm_failover {\n" + text + "}\n}\n", true
	}
	return "http://127.0.0.1:4181 {\n" + text + "}\n", true
}

// Every ```caddy block of the README, and Caddyfile.example, works when
// pasted: it adapts with Caddy's own Caddyfile adapter. A failure names
// the block's line in the file.
func TestDocsCaddyfilesAdapt(t *testing.T) {
	blocks := caddyBlocks(t, filepath.Join("..", "README.md"))
	if len(blocks) < 5 {
		t.Fatalf("README.md: found %d caddy blocks; is the fence still ```caddy?", len(blocks))
	}
	example, err := os.ReadFile(filepath.Join("..", "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	type doc struct {
		file string
		caddyBlock
	}
	var docs []doc
	for _, b := range blocks {
		docs = append(docs, doc{"README.md", b})
	}
	docs = append(docs, doc{"Caddyfile.example", caddyBlock{line: 1, text: string(example)}})
	for _, d := range docs {
		fragment := strings.HasPrefix(d.text, fragmentMarker)
		if !fragment && !startsWhole(d.text) {
			t.Errorf("%s:%d: the caddy block starts inside a site, so it fails when pasted as a Caddyfile: make it whole, or mark it with a first line %q\n%s",
				d.file, d.line, fragmentMarker, d.text)
			continue
		}
		if fragment && startsWhole(d.text) {
			t.Errorf("%s:%d: the caddy block is whole but marked %q", d.file, d.line, fragmentMarker)
		}
		text, ok := adaptable(d.text)
		if !ok {
			continue
		}
		if _, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(text), nil); err != nil {
			t.Errorf("%s:%d: the caddy block does not adapt: %v\n%s", d.file, d.line, err, d.text)
		}
	}
}

// The README names the Go version go.mod asks for, points only to files in
// the repository, and lists every field of GET /llm/providers.
func TestReadmeFacts(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindSubmatch(gomod)
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	if !strings.Contains(string(readme), "Go "+string(goVersion[1])) {
		t.Errorf("README.md does not name Go %s, the version go.mod asks for", goVersion[1])
	}

	for _, m := range regexp.MustCompile(`\]\(([^)#\s]+)[^)]*\)`).FindAllStringSubmatch(string(readme), -1) {
		target := m[1]
		if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
			continue
		}
		if _, err := os.Stat(filepath.Join("..", target)); err != nil {
			t.Errorf("README.md links to %s, which is not in the repository", target)
		}
	}
	if strings.Contains(string(readme), "DESIGN.md") {
		t.Error("README.md names DESIGN.md, which is not in the repository")
	}

	// the status fields, as documented next to `curl .../llm/providers`
	i := strings.Index(string(readme), "/llm/providers ")
	if i < 0 {
		t.Fatal("README.md has no `curl .../llm/providers` line")
	}
	doc := string(readme[i:])
	doc = doc[:strings.Index(doc, "```")]
	st := reflect.TypeFor[ProviderStatus]()
	for f := range st.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && !regexp.MustCompile(`\b`+name+`\b`).MatchString(doc) {
			t.Errorf("README.md's list of status fields lacks %q", name)
		}
	}
	for _, m := range regexp.MustCompile(`\b[a-z]+(_[a-z]+)+\b`).FindAllString(doc, -1) {
		if _, ok := st.FieldByNameFunc(func(n string) bool {
			f, _ := st.FieldByName(n)
			tag, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			return tag == m
		}); !ok {
			t.Errorf("README.md's list of status fields names %q, which GET /llm/providers does not have", m)
		}
	}
}

// ARCHITECTURE.md names every file of this package and every internal
// package, so it stays current.
func TestArchitectureNamesEveryFile(t *testing.T) {
	arch, err := os.ReadFile(filepath.Join("..", "ARCHITECTURE.md"))
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("*.go")
	for _, f := range files {
		if !strings.HasSuffix(f, "_test.go") && !strings.Contains(string(arch), "`"+f+"`") {
			t.Errorf("ARCHITECTURE.md does not name failover/%s: add it to the table of files", f)
		}
	}
	internal, _ := filepath.Glob(filepath.Join("..", "internal", "*"))
	for _, dir := range internal {
		if name := "internal/" + filepath.Base(dir); !strings.Contains(string(arch), "`"+name+"`") {
			t.Errorf("ARCHITECTURE.md does not name %s: add it to the table of packages", name)
		}
	}
	if len(internal) < 3 {
		t.Errorf("found %d internal packages; is the test run from failover/?", len(internal))
	}
}
