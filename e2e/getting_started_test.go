package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
)

// gettingStartedDoc is the page whose every command TestGettingStarted runs.
const gettingStartedDoc = "../docs/getting-started.md"

// gsStep is one thing the reader of the page does: write a file, or run a command.
type gsStep struct {
	line int // the line of the page it comes from, for messages

	// file and content: a file the reader writes, from a ```yaml block whose first line is
	// "# file: NAME". A later block of the same name replaces the file.
	file, content string

	// command: a command line from a ```console block ("$ " and the command), followed in the
	// block by the lines it prints, want. A command ending in " &" runs in the background.
	command    string
	background bool
	want       []string
}

var (
	gsFileLine = regexp.MustCompile(`^# file: ([A-Za-z0-9._-]+)$`)
	// gsLoopbackAddr is every address the page shows; each port is replaced by a free one.
	gsLoopbackAddr = regexp.MustCompile(`127\.0\.0\.1:(\d+)\b`)
	// gsReplicaAddr is an address a naming file lists: one of the reader's replicas.
	gsReplicaAddr = regexp.MustCompile(`address:\s*(127\.0\.0\.1:\d+)\b`)
	// gsExtProcHealthy is the line of Envoy's /clusters that says partroute passes its health check.
	gsExtProcHealthy = regexp.MustCompile(`(?m)^` + envoyconfig.ExtProcCluster + `::[^:]+:\d+::health_flags::healthy$`)
)

// parseGettingStarted reads the page's code blocks in order. Every block must be a file or a
// console block, so that no command on the page goes unrun.
func parseGettingStarted(text string) ([]gsStep, error) {
	var (
		steps   []gsStep
		inBlock bool
		lang    string
		start   int
		body    []string
	)
	lines := strings.Split(text, "\n")
	for n, l := range lines {
		if strings.HasPrefix(strings.TrimLeft(l, " \t"), "```") && !strings.HasPrefix(l, "```") {
			return nil, fmt.Errorf("line %d: an indented code block: write it at the start of the line, so that it is run", n+1)
		}
		if !inBlock {
			if strings.HasPrefix(l, "```") {
				// start is the fence's line; body line i is line start+1+i.
				inBlock, lang, start, body = true, strings.TrimPrefix(l, "```"), n+1, nil
			}
			continue
		}
		if l != "```" {
			body = append(body, l)
			continue
		}
		inBlock = false
		switch lang {
		case "yaml":
			if len(body) == 0 {
				return nil, fmt.Errorf("line %d: an empty yaml block", start)
			}
			m := gsFileLine.FindStringSubmatch(body[0])
			if m == nil {
				return nil, fmt.Errorf("line %d: a yaml block must start with \"# file: NAME\", the file the reader writes", start)
			}
			steps = append(steps, gsStep{line: start, file: m[1], content: strings.Join(body, "\n") + "\n"})
		case "console":
			for i, b := range body {
				if cmd, ok := strings.CutPrefix(b, "$ "); ok {
					s := gsStep{line: start + 1 + i, command: cmd}
					if c, ok := strings.CutSuffix(cmd, " &"); ok {
						s.command, s.background = c, true
					}
					steps = append(steps, s)
					continue
				}
				if len(steps) == 0 || steps[len(steps)-1].command == "" || steps[len(steps)-1].line <= start {
					return nil, fmt.Errorf("line %d: output before any command of its console block", start+1+i)
				}
				last := &steps[len(steps)-1]
				if last.background {
					return nil, fmt.Errorf("line %d: output after a background command, which is not checked", start+1+i)
				}
				last.want = append(last.want, b)
			}
		default:
			return nil, fmt.Errorf("line %d: a ```%s block: only yaml blocks with \"# file:\" and console blocks are allowed, so that every command on the page is run", start, lang)
		}
	}
	if inBlock {
		return nil, fmt.Errorf("line %d: a code block that never ends", start)
	}
	return steps, nil
}

