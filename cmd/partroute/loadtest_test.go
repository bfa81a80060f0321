package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/partroute/partroute/loadtest"
)

func TestByteSizeFlag(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "4096": 4096, "64MiB": 64 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "10B": 10} {
		var b byteSize
		if err := b.Set(in); err != nil || int64(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1.5GiB", "10MB", "9000000000GiB"} {
		var b byteSize
		if err := b.Set(in); err == nil {
			t.Errorf("Set(%q) accepted as %d", in, b)
		}
	}
	for b, want := range map[byteSize]string{0: "0", 64 << 20: "64MiB", 3 << 30: "3GiB", 1000: "1000"} {
		if got := b.String(); got != want {
			t.Errorf("String(%d) = %q, want %q", int64(b), got, want)
		}
	}
}

// TestLoadtestCompareInProcess runs a short comparison with both servers in this process and
// checks the reports it writes.
func TestLoadtestCompareInProcess(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run([]string{"loadtest", "compare", "-servers", "inprocess", "-c", "8", "-d", "500ms", "-warmup", "100ms", "-pairs", "1", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	for _, want := range []string{"partroute #1", "noop #1", "floor #1", "partroute / noop throughput:", "partroute / floor p50:"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	if !strings.Contains(stderr.String(), "req/s") {
		t.Errorf("no progress lines on stderr:\n%s", stderr.String())
	}
	rep := readReport(t, filepath.Join(out, "compare-extproc-closed.json"))
	if len(rep.Runs) != 3 || len(rep.Comparisons) == 0 || rep.Machine.CPUs == 0 {
		t.Fatalf("report %+v", rep)
	}
	for _, r := range rep.Runs {
		if r.Errors != 0 || r.Requests == 0 {
			t.Errorf("run %s: %d requests, errors %v", r.Name, r.Requests, r.ErrorCodes)
		}
	}
	for _, ext := range []string{".svg", ".txt"} {
		if _, err := os.Stat(filepath.Join(out, "compare-extproc-closed"+ext)); err != nil {
			t.Error(err)
		}
	}
	// Every run is also in fortio's format.
	for _, run := range []string{"partroute-1", "noop-1", "floor-1"} {
		ff, err := os.Open(filepath.Join(out, "compare-extproc-closed-fortio", run+".json"))
		if err != nil {
			t.Fatal(err)
		}
		fr, err := loadtest.ReadFortio(ff)
		ff.Close()
		if err != nil || fr.DurationHistogram.Count == 0 {
			t.Errorf("%s in fortio's format: %v", run, err)
		}
	}

	// The report subcommand merges reports: the same one twice holds its runs twice.
	stdout.Reset()
	jsonPath := filepath.Join(out, "compare-extproc-closed.json")
	if code := run([]string{"loadtest", "report", "-out", out, "-name", "merged", "-title", "both", jsonPath, jsonPath}, &stdout, &stderr); code != 0 {
		t.Fatalf("report: exit %d\n%s", code, stderr.String())
	}
	merged := readReport(t, filepath.Join(out, "merged.json"))
	if merged.Title != "both" || len(merged.Runs) != 6 || len(merged.Comparisons) != 2*len(rep.Comparisons) {
		t.Errorf("merged report: %q, %d runs, %d comparisons", merged.Title, len(merged.Runs), len(merged.Comparisons))
	}
}

// -set-by gives the scenario's configuration its headers.setBy and the decoding floor the
// same shape: with envoy and none, partroute's and the floor's answers carry metadata and no
// header mutation, and the generator takes them as routed, so no run fails. The report says
// the shape.
func TestLoadtestCompareSetBy(t *testing.T) {
	for _, setBy := range []string{"envoy", "none"} {
		t.Run(setBy, func(t *testing.T) {
			out := t.TempDir()
			var stdout, stderr bytes.Buffer
			code := run([]string{"loadtest", "compare", "-set-by", setBy, "-servers", "inprocess", "-c", "4", "-d", "300ms", "-warmup", "100ms", "-pairs", "1", "-quiet", "-out", out}, &stdout, &stderr)
			if code != 0 {
				t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
			}
			rep := readReport(t, filepath.Join(out, "compare-extproc-closed.json"))
			if !strings.Contains(rep.Title, "headers set by "+setBy) {
				t.Errorf("title %q does not name the shape", rep.Title)
			}
			if len(rep.Runs) != 3 {
				t.Fatalf("%d runs, want partroute, noop and floor", len(rep.Runs))
			}
			for _, r := range rep.Runs {
				if r.Errors != 0 || r.Requests == 0 {
					t.Errorf("run %s: %d requests, errors %v", r.Name, r.Requests, r.ErrorCodes)
				}
			}
		})
	}
}

// -floor-spread has the decoding floor answer for every partition in turn; every run still
// routes without error, and the report says so.
func TestLoadtestCompareFloorSpread(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run([]string{"loadtest", "compare", "-floor-spread", "-servers", "inprocess", "-c", "4", "-d", "300ms", "-warmup", "100ms", "-pairs", "1", "-quiet", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	rep := readReport(t, filepath.Join(out, "compare-extproc-closed.json"))
	if !strings.Contains(rep.Title, "floor spread over the partitions") {
		t.Errorf("title %q does not say the floor spreads", rep.Title)
	}
	for _, r := range rep.Runs {
		if r.Errors != 0 || r.Requests == 0 {
			t.Errorf("run %s: %d requests, errors %v", r.Name, r.Requests, r.ErrorCodes)
		}
	}
}

// An A/A comparison runs two instances of one server, labelled apart, and reports their ratios
// without limits.
func TestLoadtestCompareAA(t *testing.T) {
	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	code := run([]string{"loadtest", "compare", "-aa", "noop", "-servers", "inprocess", "-c", "8", "-d", "300ms", "-warmup", "100ms", "-pairs", "2", "-quiet", "-out", out}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	rep := readReport(t, filepath.Join(out, "compare-aa-noop-extproc-closed.json"))
	var names []string
	for _, r := range rep.Runs {
		names = append(names, r.Target)
	}
	if want := []string{"noop/A", "noop/B", "noop/A", "noop/B"}; !slices.Equal(names, want) {
		t.Errorf("runs %v, want %v", names, want)
	}
	if len(rep.Comparisons) < 3 {
		t.Fatalf("%d comparisons, want throughput, p50 and p99 at least", len(rep.Comparisons))
	}
	for _, c := range rep.Comparisons {
		if c.Target != "noop/A" || c.Baseline != "noop/B" || c.Limit != 0 || c.Pass != nil || len(c.Ratios) != 2 {
			t.Errorf("A/A comparison %+v: want noop/A over noop/B, two ratios, no limit", c)
		}
	}
}

func TestArmLabels(t *testing.T) {
	for _, c := range []struct{ in, want []string }{
		{[]string{"partroute", "noop", "nofilter"}, []string{"partroute", "noop", "nofilter"}},
		{[]string{"noop", "noop"}, []string{"noop/A", "noop/B"}},
		{[]string{"partroute", "noop", "partroute"}, []string{"partroute/A", "noop", "partroute/B"}},
	} {
		if got := armLabels(c.in); !slices.Equal(got, c.want) {
			t.Errorf("armLabels(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestLoadtestUsage(t *testing.T) {
	for _, args := range [][]string{
		{"loadtest", "frobnicate"},
		{"loadtest", "run", "-mode", "sideways"},
		{"loadtest", "run", "-mode", "open"},
		{"loadtest", "run", "-target", "smtp"},
		{"loadtest", "compare", "-keys", "pareto"},
		{"loadtest", "compare", "-aa", "nofilter"},
		{"loadtest", "compare", "-set-by", "route"},
		{"loadtest", "noop", "-set-by", "route"},
		{"loadtest", "noop", "-floor-partition", ""},
		{"loadtest", "run", "-no-such-flag"},
		{"loadtest", "run", "extra"},
		{"loadtest", "report"},
		{"loadtest", "report", "/no/such/report.json"},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(args, &stdout, &stderr); code != 1 {
			t.Errorf("%q: exit %d, want 1\n%s", args, code, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"loadtest", "compare", "-h"}, &stdout, &stderr); code != 0 || !strings.Contains(stdout.String(), "-pairs") || stderr.Len() != 0 {
		t.Errorf("-h: exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
}

// A load test that cannot start its stack (here, no Envoy for the http target) fails with the
// reason, having closed what it had started.
func TestLoadtestStackFailureIsReported(t *testing.T) {
	t.Setenv("ENVOY_BIN", filepath.Join(t.TempDir(), "absent-envoy"))
	var stdout, stderr bytes.Buffer
	code := run([]string{"loadtest", "run", "-target", "http", "-server", "partroute", "-servers", "inprocess",
		"-c", "1", "-d", "100ms", "-warmup", "0s", "-quiet"}, &stdout, &stderr)
	if code != 1 || !strings.Contains(stderr.String(), "absent-envoy") {
		t.Errorf("exit %d\nstderr:\n%s", code, stderr.String())
	}
}

// A fortio run becomes a result that compares with the suite's: its throughput, its
// percentiles in nanoseconds, and every answer but a 200 counted as an error.
func TestFortioAsResult(t *testing.T) {
	fr := loadtest.FortioResult{ActualQPS: 999.5, NumThreads: 32, ActualDuration: 10e9, RetCodes: map[int]int64{200: 9990, 503: 4, -1: 1},
		DurationHistogram: loadtest.FortioHistogram{Count: 9995, Min: 0.0002, Max: 0.01, Percentiles: []loadtest.FortioPercentile{{Percentile: 50, Value: 0.0011}, {Percentile: 99, Value: 0.0042}}}}
	r := fortioAsResult(fr, "fortio envoy+noop", 2)
	if r.Name != "fortio envoy+noop #3" || r.Throughput != 999.5 || r.Requests != 9995 || r.Errors != 5 || r.Latency.P50 != 1_100_000 || r.Latency.P99 != 4_200_000 || r.Seconds != 10 {
		t.Errorf("%+v", r)
	}
	suite := [][]*loadtest.Result{{{Target: "envoy+partroute", Latency: loadtest.Latency{P50: 2e6, P99: 8e6}}}, {{Target: "envoy+noop", Latency: loadtest.Latency{P50: 1e6, P99: 4e6}}}}
	fortio := [][]*loadtest.Result{{{Target: "fortio envoy+partroute", Latency: loadtest.Latency{P50: 1e6, P99: 4e6}}}, {{Target: "fortio envoy+noop", Latency: loadtest.Latency{P50: 5e5, P99: 2e6}}}}
	cs := fortioComparisons([]string{serverPartroute, serverNoop}, suite, fortio)
	if len(cs) != 6 || cs[0].Median != 0.5 || cs[4].Target != "fortio envoy+partroute" || cs[4].Baseline != "fortio envoy+noop" || cs[4].Median != 2 {
		t.Errorf("comparisons %v", cs)
	}
}

// readReport reads the JSON report of a load test at path.
func readReport(t *testing.T, path string) *loadtest.Report {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := loadtest.ReadJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}
