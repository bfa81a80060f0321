package config_test

import (
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
)

func TestDecodeStrictLines(t *testing.T) {
	var out struct {
		A struct {
			B []struct {
				C string `yaml:"c"`
			} `yaml:"b"`
		} `yaml:"a"`
		D map[string]int `yaml:"d"`
	}
	doc := "a:\n  b:\n    - c: x\n    - c: y\nd:\n  k: 1\n"
	errs := &config.Errors{}
	lines := config.DecodeStrict([]byte(doc), &out, errs)
	if len(errs.List) != 0 {
		t.Fatalf("errors: %v", errs)
	}
	if len(out.A.B) != 2 || out.A.B[1].C != "y" || out.D["k"] != 1 {
		t.Errorf("decoded %+v", out)
	}
	for path, want := range map[string]int{
		"a.b[0].c": 3, "a.b[1]": 4, "a.b[1].c": 4, "d.k": 6,
		// A path that was not set takes the line of its nearest parent.
		"a.b[1].e": 4, "a.z": 2, "d.missing": 6, "nothing": 0, "": 0,
	} {
		if got := lines.At(path); got != want {
			t.Errorf("At(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestDecodeStrictMaps(t *testing.T) {
	var out struct {
		M map[string]struct {
			N int `yaml:"n"`
		} `yaml:"m"`
	}
	doc := "m:\n  a: {n: 1}\n  a: {n: 2}\n  b: {n: x}\n  c: [1]\n  [k]: {n: 3}\n"
	errs := &config.Errors{}
	config.DecodeStrict([]byte(doc), &out, errs)
	want := []struct {
		path, fragment string
		line           int
	}{
		{"m.a", "appears more than once", 3},
		{"m.b.n", "cannot unmarshal !!str `x` into int", 4},
		{"m.c", "want a mapping, found a list", 5},
		{"m", "key a list", 6},
	}
	if len(errs.List) != len(want) {
		t.Fatalf("%d errors, want %d: %v", len(errs.List), len(want), errs)
	}
	for i, w := range want {
		if e := errs.List[i]; e.Path != w.path || e.Line != w.line || !strings.Contains(e.Message, w.fragment) {
			t.Errorf("error %d = %v, want %s at line %d containing %q", i, e, w.path, w.line, w.fragment)
		}
	}
	if out.M["a"].N != 1 {
		t.Errorf("the first of repeated keys should win, got %d", out.M["a"].N)
	}
}

func TestDecodeStrictEmptyDocument(t *testing.T) {
	for _, doc := range []string{"", "\n", "# only a comment\n", "---\n"} {
		var out struct {
			A string `yaml:"a"`
		}
		errs := &config.Errors{}
		config.DecodeStrict([]byte(doc), &out, errs)
		if len(errs.List) != 0 {
			t.Errorf("%q: %v", doc, errs)
		}
	}
}

func TestDecodeStrictAliases(t *testing.T) {
	// A plain alias is read like a copy of its anchor.
	c := mustParse(t, `
naming: {file: naming.yaml}
services:
  - name: a
    match: {pathPrefix: /a}
    partitioning: &p {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: &k {sources: [{header: x-key}]}
  - name: b
    match: {pathPrefix: /b}
    partitioning: *p
    key: *k
`)
	if b := c.Service("b"); b == nil || b.Scheme().Count() != 2 || b.Keyer.Sources()[0].Name != "x-key" {
		t.Errorf("the aliased service was not read like its anchor")
	}
}

// TestDecodeStrictAliasBomb checks that aliases of aliases cannot expand a small file into
// a huge amount of work: the decoder stops with an error instead.
func TestDecodeStrictAliasBomb(t *testing.T) {
	const n = 3000
	var b strings.Builder
	b.WriteString("naming: {file: n.yaml}\nx: &s {header: x}\n")
	b.WriteString("y: &v {name: a, partitioning: {scheme: singleton}, key: {sources: [")
	for range n {
		b.WriteString("*s,")
	}
	b.WriteString("]}}\nservices: [")
	for range n {
		b.WriteString("*v,")
	}
	b.WriteString("]\n")
	_, err := config.Parse([]byte(b.String()), "bomb.yaml")
	if err == nil {
		t.Fatal("Parse accepted an alias bomb")
	}
	msg := err.Error()
	if !strings.Contains(msg, "aliases expand the document") {
		t.Errorf("error does not name the aliases: %.500s", msg)
	}
	// Nine million key sources expanded one by one would give thousands of errors.
	if lines := strings.Count(msg, "\n"); lines > 100 {
		t.Errorf("%d errors: the decoder kept expanding aliases", lines)
	}
}
