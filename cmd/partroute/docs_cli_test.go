package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestDocsCommands runs the commands the documentation shows and compares what they print with
// what the documentation says they print. The rules, which the documents follow:
//
//   - A session is a fenced block whose first line begins with "$ ". Each line that begins with
//     "$ " is a command; the lines up to the next command are what it prints, standard output
//     then standard error, exactly. There are no placeholders: every example runs on files in
//     the repository, from the repository root, so its output is the same everywhere.
//   - A command is `partroute ARGS` (run in-process), `cat FILE` (prints the file) or `echo $?`
//     (prints the exit code of the command before it). Arguments are split as a shell would,
//     with single and double quotes; a line ending in " \" continues on the next.
//   - A command that is not followed by `echo $?` must exit with 0.
//   - Commands that need a running server, Envoy or etcd (serve, demo, naming, loadtest, or
//     another program) are not run: their block is marked by the comment line
//     "<!-- not run: REASON -->" right before it. An unmarked session with such a command
//     fails the test, so that none is skipped unnoticed.
//   - A yaml block right after "<!-- file: PATH -->" (or an HTML comment ending in
//     "file: PATH") shows the whole of the file PATH, which the commands use: the block must
//     be that file's content.
func TestDocsCommands(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	docs := []string{"docs/cli.md", "docs/configuration.md", "docs/partitioning.md"}
	texts := map[string]string{}
	for _, doc := range docs {
		data, err := os.ReadFile(filepath.Join(root, doc))
		if err != nil {
			t.Fatal(err)
		}
		texts[doc] = string(data)
	}
	// The commands use paths relative to the repository root, as a reader types them there.
	t.Chdir(root)
	sessions, files := 0, 0
	for _, doc := range docs {
		for _, b := range docBlocks(texts[doc]) {
			where := fmt.Sprintf("%s:%d", doc, b.line)
			if b.file != "" && b.lang == "yaml" {
				files++
				data, err := os.ReadFile(b.file)
				if err != nil {
					t.Errorf("%s: the block shows %s, which cannot be read: %v", where, b.file, err)
				} else if string(data) != b.text {
					t.Errorf("%s: the block is not the content of %s:\n--- doc\n%s--- file\n%s", where, b.file, b.text, data)
				}
				continue
			}
			if !strings.HasPrefix(b.text, "$ ") {
				if docCommand.MatchString(b.text) {
					t.Errorf("%s: a block has a command line but does not begin with one: it would not be run", where)
				}
				continue
			}
			if b.notRun != "" {
				continue
			}
			sessions++
			for _, p := range checkDocSession(where, b.text) {
				t.Error(p)
			}
		}
	}
	if sessions == 0 || files == 0 {
		t.Errorf("found %d sessions and %d files in the docs, want some of each", sessions, files)
	}
	t.Logf("%d sessions and %d files checked", sessions, files)
}

// docBlock is one fenced block of a document.
type docBlock struct {
	line int
	lang string
	text string
	// notRun is the reason of a "not run" mark, and file the path of a "file" mark.
	notRun, file string
}

var (
	// docFence opens a fenced block, which may be indented (in a list item).
	docFence  = regexp.MustCompile("(?m)^( *)```([a-z]*)\n")
	docNotRun = regexp.MustCompile(`<!-- not run: ([^>]*?) -->\n$`)
	docFile   = regexp.MustCompile(`<!--[^>]*\bfile: (\S+) -->\n$`)
	// docCommand is a command line anywhere in a block.
	docCommand = regexp.MustCompile(`(?m)^\$ `)
)

