package loadtest

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"
	"time"
)

// A run of fortio 1.66.0 (`fortio load -qps 200 -c 4 -t 1s -p 50,90,99,99.9 -json`, against
// fortio's echo server answering 503 one time in ten) reads back with its counts and
// percentiles.
func TestReadFortio(t *testing.T) {
	f, err := os.Open("testdata/fortio-1.66.0.json")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := ReadFortio(f)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != "1.66.0" || got.NumThreads != 4 || got.RequestedQPS != "200" || got.DurationHistogram.Count != 200 {
		t.Errorf("version %q, %d threads, qps %q, %d requests", got.Version, got.NumThreads, got.RequestedQPS, got.DurationHistogram.Count)
	}
	if got.RetCodes[200] != 181 || got.RetCodes[503] != 19 {
		t.Errorf("codes %v, want 181 200s and 19 503s", got.RetCodes)
	}
	if p99, ok := got.DurationHistogram.Percentile(99); !ok || p99 != 1_750_000 {
		t.Errorf("p99 %d ns (%v), want 1750000", p99, ok)
	}
	if _, ok := got.DurationHistogram.Percentile(75); ok {
		t.Error("a percentile fortio did not write is reported")
	}
	if _, err := ReadFortio(bytes.NewReader([]byte(`{"Labels": "x"}`))); err == nil {
		t.Error("a fortio result without requests reads without error")
	}
}

// A run of the suite written in fortio's format reads back with the suite's own figures.
func TestFortioOfARun(t *testing.T) {
	clock := &virtualClock{}
	target := &stallTarget{clock: clock, service: time.Millisecond, stallAt: 50, stall: 40 * time.Millisecond, fail: func(n int64) error {
		if n%20 == 0 {
			return &RequestError{Code: "http_503"}
		}
		if n == 7 {
			return &RequestError{Code: "timeout"}
		}
		return nil
	}}
	res, err := Run(context.Background(), target, Options{Mode: Closed, Concurrency: 1, Duration: time.Hour, Requests: 200,
		Keys: KeyOptions{Distribution: Uniform, Space: 10}, Clock: clock, Name: "partroute #1"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteFortio(&buf, FortioOf(res, "test")); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFortio(&buf)
	if err != nil {
		t.Fatal(err)
	}
	h := got.DurationHistogram
	if h.Count != 200 || got.Labels != "partroute #1" || got.RetCodes[503] != 10 || got.RetCodes[-1] != 1 || got.RetCodes[200] != 189 {
		t.Errorf("count %d, labels %q, codes %v", h.Count, got.Labels, got.RetCodes)
	}
	for _, c := range []struct {
		p    float64
		want int64
	}{{50, res.Latency.P50}, {99, res.Latency.P99}, {99.9, res.Latency.P999}} {
		if v, ok := h.Percentile(c.p); !ok || v != c.want {
			t.Errorf("p%v %d ns, want the suite's %d", c.p, v, c.want)
		}
	}
	var n int64
	for _, b := range h.Data {
		n += b.Count
	}
	if n != h.Count || h.Data[len(h.Data)-1].Percent != 100 || h.Max < 0.040 {
		t.Errorf("buckets hold %d of %d values, last percent %v, max %v s", n, h.Count, h.Data[len(h.Data)-1].Percent, h.Max)
	}
}

func TestFortioRunArgs(t *testing.T) {
	got := FortioRun{Rate: 1000, Connections: 32, Duration: 10 * time.Second, H2: true}.Args("127.0.0.1:10000", "/tmp/out.json")
	want := []string{"load", "-quiet", "-uniform", "-qps", "1000", "-c", "32", "-t", "10s", "-p", "50,90,99,99.9", "-r", "0.00001",
		"-H", "Host: " + ScenarioAuthority, "-json", "/tmp/out.json", "-h2", "http://127.0.0.1:10000" + ScenarioPathPrefix + "12345"}
	if !slices.Equal(got, want) {
		t.Errorf("args\n%q\nwant\n%q", got, want)
	}
	if got := (FortioRun{Connections: 1, Duration: time.Second}).Args("a:1", "o"); got[4] != "0" || slices.Contains(got, "-h2") {
		t.Errorf("a closed loop over HTTP/1.1: %q", got)
	}
}