// TestGettingStarted follows docs/getting-started.md as a reader would: it writes each file
// the page shows into an empty directory and runs each command there with sh, in order, and
// fails when a command prints anything other than the lines the page shows after it (trailing
// line breaks aside). The reader's replicas are stand-ins that answer 200. Every port the page
// shows is replaced, in files, commands and outputs alike, by a free one, so that the test runs
// beside anything else on the machine. Commands run in the background are waited for until
// they are ready, and a file rewritten while partroute runs until partroute serves it and Envoy
// has applied it; all of them are stopped with Ctrl-C's signal at the end.
func TestGettingStarted(t *testing.T) {
	text, err := os.ReadFile(gettingStartedDoc)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := parseGettingStarted(string(text))
	if err != nil {
		t.Fatalf("%s: %v", gettingStartedDoc, err)
	}
	if len(steps) == 0 {
		t.Fatalf("%s: no steps", gettingStartedDoc)
	}
	envoyBin, err := envoyconfig.FindEnvoy()
	if err != nil {
		t.Fatalf("the getting-started page needs Envoy: %v", err)
	}
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatalf("the getting-started page needs curl: %v", err)
	}
	g := &gettingStarted{t: t, dir: t.TempDir(), ports: map[string]string{}}
	g.mapPorts(steps)
	binDir := t.TempDir()
	// The reader's partroute is the binary built for the run. Envoy runs without hot restart, whose shared memory would clash with another Envoy on the
	// machine, and on one core; neither changes what the page shows.
	write(t, filepath.Join(binDir, "partroute"), fmt.Sprintf("#!/bin/sh\nexec %s \"$@\"\n", gsShellQuote(partrouteBin)))
	write(t, filepath.Join(binDir, "envoy"), fmt.Sprintf("#!/bin/sh\nexec %s \"$@\" --disable-hot-restart --concurrency 1\n", gsShellQuote(envoyBin)))
	for _, f := range []string{"partroute", "envoy"} {
		if err := os.Chmod(filepath.Join(binDir, f), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	g.env = append(os.Environ(), "PATH="+binDir+string(os.PathListSeparator)+os.Getenv("PATH"),
		"no_proxy=127.0.0.1,localhost", "NO_PROXY=127.0.0.1,localhost")
	t.Cleanup(g.stopAll)

	for _, s := range steps {
		if s.file != "" {
			t.Logf("line %d: write %s", s.line, s.file)
		} else {
			t.Logf("line %d: $ %s", s.line, s.command)
		}
		switch {
		case s.file != "":
			g.writeFile(s)
		case s.background:
			g.startBackground(s)
		default:
			g.runCommand(s)
		}
	}
}

// gettingStarted is the state of one walk through the page.
type gettingStarted struct {
	t     *testing.T
	dir   string            // the reader's directory
	env   []string          // the commands' environment
	ports map[string]string // each address of the page to the address used instead
	last  int               // the exit code of the last command, for `echo $?`

	written    map[string]bool
	background []*gsBackground
	admin      string // partroute's admin listener, once partroute serve runs
}

type gsBackground struct {
	step gsStep
	cmd  *exec.Cmd
	out  *testkit.LogBuffer
	done chan struct{}
	err  error
}

// mapPorts gives every address the page shows a free one: for an address a naming file lists,
// a stand-in replica listening there; for the others, a free port for partroute or Envoy.
func (g *gettingStarted) mapPorts(steps []gsStep) {
	t := g.t
	var replicas, others []string
	for _, s := range steps {
		for _, m := range gsReplicaAddr.FindAllStringSubmatch(s.content, -1) {
			if !slices.Contains(replicas, m[1]) {
				replicas = append(replicas, m[1])
			}
		}
	}
	for _, s := range steps {
		for _, a := range gsLoopbackAddr.FindAllString(strings.Join(append([]string{s.content, s.command}, s.want...), "\n"), -1) {
			if !slices.Contains(replicas, a) && !slices.Contains(others, a) {
				others = append(others, a)
			}
		}
	}
	specs := make([]loadtest.BackendSpec, len(replicas))
	for i := range replicas {
		specs[i] = loadtest.BackendSpec{Addr: "127.0.0.1:0"}
	}
	backends, err := loadtest.StartReplicas(specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)
	for i, b := range backends.All() {
		g.ports[replicas[i]] = b.Addr
	}
	for i, a := range testkit.FreePorts(t, len(others)) {
		g.ports[others[i]] = a
	}
}

// subst puts the test's addresses in place of the page's.
func (g *gettingStarted) subst(s string) string {
	return gsLoopbackAddr.ReplaceAllStringFunc(s, func(a string) string { return g.ports[a] })
}

// writeFile writes a file the page shows. A file written again while partroute runs is a
// change partroute must pick up: the step ends when partroute serves the new view and every
// Envoy has acknowledged it.
func (g *gettingStarted) writeFile(s gsStep) {
	t := g.t
	if g.written == nil {
		g.written = map[string]bool{}
	}
	reload := g.written[s.file] && g.admin != ""
	var before gsView
	if reload {
		before = g.view()
	}
	// Written whole and renamed into place, as editors save, so that a poll never reads half
	// a file.
	path := filepath.Join(g.dir, s.file)
	tmp := filepath.Join(g.dir, "."+s.file+".new")
	write(t, tmp, g.subst(s.content))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	g.written[s.file] = true
	if !reload {
		return
	}
	g.waitFor(s, "partroute to serve the new "+s.file+" and Envoy to apply it", func() (bool, string) {
		now := g.view()
		switch {
		case now.err != nil:
			return false, now.err.Error()
		case now.reloadErrors > before.reloadErrors:
			t.Fatalf("%s line %d: partroute refused the new %s (partroute_naming_reloads_total{result=\"error\"} went from %d to %d)",
				gettingStartedDoc, s.line, s.file, before.reloadErrors, now.reloadErrors)
		case now.version == before.version:
			return false, "partroute still serves view " + now.version
		case !now.envoyApplied:
			return false, "Envoy has not acknowledged the endpoints of view " + now.version
		}
		return true, ""
	})
}

// gsView is what partroute's admin listener says about the view it serves.
type gsView struct {
	version      string // partroute_naming_view_info's version
	reloadErrors int    // partroute_naming_reloads_total{result="error"}
	envoyApplied bool   // every Envoy on xDS acknowledged the versions served (true without xDS)
	err          error
}

func (g *gettingStarted) view() gsView {
	var v gsView
	body, err := gsGet("http://" + g.admin + "/metrics")
	if err != nil {
		return gsView{err: err}
	}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		if rest, ok := strings.CutPrefix(l, `partroute_naming_view_info{version="`); ok {
			v.version, _, _ = strings.Cut(rest, `"`)
		}
		if rest, ok := strings.CutPrefix(l, `partroute_naming_reloads_total{result="error"} `); ok {
			v.reloadErrors, _ = strconv.Atoi(rest)
		}
	}
	v.envoyApplied, v.err = g.xdsApplied()
	return v
}

