package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Mode is how a run paces its requests.
type Mode string

// The modes.
const (
	// Closed runs a fixed number of workers, each sending its next request as soon as the last
	// one is answered: the server's maximum throughput at that concurrency.
	Closed Mode = "closed"
	// Open sends requests on a fixed schedule whatever the server does, and measures each
	// request's latency from the time it was scheduled, not from the time it was sent. A server
	// that stalls therefore shows the stall in every request scheduled during it, instead of
	// holding the generator back and hiding it (coordinated omission).
	Open Mode = "open"
)

// Hard bounds on every run, whatever its options: no loop of the generator runs without a limit
// in time and in count.
const (
	MaxDuration    = time.Hour
	MaxRequests    = int64(1_000_000_000)
	DefaultTimeout = 5 * time.Second
	// drainGrace is how long requests in flight at the end of a run may take to finish, on top of
	// their own timeout, before the run gives up on them.
	drainGrace = time.Second
)

// Request is one request a worker sends.
type Request struct {
	// Seq numbers the requests of a run from 0, warm-up included.
	Seq   uint64
	Key   uint64
	Write bool
}

// Worker sends requests, one at a time. A run gives each of its workers its own.
type Worker interface {
	Do(ctx context.Context, r *Request) error
}

// Target makes workers that send requests to one server.
type Target interface {
	NewWorker() (Worker, error)
}

// RequestError is a failed request with the code it is counted under in a run's errors.
type RequestError struct {
	Code string
	Err  error
}

func (e *RequestError) Error() string {
	if e.Err == nil {
		return e.Code
	}
	return e.Code + ": " + e.Err.Error()
}

func (e *RequestError) Unwrap() error { return e.Err }