// docBlocks returns the fenced blocks of a document, without their indentation, each with the
// mark on the line before it.
func docBlocks(text string) []docBlock {
	var blocks []docBlock
	for pos := 0; ; {
		m := docFence.FindStringSubmatchIndex(text[pos:])
		if m == nil {
			return blocks
		}
		indent := text[pos+m[2] : pos+m[3]]
		start := pos + m[1]
		end := strings.Index(text[start:], indent+"```")
		if end < 0 {
			return blocks
		}
		before := strings.TrimSuffix(text[:pos+m[0]], "\n")
		if i := strings.LastIndex(before, "\n"); i >= 0 {
			before = before[i+1:]
		}
		before = strings.TrimLeft(before, " ") + "\n"
		var body strings.Builder
		for _, line := range strings.SplitAfter(text[start:start+end], "\n") {
			body.WriteString(strings.TrimPrefix(line, indent))
		}
		b := docBlock{line: strings.Count(text[:start], "\n") + 1, lang: text[pos+m[4] : pos+m[5]], text: body.String()}
		if n := docNotRun.FindStringSubmatch(before); n != nil {
			b.notRun = n[1]
		}
		if f := docFile.FindStringSubmatch(before); f != nil {
			b.file = f[1]
		}
		blocks = append(blocks, b)
		pos = start + end + len(indent) + len("```")
	}
}

// docRunnable are the partroute commands a session may run: they need nothing but files.
var docRunnable = map[string]bool{"validate": true, "resolve": true, "version": true, "envoy-bootstrap": true, "help": true, "-h": true}

// checkDocSession runs the commands of one session and returns how their output or exit codes
// differ from what the session shows.
func checkDocSession(where, text string) []string {
	type step struct {
		command string
		output  strings.Builder
	}
	var steps []*step
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		if cmd, ok := strings.CutPrefix(line, "$ "); ok {
			for strings.HasSuffix(cmd, " \\") && i+1 < len(lines) {
				i++
				cmd = strings.TrimSuffix(cmd, "\\") + strings.TrimSpace(lines[i])
			}
			steps = append(steps, &step{command: cmd})
			continue
		}
		if len(steps) == 0 {
			return []string{fmt.Sprintf("%s: the session does not begin with a command", where)}
		}
		steps[len(steps)-1].output.WriteString(line + "\n")
	}
	var problems []string
	// last is the command whose exit code echo $? prints, and echoed whether it has been.
	var last *step
	lastCode, echoed := 0, true
	unshown := func() {
		if !echoed && lastCode != 0 {
			problems = append(problems, fmt.Sprintf("%s: %q exited with %d; show it with echo $?", where, last.command, lastCode))
		}
	}
	for _, s := range steps {
		var got string
		if s.command == "echo $?" {
			if last == nil {
				return append(problems, fmt.Sprintf("%s: echo $? comes before any command", where))
			}
			got, echoed = strconv.Itoa(lastCode)+"\n", true
		} else {
			args, err := docSplit(s.command)
			if err != nil || len(args) == 0 {
				return append(problems, fmt.Sprintf("%s: %q cannot be split into arguments: %v", where, s.command, err))
			}
			code := 0
			switch {
			case args[0] == "cat" && len(args) == 2:
				data, err := os.ReadFile(args[1])
				if err != nil {
					return append(problems, fmt.Sprintf("%s: %s: %v", where, s.command, err))
				}
				got = string(data)
			case args[0] == "partroute" && len(args) > 1 && docRunnable[args[1]]:
				var stdout, stderr bytes.Buffer
				code = run(args[1:], &stdout, &stderr)
				got = stdout.String() + stderr.String()
			default:
				return append(problems, fmt.Sprintf("%s: %q needs more than files to run: mark the block <!-- not run: REASON -->", where, s.command))
			}
			unshown()
			last, lastCode, echoed = s, code, false
		}
		if want := s.output.String(); got != want {
			problems = append(problems, fmt.Sprintf("%s: $ %s\n--- printed\n%s--- the doc shows\n%s", where, s.command, got, want))
		}
	}
	unshown()
	return problems
}

// docSplit splits a command line into arguments as a shell would, with single quotes, double
// quotes and backslashes, and nothing else (no variables, no globs).
func docSplit(line string) ([]string, error) {
	var args []string
	var cur strings.Builder
	inArg := false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inArg {
				args, inArg = append(args, cur.String()), false
				cur.Reset()
			}
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("unclosed '")
			}
			cur.WriteString(line[i+1 : i+1+j])
			i, inArg = i+1+j, true
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && strings.IndexByte(`"\$`+"`", line[i+1]) >= 0 {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i == len(line) {
				return nil, fmt.Errorf("unclosed \"")
			}
			inArg = true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inArg = true
		default:
			cur.WriteByte(c)
			inArg = true
		}
	}
	if inArg {
		args = append(args, cur.String())
	}
	return args, nil
}

