package loadtest

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
)

// FortioResult is a run in the JSON format of fortio (fortio.org/fortio, `fortio load -json`),
// the load generator Istio and Envoy's benchmarks use: the fields its report browser and the
// tools that read its files use. Durations are in seconds, as fortio writes them, except
// ActualDuration, in nanoseconds. A run of this suite can be written in it (FortioOf) and a
// run of fortio read from it (ReadFortio), so that the two can be compared.
type FortioResult struct {
	RunType           string
	Labels            string
	StartTime         time.Time
	RequestedQPS      string
	RequestedDuration string
	ActualQPS         float64
	ActualDuration    int64
	NumThreads        int
	Version           string
	DurationHistogram FortioHistogram
	// RetCodes counts the answers by HTTP status; -1 counts requests that got none (a
	// connection error or a timeout), as fortio counts them.
	RetCodes map[int]int64
}

// FortioHistogram is fortio's histogram of request durations, in seconds.
type FortioHistogram struct {
	Count       int64
	Min, Max    float64
	Sum, Avg    float64
	StdDev      float64
	Data        []FortioBucket
	Percentiles []FortioPercentile
}

// FortioBucket is one bucket of a fortio histogram: Count values in [Start, End), which make
// up Percent of the values at or below End.
type FortioBucket struct {
	Start, End float64
	Percent    float64
	Count      int64
}

// FortioPercentile is one percentile of a fortio histogram: Percentile in [0, 100].
type FortioPercentile struct {
	Percentile float64
	Value      float64
}

// fortioPercentiles are the percentiles written, fortio's default ones and p90.
var fortioPercentiles = []float64{50, 75, 90, 99, 99.9}

// FortioOf returns run r in fortio's format. Its histogram's buckets are the suite's own
// (0.8% wide), which fortio's tools read like any others; the percentiles are the suite's,
// which never understate a value.
func FortioOf(r *Result, version string) FortioResult {
	f := FortioResult{
		RunType:           "HTTP",
		Labels:            r.Name,
		RequestedQPS:      "max",
		RequestedDuration: (time.Duration(r.Seconds * float64(time.Second))).Round(time.Millisecond).String(),
		ActualQPS:         r.Throughput,
		ActualDuration:    int64(r.Seconds * float64(time.Second)),
		NumThreads:        r.Concurrency,
		Version:           "partroute loadtest " + version,
		RetCodes:          map[int]int64{},
	}
	if r.Mode == Open {
		f.RequestedQPS = strconv.FormatFloat(r.Rate, 'f', -1, 64)
	}
	ok := r.Requests - r.Errors
	if ok > 0 {
		f.RetCodes[200] += ok
	}
	for code, n := range r.ErrorCodes {
		status := -1
		if s, found := strings.CutPrefix(code, "http_"); found {
			if v, err := strconv.Atoi(s); err == nil {
				status = v
			}
		}
		f.RetCodes[status] += n
	}
	const sec = float64(time.Second)
	h := r.Histogram()
	if h == nil || h.Count() == 0 {
		return f
	}
	f.DurationHistogram = FortioHistogram{
		Count: int64(h.Count()), //nolint:gosec // a count of requests
		Min:   float64(h.Min()) / sec, Max: float64(h.Max()) / sec,
		Avg: h.Mean() / sec, Sum: h.Mean() * float64(h.Count()) / sec,
	}
	var cum uint64
	var sq float64
	mean := h.Mean()
	h.eachBucket(func(lo, hi int64, n uint64) {
		cum += n
		mid := float64(lo+hi) / 2
		sq += float64(n) * (mid - mean) * (mid - mean)
		f.DurationHistogram.Data = append(f.DurationHistogram.Data, FortioBucket{
			Start: float64(lo) / sec, End: float64(hi+1) / sec,
			Percent: 100 * float64(cum) / float64(h.Count()), Count: int64(n), //nolint:gosec // a count of requests
		})
	})
	f.DurationHistogram.StdDev = math.Sqrt(sq/float64(h.Count())) / sec
	for _, p := range fortioPercentiles {
		f.DurationHistogram.Percentiles = append(f.DurationHistogram.Percentiles, FortioPercentile{Percentile: p, Value: float64(h.Quantile(p/100)) / sec})
	}
	return f
}

// WriteFortio writes f as fortio's JSON.
func WriteFortio(w io.Writer, f FortioResult) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(f)
}

// ReadFortio reads a run in fortio's JSON, as `fortio load -json` writes it.
func ReadFortio(r io.Reader) (FortioResult, error) {
	var f FortioResult
	if err := json.NewDecoder(r).Decode(&f); err != nil {
		return f, fmt.Errorf("fortio result: %w", err)
	}
	if f.DurationHistogram.Count == 0 {
		return f, fmt.Errorf("fortio result %q holds no request", f.Labels)
	}
	return f, nil
}

// Percentile returns the value of percentile p (0 to 100) of the histogram, in nanoseconds,
// and whether the histogram has it.
func (h FortioHistogram) Percentile(p float64) (int64, bool) {
	for _, q := range h.Percentiles {
		if q.Percentile == p {
			return int64(q.Value * float64(time.Second)), true
		}
	}
	return 0, false
}

// FortioRun is a run of fortio itself against an HTTP listener, to check the suite against an
// independent generator.
type FortioRun struct {
	// Bin is the fortio binary.
	Bin string
	// Rate is the requests per second (0: as fast as it goes), Connections its connections,
	// Duration the run's length.
	Rate        float64
	Connections int
	Duration    time.Duration
	// H2 speaks HTTP/2 cleartext (fortio's -h2) rather than HTTP/1.1.
	H2 bool
}

// fortioResolution is the width of fortio's smallest histogram buckets, in seconds: 10 µs.
// Its default, 1 ms, is coarser than the latencies measured, and fortio interpolates
// percentiles within a bucket.
const fortioResolution = "0.00001"

// Args are the arguments of `fortio load` for a run against addr, writing its JSON to out: the
// scenario's authority, and one key of its service, since fortio sends one URL.
func (f FortioRun) Args(addr, out string) []string {
	qps := "0"
	if f.Rate > 0 {
		qps = strconv.FormatFloat(f.Rate, 'f', -1, 64)
	}
	// -uniform spreads the threads' requests over time, as the suite's open loop schedules
	// them: without it fortio's threads send at the same instants, and the requests queue
	// behind one another.
	args := []string{"load", "-quiet", "-uniform", "-qps", qps, "-c", strconv.Itoa(f.Connections), "-t", f.Duration.String(),
		"-p", "50,90,99,99.9", "-r", fortioResolution, "-H", "Host: " + ScenarioAuthority, "-json", out}
	if f.H2 {
		args = append(args, "-h2")
	}
	return append(args, "http://"+addr+ScenarioPathPrefix+"12345")
}