// xdsApplied reports whether every Envoy connected over xDS acknowledged the versions
// partroute serves (at least one, when partroute serves xDS at all).
func (g *gettingStarted) xdsApplied() (bool, error) {
	resp, err := http.Get("http://" + g.admin + "/debug/xds")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return true, nil // no xDS server
	}
	var x struct {
		Serving      map[string]string            `json:"serving"`
		Acknowledged map[string]map[string]string `json:"acknowledged"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&x); err != nil {
		return false, fmt.Errorf("/debug/xds: %w", err)
	}
	if len(x.Acknowledged) == 0 {
		return false, nil
	}
	for _, acked := range x.Acknowledged {
		for typ, version := range x.Serving {
			if acked[typ] != version {
				return false, nil
			}
		}
	}
	return true, nil
}

// runCommand runs one command line with sh in the reader's directory and compares what it
// prints, standard output and error together as a terminal shows them, with the page.
func (g *gettingStarted) runCommand(s gsStep) {
	t := g.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// `(exit N)` gives the command the previous command's exit status, for `echo $?`.
	cmd := exec.CommandContext(ctx, "sh", "-c", fmt.Sprintf("(exit %d); %s", g.last, g.subst(s.command)))
	cmd.Dir, cmd.Env = g.dir, g.env
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		g.last = 0
	case errors.As(err, &exit) && ctx.Err() == nil:
		g.last = exit.ExitCode()
	default:
		t.Fatalf("%s line %d: $ %s: %v\n%s", gettingStartedDoc, s.line, s.command, err, out.String())
	}
	got := strings.TrimRight(out.String(), "\n")
	want := g.subst(strings.Join(s.want, "\n"))
	if got != want {
		t.Fatalf("%s line %d: $ %s\n(the page's ports are replaced by %v)\nthe page shows:\n%s\nthe command printed:\n%s",
			gettingStartedDoc, s.line, g.subst(s.command), g.ports, want, got)
	}
}

// startBackground starts a long-running command and waits until it is ready: partroute serve
// until its /readyz answers 200, Envoy until it is live, partroute passes Envoy's health
// check and Envoy has applied the xDS resources partroute serves.
func (g *gettingStarted) startBackground(s gsStep) {
	t := g.t
	args := strings.Fields(s.command)
	var ready func() (bool, string)
	switch {
	case len(args) >= 2 && args[0] == "partroute" && args[1] == "serve":
		cfg, err := config.Load(filepath.Join(g.dir, gsFlagValue(t, s, args, "-config")))
		if err != nil {
			t.Fatal(err)
		}
		g.admin = cfg.Listen.Admin
		ready = func() (bool, string) { return gsOK("http://" + g.admin + "/readyz") }
	case len(args) >= 1 && args[0] == "envoy":
		admin := gsEnvoyAdmin(t, filepath.Join(g.dir, gsFlagValue(t, s, args, "-c")))
		ready = func() (bool, string) {
			if ok, why := gsOK("http://" + admin + "/ready"); !ok {
				return false, why
			}
			clusters, err := gsGet("http://" + admin + "/clusters")
			if err != nil {
				return false, err.Error()
			}
			if !gsExtProcHealthy.MatchString(clusters) {
				return false, "partroute has not passed Envoy's health check"
			}
			if g.admin != "" {
				if ok, err := g.xdsApplied(); !ok {
					return false, fmt.Sprintf("Envoy has not acknowledged partroute's xDS resources (%v)", err)
				}
			}
			return true, ""
		}
	default:
		t.Fatalf("%s line %d: the test does not know when `%s` is ready", gettingStartedDoc, s.line, s.command)
	}

	// exec, so that the signal at the end reaches the command itself, not a shell around it.
	cmd := exec.Command("sh", "-c", "exec "+g.subst(s.command))
	cmd.Dir, cmd.Env = g.dir, g.env
	b := &gsBackground{step: s, cmd: cmd, out: &testkit.LogBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = b.out, b.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s line %d: $ %s: %v", gettingStartedDoc, s.line, s.command, err)
	}
	go func() { b.err = cmd.Wait(); close(b.done) }()
	g.background = append(g.background, b)
	g.waitFor(s, "`"+s.command+"` to be ready", func() (bool, string) {
		select {
		case <-b.done:
			t.Fatalf("%s line %d: $ %s: exited before it was ready: %v\n%s%s", gettingStartedDoc, s.line, s.command, b.err, b.out.String(), g.logs())
		default:
		}
		return ready()
	})
}

// waitFor polls cond until it holds, for at most a minute.
func (g *gettingStarted) waitFor(s gsStep, what string, cond func() (bool, string)) {
	g.t.Helper()
	deadline := time.Now().Add(time.Minute)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			g.t.Fatalf("%s line %d: waited a minute for %s: %s%s", gettingStartedDoc, s.line, what, why, g.logs())
		}
		<-tick.C
	}
}

// stopAll stops the background commands, the last started first, as Ctrl-C would, and checks
// that each exits cleanly.
func (g *gettingStarted) stopAll() {
	for _, b := range slices.Backward(g.background) {
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-b.done:
		case <-time.After(30 * time.Second):
			_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
			<-b.done
			g.t.Errorf("$ %s: still running 30 s after Ctrl-C's signal", b.step.command)
			continue
		}
		if b.err != nil {
			g.t.Errorf("$ %s: after Ctrl-C's signal: %v\n%s", b.step.command, b.err, b.out.String())
		}
	}
	if g.t.Failed() {
		g.t.Log(g.logs())
	}
}

// logs returns the log files the page's commands wrote into the reader's directory.
func (g *gettingStarted) logs() string {
	var b strings.Builder
	paths, _ := filepath.Glob(filepath.Join(g.dir, "*.log"))
	for _, p := range paths {
		content, err := os.ReadFile(p)
		if err == nil {
			fmt.Fprintf(&b, "\n--- %s:\n%s", filepath.Base(p), content)
		}
	}
	return b.String()
}

// gsFlagValue returns the value of flag name in a command line of the page.
func gsFlagValue(t *testing.T, s gsStep, args []string, name string) string {
	t.Helper()
	i := slices.Index(args, name)
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("%s line %d: `%s` has no %s FILE", gettingStartedDoc, s.line, s.command, name)
	}
	return args[i+1]
}

// gsEnvoyAdmin returns the admin address of an Envoy bootstrap.
func gsEnvoyAdmin(t *testing.T, path string) string {
	t.Helper()
	content, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var boot struct {
		Admin struct {
			Address struct {
				SocketAddress struct {
					Address   string `yaml:"address"`
					PortValue int    `yaml:"port_value"`
				} `yaml:"socket_address"`
			} `yaml:"address"`
		} `yaml:"admin"`
	}
	if err := yaml.Unmarshal(content, &boot); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	sa := boot.Admin.Address.SocketAddress
	if sa.Address == "" || sa.PortValue == 0 {
		t.Fatalf("%s: no admin address", path)
	}
	return fmt.Sprintf("%s:%d", sa.Address, sa.PortValue)
}

func gsGet(url string) (string, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), nil
}

func gsOK(url string) (bool, string) {
	if _, err := gsGet(url); err != nil {
		return false, err.Error()
	}
	return true, ""
}

// gsShellQuote quotes s for sh.
func gsShellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// TestGettingStartedParse checks how the page's code blocks become steps, and that a block
// the walk would not run is an error rather than a block left out.
func TestGettingStartedParse(t *testing.T) {
	const fence = "```"
	tests := []struct {
		name, page string
		want       []gsStep
		err        string
	}{
		{
			name: "a file, then commands with their output",
			page: "text\n" + fence + "yaml\n# file: a.yaml\nx: 1\n" + fence + "\n" +
				fence + "console\n$ cat a.yaml\n# file: a.yaml\nx: 1\n$ serve &\n$ echo $?\n0\n" + fence + "\n",
			want: []gsStep{
				{line: 2, file: "a.yaml", content: "# file: a.yaml\nx: 1\n"},
				{line: 7, command: "cat a.yaml", want: []string{"# file: a.yaml", "x: 1"}},
				{line: 10, command: "serve", background: true},
				{line: 11, command: "echo $?", want: []string{"0"}},
			},
		},
		{
			name: "a command that prints nothing",
			page: fence + "console\n$ true\n" + fence + "\n",
			want: []gsStep{{line: 2, command: "true"}},
		},
		{
			name: "output before the block's first command",
			page: fence + "console\n$ a\n" + fence + "\n" + fence + "console\nout\n" + fence + "\n",
			err:  "line 5: output before any command",
		},
		{
			name: "output after a background command",
			page: fence + "console\n$ serve &\nlog\n" + fence + "\n",
			err:  "line 3: output after a background command",
		},
		{
			name: "a yaml block that is no file",
			page: fence + "yaml\nx: 1\n" + fence + "\n",
			err:  `line 1: a yaml block must start with "# file: NAME"`,
		},
		{
			name: "a file name with a directory",
			page: fence + "yaml\n# file: ../a.yaml\n" + fence + "\n",
			err:  `line 1: a yaml block must start with "# file: NAME"`,
		},
		{
			name: "a block of another kind",
			page: fence + "sh\nmake build\n" + fence + "\n",
			err:  "line 1: a ```sh block",
		},
		{
			name: "a block without a kind",
			page: fence + "\nmake build\n" + fence + "\n",
			err:  "line 1: a ``` block",
		},
		{
			name: "an indented block",
			page: "- item\n\n  " + fence + "console\n  $ make build\n  " + fence + "\n",
			err:  "line 3: an indented code block",
		},
		{
			name: "a block that never ends",
			page: fence + "console\n$ a\n",
			err:  "line 1: a code block that never ends",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseGettingStarted(tt.page)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", tt.want) {
				t.Errorf("steps\n%+v\nwant\n%+v", got, tt.want)
			}
		})
	}
}