// ErrorCode returns the code under which err is counted: a RequestError's own code, "timeout"
// for a request that ran out of time, or "error".
func ErrorCode(err error) string {
	var re *RequestError
	switch {
	case errors.As(err, &re):
		return re.Code
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	return "error"
}

// Options are the settings of one run.
type Options struct {
	// Name labels the run in reports.
	Name string
	Mode Mode
	// Concurrency is the number of workers: the requests in flight at most. In the open loop it
	// must cover Rate times the slowest latency expected, or requests wait for a free worker
	// (which the latency then shows, since it counts from the scheduled time).
	Concurrency int
	// Rate is the open loop's requests per second.
	Rate float64
	// Duration is how long the measured part of the run lasts, after the warm-up.
	Duration time.Duration
	// Requests, when above 0, ends the run after that many measured requests, even before
	// Duration is up.
	Requests int64
	// Warmup is sent like the rest of the run but not measured: connections, caches, goroutine
	// stacks and the heap reach their steady state first.
	Warmup time.Duration
	// Timeout bounds each request (DefaultTimeout when zero).
	Timeout time.Duration
	Keys    KeyOptions
	// WriteFraction is the share of requests that are writes (PUT), the rest reads (GET).
	WriteFraction float64
	Seed          uint64
	// Progress, when set, gets a line a second while the run goes on.
	Progress io.Writer
	// Clock is the run's time source; nil means the real clock. Tests pass a virtual one.
	Clock Clock
}

// Check reports options that cannot make a run.
func (o *Options) Check() error {
	switch o.Mode {
	case Closed:
	case Open:
		if !(o.Rate > 0) || math.IsInf(o.Rate, 0) {
			return fmt.Errorf("an open-loop run needs a rate above 0, not %v", o.Rate)
		}
	default:
		return fmt.Errorf("mode %q is not closed or open", o.Mode)
	}
	if o.Concurrency < 1 || o.Concurrency > 100_000 {
		return fmt.Errorf("concurrency %d is not between 1 and 100000", o.Concurrency)
	}
	if o.Duration <= 0 || o.Duration+o.Warmup > MaxDuration || o.Warmup < 0 {
		return fmt.Errorf("duration %v and warm-up %v must be above 0 and together at most %v", o.Duration, o.Warmup, MaxDuration)
	}
	if o.Requests < 0 || o.Requests > MaxRequests {
		return fmt.Errorf("request count %d is not between 0 (no count bound) and %d", o.Requests, MaxRequests)
	}
	if o.WriteFraction < 0 || o.WriteFraction > 1 {
		return fmt.Errorf("write fraction %v is not between 0 and 1", o.WriteFraction)
	}
	return o.Keys.Check()
}

// Clock is a run's time: Now is the time since the run began, and each worker sleeps with its
// own sleeper.
type Clock interface {
	Now() time.Duration
	// Sleeper returns a function that waits until the run's time reaches until, or ctx ends.
	// Each worker calls Sleeper once and uses the function from that one goroutine.
	Sleeper() func(ctx context.Context, until time.Duration) error
}

// realClock is the monotonic wall clock, from the moment it was made.
type realClock struct{ base time.Time }

func (c realClock) Now() time.Duration { return time.Since(c.base) }

func (c realClock) Sleeper() func(ctx context.Context, until time.Duration) error {
	// One timer per worker, reset for every wait: a worker of the open loop waits once per
	// request, and a fresh timer each time would be garbage on the generator's side of a
	// machine the server shares.
	t := time.NewTimer(time.Hour)
	t.Stop()
	return func(ctx context.Context, until time.Duration) error {
		d := until - c.Now()
		if d <= 0 {
			return ctx.Err()
		}
		t.Reset(d)
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
}

// CurvePoint is one point of a latency percentile curve.
type CurvePoint struct {
	Percentile float64 `json:"percentile"`
	LatencyNS  int64   `json:"latency_ns"`
}

// Latency summarises a run's latencies, in nanoseconds.
type Latency struct {
	Min  int64   `json:"min_ns"`
	Mean float64 `json:"mean_ns"`
	P50  int64   `json:"p50_ns"`
	P90  int64   `json:"p90_ns"`
	P99  int64   `json:"p99_ns"`
	P999 int64   `json:"p999_ns"`
	Max  int64   `json:"max_ns"`
}

// Result is what one run measured. Latencies count every request of the measured part,
// failed ones included: a request that timed out is a slow request, not a missing one.
type Result struct {
	Name        string  `json:"name"`
	Target      string  `json:"target,omitempty"`
	Mode        Mode    `json:"mode"`
	Concurrency int     `json:"concurrency"`
	Rate        float64 `json:"rate,omitempty"`
	// Seconds is the length of the measured part of the run.
	Seconds float64 `json:"seconds"`
	// Requests counts the measured requests, failed ones included; AllRequests adds the
	// warm-up's.
	Requests    int64            `json:"requests"`
	AllRequests int64            `json:"all_requests"`
	Errors      int64            `json:"errors"`
	ErrorCodes  map[string]int64 `json:"errors_by_code,omitempty"`
	// Throughput is measured requests per second.
	Throughput float64 `json:"throughput"`
	Latency    Latency `json:"latency"`
	// SendLagP99 is the open loop's 99th percentile of how late requests were sent after their
	// scheduled time, in nanoseconds: a high value means the generator (or the machine) could
	// not keep the schedule, and the latencies include that wait.
	SendLagP99 int64 `json:"send_lag_p99_ns,omitempty"`
	// ClientCPUPerRequest is the generator process's CPU time per request (warm-up included), in
	// nanoseconds; with the servers in the same process it includes theirs.
	ClientCPUPerRequest float64 `json:"client_cpu_ns_per_request,omitempty"`
	// ServerCPUPerRequest is the server process's CPU time per request, when the server runs in
	// a process of its own.
	ServerCPUPerRequest float64 `json:"server_cpu_ns_per_request,omitempty"`
	// EnvoyCPUPerRequest is the Envoy process's CPU time per request, through Envoy.
	EnvoyCPUPerRequest float64      `json:"envoy_cpu_ns_per_request,omitempty"`
	Curve              []CurvePoint `json:"curve"`

	hist *Histogram
}

// Histogram returns the run's merged latency histogram (nil for a result read back from JSON).
func (r *Result) Histogram() *Histogram { return r.hist }

// workerStats is one worker's share of a run, merged when the run ends.
type workerStats struct {
	lat      Histogram
	lag      Histogram
	errors   map[string]int64
	measured int64
	lastDone time.Duration
}

// Run sends the run's requests to target and measures them. It returns when the measured part
// is over (by duration or count) and the requests in flight have finished, or when ctx ends.
func Run(ctx context.Context, target Target, o Options) (*Result, error) {
	if err := o.Check(); err != nil {
		return nil, err
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	workers := make([]Worker, o.Concurrency)
	for i := range workers {
		w, err := target.NewWorker()
		if err != nil {
			return nil, fmt.Errorf("worker %d: %w", i, err)
		}
		workers[i] = w
	}
	clock := o.Clock
	if clock == nil {
		clock = realClock{base: time.Now()}
	}
	end := o.Warmup + o.Duration
	// The context outlives the schedule by the request timeout and a grace period, so that the
	// last requests can finish, and no longer: a server that hangs cannot hold the run.
	runCtx, cancel := context.WithTimeout(ctx, end+o.Timeout+drainGrace)
	defer cancel()
	maxMeasured := o.Requests
	if maxMeasured == 0 {
		maxMeasured = MaxRequests
	}

	r := &runner{o: o, clock: clock, end: end, maxMeasured: maxMeasured}
	cpuStart := processCPU()
	stats := make([]*workerStats, len(workers))
	var wg sync.WaitGroup
	for i, w := range workers {
		stats[i] = &workerStats{errors: map[string]int64{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.work(runCtx, w, uint64(i), stats[i]) //nolint:gosec // i is a worker index, not negative
		}()
	}
	stopProgress := r.progress(o.Progress)
	wg.Wait()
	stopProgress()
	cpu := processCPU() - cpuStart
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	res := &Result{Name: o.Name, Mode: o.Mode, Concurrency: o.Concurrency, ErrorCodes: map[string]int64{}, hist: &Histogram{}}
	if o.Mode == Open {
		res.Rate = o.Rate
	}
	var lag Histogram
	var last time.Duration
	for _, s := range stats {
		res.hist.Merge(&s.lat)
		lag.Merge(&s.lag)
		res.Requests += s.measured
		last = max(last, s.lastDone)
		for code, n := range s.errors {
			res.ErrorCodes[code] += n
			res.Errors += n
		}
	}
	if len(res.ErrorCodes) == 0 {
		// No errors reads back from JSON as no map at all; keep the two alike.
		res.ErrorCodes = nil
	}
	res.AllRequests = r.completed.Load()
	// The measured part lasts its duration, or, when the count bound ended it sooner, until its
	// last request was answered: a run bounded by count is not charged for time it did not use.
	span := o.Duration
	if r.countHit.Load() && last > o.Warmup {
		span = last - o.Warmup
	}
	res.Seconds = span.Seconds()
	if res.Seconds > 0 {
		res.Throughput = float64(res.Requests) / res.Seconds
	}
	if o.Mode == Open {
		res.SendLagP99 = lag.Quantile(0.99)
	}
	if res.AllRequests > 0 {
		res.ClientCPUPerRequest = float64(cpu.Nanoseconds()) / float64(res.AllRequests)
	}
	res.summarize()
	return res, nil
}

// summarize fills the latency summary and the percentile curve from the histogram.
func (r *Result) summarize() {
	h := r.hist
	r.Latency = Latency{
		Min: h.Min(), Mean: h.Mean(), Max: h.Max(),
		P50: h.Quantile(0.50), P90: h.Quantile(0.90), P99: h.Quantile(0.99), P999: h.Quantile(0.999),
	}
	r.Curve = percentileCurve(h)
}

// percentileCurve samples the latency at percentiles spread evenly on the scale of
// -log10(1-p), the scale on which tails are read: 0, 90, 99, 99.9 ... are evenly spaced. The
// curve stops where the run has too few requests to say more.
func percentileCurve(h *Histogram) []CurvePoint {
	n := h.Count()
	if n == 0 {
		return nil
	}
	maxNines := math.Log10(float64(n))
	var out []CurvePoint
	const step = 0.1
	for x := 0.0; x < maxNines; x += step {
		p := 1 - math.Pow(10, -x)
		out = append(out, CurvePoint{Percentile: p * 100, LatencyNS: h.Quantile(p)})
	}
	out = append(out, CurvePoint{Percentile: 100, LatencyNS: h.Max()})
	return out
}

// runner is the shared state of one run's workers.
type runner struct {
	o           Options
	clock       Clock
	end         time.Duration
	maxMeasured int64

	// next is the open loop's next sequence number; measured counts the measured requests
	// claimed so far; completed and failed count every request, for the progress line.
	next      atomic.Uint64
	measured  atomic.Int64
	completed atomic.Int64
	failed    atomic.Int64
	// countHit is set when the count bound ended the run.
	countHit atomic.Bool
}

// work is one worker's loop. It is bounded in time (the schedule's end, and runCtx) and in
// count (maxMeasured, and the warm-up's length in time).
func (r *runner) work(ctx context.Context, w Worker, id uint64, s *workerStats) {
	keys := NewKeyGen(r.o.Keys, r.o.Seed, id)
	sleep := r.clock.Sleeper()
	req := &Request{}
	var interval float64
	if r.o.Mode == Open {
		interval = float64(time.Second) / r.o.Rate
	}
	for local := uint64(0); ctx.Err() == nil; local++ {
		var scheduled time.Duration
		if r.o.Mode == Open {
			seq := r.next.Add(1) - 1
			scheduled = time.Duration(float64(seq) * interval)
			req.Seq = seq
		} else {
			scheduled = r.clock.Now()
			req.Seq = id<<40 | local
		}
		if scheduled >= r.end {
			return
		}
		measured := scheduled >= r.o.Warmup
		if measured && r.measured.Add(1) > r.maxMeasured {
			r.countHit.Store(true)
			return
		}
		req.Key = keys.Next()
		req.Write = r.o.WriteFraction > 0 && keys.Float64() < r.o.WriteFraction
		if r.o.Mode == Open {
			if sleep(ctx, scheduled) != nil {
				return
			}
		}
		sent := r.clock.Now()
		reqCtx, cancel := context.WithTimeout(ctx, r.o.Timeout)
		err := w.Do(reqCtx, req)
		cancel()
		done := r.clock.Now()
		r.completed.Add(1)
		if err != nil {
			if ctx.Err() != nil && errors.Is(err, context.Canceled) {
				// The run itself was stopped; this request says nothing about the server.
				return
			}
			r.failed.Add(1)
		}
		if !measured {
			continue
		}
		// The latency counts from the scheduled time: in the open loop, time spent waiting
		// for a free worker is part of what the request's user would have seen.
		s.lat.Record(int64(done - scheduled))
		if r.o.Mode == Open {
			s.lag.Record(int64(sent - scheduled))
		}
		s.measured++
		s.lastDone = max(s.lastDone, done)
		if err != nil {
			s.errors[ErrorCode(err)]++
		}
	}
}

// progress prints a line a second to w until the returned function is called.
func (r *runner) progress(w io.Writer) (stop func()) {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		var lastCount int64
		lastAt := r.clock.Now()
		for {
			phase := ""
			select {
			case <-done:
				// A last line, so that even a run shorter than a second reports.
				phase = "done"
			case <-tick.C:
			}
			now := r.clock.Now()
			n := r.completed.Load()
			switch {
			case phase != "":
			case now < r.o.Warmup:
				phase = "warm-up"
			default:
				phase = "measuring"
			}
			rate := 0.0
			if elapsed := (now - lastAt).Seconds(); elapsed > 0 {
				rate = float64(n-lastCount) / elapsed
			}
			fmt.Fprintf(w, "%-24s %6.1fs %-9s %9.0f req/s %10d done %6d errors\n",
				r.o.Name, now.Seconds(), phase, rate, n, r.failed.Load())
			if phase == "done" {
				return
			}
			lastCount, lastAt = n, now
		}
	}()
	return func() { close(done); <-finished }
}

// processCPU returns the CPU time (user and system) this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Median returns the median of xs (the mean of the middle two for an even count), 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	m := len(s) / 2
	if len(s)%2 == 1 {
		return s[m]
	}
	return (s[m-1] + s[m]) / 2
}
