package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
)

// TestDocsConfigurationsParse keeps the documentation honest: every YAML example in docs/
// that is a whole configuration (it has both naming: and services: at the top level) must
// load.
func TestDocsConfigurationsParse(t *testing.T) {
	docs, err := filepath.Glob(filepath.Join("..", "..", "docs", "*.md"))
	if err != nil || len(docs) == 0 {
		t.Fatalf("no docs found: %v", err)
	}
	// A block right after the comment <!-- example with errors: not expected to load --> shows
	// what partroute says about a broken file, and is skipped.
	block := regexp.MustCompile("(?s)(<!-- example with errors[^>]*-->\n)?```yaml\n(.*?)```")
	checked := 0
	for _, doc := range docs {
		text, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range block.FindAllStringSubmatch(string(text), -1) {
			if m[1] != "" {
				continue
			}
			y := m[2]
			if !regexp.MustCompile(`(?m)^naming:`).MatchString(y) || !regexp.MustCompile(`(?m)^services:`).MatchString(y) {
				continue
			}
			checked++
			if _, err := config.Parse([]byte(y), filepath.Join(t.TempDir(), "partroute.yaml")); err != nil {
				t.Errorf("%s: an example configuration does not load:\n%s\n%v", filepath.Base(doc), strings.TrimSpace(y), err)
			}
		}
	}
	if checked == 0 {
		t.Error("found no whole configuration in the docs to check")
	}
	t.Logf("%d example configurations checked", checked)
}
