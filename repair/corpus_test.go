package repair

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteFuzzCorpus regenerates testdata/fuzz from the fixtures when
// REPAIR_WRITE_CORPUS=1; otherwise it checks the corpus is there.
func TestWriteFuzzCorpus(t *testing.T) {
	t.Parallel()
	type entry struct {
		target string
		values []string // "go test fuzz v1" lines
	}
	var entries []entry
	fuzzSeeds(nil, func(b []byte) {
		body := fmt.Sprintf("[]byte(%q)", b)
		entries = append(entries,
			entry{"FuzzSanitizeToolIDs", []string{body}},
			entry{"FuzzStripThinking", []string{body, "int(0)", "int(0)", "bool(true)"}},
			entry{"FuzzStripThinking", []string{body, "int(3)", "int(1)", "bool(false)"}},
			entry{"FuzzDropFields", []string{body, `string("context_management,container,metadata")`}},
		)
	})
	if os.Getenv("REPAIR_WRITE_CORPUS") != "1" {
		for _, target := range []string{"FuzzSanitizeToolIDs", "FuzzStripThinking", "FuzzDropFields"} {
			files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
			if len(files) < 10 {
				t.Errorf("%s: %d corpus files; run with REPAIR_WRITE_CORPUS=1", target, len(files))
			}
		}
		return
	}
	for _, e := range entries {
		text := "go test fuzz v1\n" + strings.Join(e.values, "\n") + "\n"
		sum := sha256.Sum256([]byte(text))
		dir := filepath.Join("testdata", "fuzz", e.target)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		name := "seed-" + hex.EncodeToString(sum[:8])
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