// The rules of TestDocsCommands hold: marks are read, drift and unshown exit codes are found,
// and a command that needs more than files is refused unless its block is marked.
func TestDocsCommandRules(t *testing.T) {
	doc := "text\n\n<!-- not run: needs Envoy -->\n```\n$ partroute demo -once\n```\n\n" +
		"<!-- file: docs/examples/shop/order.json -->\n```yaml\nx: 1\n```\n" +
		"```sh\n$ partroute version\npartroute " + version + "\n```\n" +
		"- an item:\n\n  <!-- not run: needs etcd -->\n  ```\n  $ partroute naming get\n    x\n  ```\n"
	blocks := docBlocks(doc)
	if len(blocks) != 4 || blocks[3].notRun != "needs etcd" || blocks[3].text != "$ partroute naming get\n  x\n" || blocks[0].notRun != "needs Envoy" || blocks[0].text != "$ partroute demo -once\n" ||
		blocks[1].file != "docs/examples/shop/order.json" || blocks[1].lang != "yaml" || blocks[1].text != "x: 1\n" ||
		blocks[2].notRun != "" || blocks[2].file != "" || blocks[2].line != 13 {
		t.Errorf("docBlocks = %+v", blocks)
	}
	t.Chdir(filepath.Join("..", ".."))
	for _, c := range []struct {
		session string
		// problem is a fragment of the one problem expected; empty for none.
		problem string
	}{
		{"$ partroute version\npartroute " + version + "\n", ""},
		{"$ partroute version\npartroute 0.0.0\n", "--- printed\npartroute " + version + "\n--- the doc shows\npartroute 0.0.0\n"},
		{"$ partroute validate\n$ echo $?\n1\n", "--- printed\npartroute validate: -config is required"},
		{"$ partroute frobnicate\n", `needs more than files to run`},
		{"$ partroute serve -config envoy-config/examples/partroute.yaml\n", `needs more than files to run: mark the block <!-- not run: REASON -->`},
		{"$ etcdctl get x\n", `needs more than files to run`},
		{"$ partroute resolve -config envoy-config/examples/partroute.yaml GET http://api.example.com/api/users\n{\n", `exited with 2; show it with echo $?`},
		{"$ cat docs/examples/shop/order.json\n{}\n", "--- the doc shows\n{}\n"},
		{"$ echo $?\n0\n", "echo $? comes before any command"},
	} {
		problems := checkDocSession("doc", c.session)
		switch {
		case c.problem == "" && len(problems) > 0:
			t.Errorf("%q: %q, want no problem", c.session, problems)
		case c.problem != "" && (len(problems) == 0 || !strings.Contains(problems[len(problems)-1], c.problem)):
			t.Errorf("%q: %q, want a problem with %q", c.session, problems, c.problem)
		}
	}
}

func TestDocSplit(t *testing.T) {
	for _, c := range []struct {
		line string
		want []string
	}{
		{"partroute version", []string{"partroute", "version"}},
		{"partroute resolve -H 'cookie: a=b; session=abc123' GET http://h/", []string{"partroute", "resolve", "-H", "cookie: a=b; session=abc123", "GET", "http://h/"}},
		{`partroute resolve -d '{"customer":{"id":12}}' POST  http://h/`, []string{"partroute", "resolve", "-d", `{"customer":{"id":12}}`, "POST", "http://h/"}},
		{`a "b \"c\" d" e\ f ''`, []string{"a", `b "c" d`, "e f", ""}},
		{`a"b"'c'`, []string{"abc"}},
	} {
		got, err := docSplit(c.line)
		if err != nil || strings.Join(got, "|") != strings.Join(c.want, "|") || len(got) != len(c.want) {
			t.Errorf("docSplit(%q) = %q, %v; want %q", c.line, got, err, c.want)
		}
	}
	for _, bad := range []string{`a 'b`, `a "b`} {
		if _, err := docSplit(bad); err == nil {
			t.Errorf("docSplit(%q) accepted", bad)
		}
	}
}
