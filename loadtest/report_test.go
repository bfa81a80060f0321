package loadtest

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleReport is a comparison of two targets over two rounds, with errors in one run.
func sampleReport() *Report {
	rng := rand.New(rand.NewPCG(5, 5))
	mk := func(name, target string, scale float64, errs int64) *Result {
		r := &Result{Name: name, Target: target, Mode: Closed, Concurrency: 64, Seconds: 10, hist: &Histogram{}}
		for i := 0; i < 5000; i++ {
			r.hist.Record(int64(scale * (200e3 + rng.ExpFloat64()*100e3)))
		}
		r.Requests = int64(r.hist.Count())
		r.AllRequests = r.Requests + 500
		r.Throughput = float64(r.Requests) / r.Seconds
		r.ServerCPUPerRequest = scale * 40e3
		if errs > 0 {
			r.Errors, r.ErrorCodes = errs, map[string]int64{"grpc_Unavailable": errs}
		}
		r.summarize()
		return r
	}
	pr := []*Result{mk("partroute #1", "partroute", 1.05, 0), mk("partroute #2", "partroute", 1.02, 3)}
	noop := []*Result{mk("noop #1", "noop", 1, 0), mk("noop #2", "noop", 1, 0)}
	return &Report{
		Title:   `compare <extproc> & "closed"`,
		Command: "partroute loadtest compare",
		Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Machine: Machine{OS: "linux", Arch: "amd64", CPUs: 2, CPUModel: "test CPU", GoVersion: "go1.26"},
		Runs:    []*Result{pr[0], noop[0], pr[1], noop[1]},
		Comparisons: []Comparison{
			Compare(pr, noop, Throughput, 0.9),
			Compare(pr, noop, P99, 0),
		},
	}
}

func TestJSONRoundTrip(t *testing.T) {
	rep := sampleReport()
	var buf bytes.Buffer
	if err := WriteJSON(&buf, rep); err != nil {
		t.Fatal(err)
	}
	got, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	// The histograms are not written; everything else comes back as it was.
	for _, r := range rep.Runs {
		r.hist = nil
	}
	if !reflect.DeepEqual(got, rep) {
		t.Errorf("round trip changed the report:\n got %+v\nwant %+v", got, rep)
	}
	if _, err := ReadJSON(strings.NewReader(`{"runs": [], "unknown": 1}`)); err == nil {
		t.Error("a report with an unknown field is read without complaint")
	}
}

func TestSVGIsWellFormed(t *testing.T) {
	rep := sampleReport()
	var buf bytes.Buffer
	if err := WriteSVG(&buf, rep); err != nil {
		t.Fatal(err)
	}
	dec := xml.NewDecoder(&buf)
	var root string
	polylines := 0
	for {
		tok, err := dec.Token()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("SVG is not well-formed XML: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok {
			if root == "" {
				root = se.Name.Local
				if se.Name.Space != "http://www.w3.org/2000/svg" {
					t.Errorf("root element in namespace %q", se.Name.Space)
				}
			}
			if se.Name.Local == "polyline" {
				polylines++
			}
			if se.Name.Local == "script" || se.Name.Local == "image" {
				t.Errorf("SVG has a <%s>: it must stand alone", se.Name.Local)
			}
		}
	}
	if root != "svg" {
		t.Errorf("root element %q, want svg", root)
	}
	if polylines != len(rep.Runs) {
		t.Errorf("%d curves for %d runs", polylines, len(rep.Runs))
	}
}

func TestSVGOfAnEmptyReport(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteSVG(&buf, &Report{Title: "nothing"}); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(buf.Bytes(), new(struct{})); err != nil {
		t.Fatalf("empty report's SVG: %v", err)
	}
}

func TestTextReport(t *testing.T) {
	rep := sampleReport()
	var buf bytes.Buffer
	if err := WriteText(&buf, rep); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"partroute #1", "noop #2", "p99.9", "errors of partroute #2: grpc_Unavailable=3", "partroute / noop throughput:", "median", "(limit >= 0.90: "} {
		if !strings.Contains(out, want) {
			t.Errorf("text report lacks %q:\n%s", want, out)
		}
	}
}

func TestCompare(t *testing.T) {
	mk := func(tp float64, p99 int64) *Result {
		return &Result{Target: "x", Throughput: tp, Latency: Latency{P99: p99}}
	}
	a := []*Result{mk(90, 110), mk(95, 100), mk(80, 130)}
	b := []*Result{mk(100, 100), mk(100, 100), mk(100, 100)}
	c := Compare(a, b, Throughput, 0.9)
	if !reflect.DeepEqual(c.Ratios, []float64{0.9, 0.95, 0.8}) || c.Median != 0.9 || c.Pass == nil || !*c.Pass {
		t.Errorf("throughput comparison %+v", c)
	}
	c = Compare(a, b, P99, 1.25)
	if c.Median != 1.1 || c.Pass == nil || !*c.Pass {
		t.Errorf("p99 comparison %+v", c)
	}
	c = Compare(a, b, P99, 1.05)
	if c.Pass == nil || *c.Pass {
		t.Errorf("p99 comparison over its limit passes: %+v", c)
	}
	if c := Compare(a, b, P50, 0); c.Pass != nil {
		t.Errorf("comparison without a limit has a verdict: %+v", c)
	}
}

func TestFormatNS(t *testing.T) {
	for ns, want := range map[float64]string{512: "512ns", 41_500: "42µs", 2_345_000: "2.35ms", 3.2e9: "3.20s"} {
		if got := FormatNS(ns); got != want {
			t.Errorf("FormatNS(%v) = %q, want %q", ns, got, want)
		}
	}
}
