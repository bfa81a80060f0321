package loadtest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// virtualClock is a run's time that moves only when told to: a sleeper jumps it to the time it
// waits for, and the fake target moves it by each request's service time. With one worker the
// run is then exact and instant.
type virtualClock struct {
	mu  sync.Mutex
	now time.Duration
}

func (c *virtualClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *virtualClock) advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	c.mu.Unlock()
}

func (c *virtualClock) Sleeper() func(context.Context, time.Duration) error {
	return func(ctx context.Context, until time.Duration) error {
		c.mu.Lock()
		c.now = max(c.now, until)
		c.mu.Unlock()
		return ctx.Err()
	}
}

// stallTarget answers every request in service time, except request number stallAt (counted
// from 0 in the order they arrive), which takes stall.
type stallTarget struct {
	clock   *virtualClock
	service time.Duration
	stall   time.Duration
	stallAt int64
	fail    func(n int64) error
	n       atomic.Int64
}

func (t *stallTarget) NewWorker() (Worker, error) { return t, nil }

func (t *stallTarget) Do(_ context.Context, _ *Request) error {
	n := t.n.Add(1) - 1
	if n == t.stallAt {
		t.clock.advance(t.stall)
	} else {
		t.clock.advance(t.service)
	}
	if t.fail != nil {
		return t.fail(n)
	}
	return nil
}

// TestOpenLoopShowsAStall is the coordinated-omission test: a server that stalls once for
// 200ms in a stream of 100 requests a second. The open loop must show the stall in every
// request scheduled during it (each waited for the stall to end), not just in the one request
// that hit it; the closed loop, which only sends when the last answer is in, shows one slow
// request, which is why its latencies cannot be read as a user's.
func TestOpenLoopShowsAStall(t *testing.T) {
	const (
		interval = 10 * time.Millisecond
		service  = time.Millisecond
		stall    = 200 * time.Millisecond
	)
	clock := &virtualClock{}
	target := &stallTarget{clock: clock, service: service, stall: stall, stallAt: 20}
	res, err := Run(context.Background(), target, Options{
		Mode: Open, Rate: float64(time.Second / interval), Concurrency: 1,
		Duration: time.Second, Requests: 100,
		Keys: KeyOptions{Distribution: Uniform, Space: 10}, Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 100 {
		t.Fatalf("%d requests measured, want 100", res.Requests)
	}
	h := res.Histogram()
	// Request 20 is scheduled at 200ms and answered at 400ms. Request 20+k is scheduled at
	// 200ms+10ms*k but sent only at 400ms+1ms*(k-1), and answered 1ms later: its latency is
	// (200-9k)ms. Requests 20..42 were scheduled before the backlog cleared, so 23 requests are
	// slower than the service time, and 20 of them (k < 20) took over 20ms.
	if got := h.Max(); got != int64(stall) {
		t.Errorf("max latency %v, want the stall %v", time.Duration(got), stall)
	}
	if n := h.CountAbove(int64(service) + int64(service)/64); n != 23 {
		t.Errorf("%d requests slower than the service time, want 23: the requests scheduled during the stall", n)
	}
	if n := h.CountAbove(int64(20 * time.Millisecond)); n != 20 {
		t.Errorf("%d requests took over 20ms, want 20", n)
	}
	if p90 := time.Duration(h.Quantile(0.90)); p90 < 100*time.Millisecond {
		t.Errorf("p90 %v: the stall is hidden", p90)
	}
	if res.SendLagP99 < int64(150*time.Millisecond) {
		t.Errorf("send lag p99 %v, want the stall to show as late sends", time.Duration(res.SendLagP99))
	}

	// The same server under a closed loop: one slow request, and a p90 at the service time.
	clock = &virtualClock{}
	target = &stallTarget{clock: clock, service: service, stall: stall, stallAt: 20}
	res, err = Run(context.Background(), target, Options{
		Mode: Closed, Concurrency: 1, Duration: time.Second, Requests: 100,
		Keys: KeyOptions{Distribution: Uniform, Space: 10}, Clock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	h = res.Histogram()
	if n := h.CountAbove(int64(service) + int64(service)/64); n != 1 {
		t.Errorf("closed loop: %d slow requests, want 1", n)
	}
	if p90 := time.Duration(h.Quantile(0.90)); p90 > service+service/64 {
		t.Errorf("closed loop p90 %v, want the service time", p90)
	}
}

func TestRunBounds(t *testing.T) {
	keys := KeyOptions{Distribution: Uniform, Space: 10}
	t.Run("count", func(t *testing.T) {
		clock := &virtualClock{}
		res, err := Run(context.Background(), &stallTarget{clock: clock, service: time.Millisecond, stallAt: -1},
			Options{Mode: Closed, Concurrency: 1, Duration: time.Hour, Requests: 500, Keys: keys, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 500 || res.Seconds != 0.5 || res.Throughput != 1000 {
			t.Errorf("requests %d in %vs at %v/s, want 500 in 0.5s at 1000/s", res.Requests, res.Seconds, res.Throughput)
		}
	})
	t.Run("duration", func(t *testing.T) {
		clock := &virtualClock{}
		res, err := Run(context.Background(), &stallTarget{clock: clock, service: time.Millisecond, stallAt: -1},
			Options{Mode: Closed, Concurrency: 1, Duration: 300 * time.Millisecond, Keys: keys, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 300 || res.Seconds != 0.3 {
			t.Errorf("requests %d in %vs, want 300 in 0.3s", res.Requests, res.Seconds)
		}
	})
	t.Run("open loop duration", func(t *testing.T) {
		clock := &virtualClock{}
		res, err := Run(context.Background(), &stallTarget{clock: clock, service: time.Millisecond, stallAt: -1},
			Options{Mode: Open, Rate: 200, Concurrency: 1, Duration: time.Second, Keys: keys, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 200 || res.Throughput != 200 {
			t.Errorf("requests %d at %v/s, want 200 at 200/s", res.Requests, res.Throughput)
		}
	})
	t.Run("warm-up is not measured", func(t *testing.T) {
		clock := &virtualClock{}
		res, err := Run(context.Background(), &stallTarget{clock: clock, service: time.Millisecond, stall: time.Second, stallAt: 5},
			Options{Mode: Open, Rate: 100, Concurrency: 1, Warmup: 2 * time.Second, Duration: time.Second, Keys: keys, Clock: clock})
		if err != nil {
			t.Fatal(err)
		}
		// The stall in the warm-up is over long before the measurement begins.
		if res.Requests != 100 || res.AllRequests != 300 || res.Latency.Max != int64(time.Millisecond) {
			t.Errorf("measured %d of %d, max %v; want 100 of 300 and the warm-up's stall left out", res.Requests, res.AllRequests, time.Duration(res.Latency.Max))
		}
	})
	t.Run("real clock", func(t *testing.T) {
		// Many workers on the real clock, against a target that answers at once: the count
		// bound ends the run, well before its duration.
		res, err := Run(context.Background(), TargetFunc(func(context.Context, *Request) error { return nil }),
			Options{Mode: Closed, Concurrency: 16, Duration: time.Minute, Requests: 10_000, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		if res.Requests != 10_000 || res.Seconds >= 60 {
			t.Errorf("requests %d in %vs, want 10000 before the minute is up", res.Requests, res.Seconds)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		var calls atomic.Int64
		_, err := Run(ctx, TargetFunc(func(context.Context, *Request) error {
			if calls.Add(1) == 100 {
				cancel()
			}
			return nil
		}), Options{Mode: Closed, Concurrency: 4, Duration: time.Minute, Keys: keys})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestRunCountsErrorsByCode(t *testing.T) {
	clock := &virtualClock{}
	target := &stallTarget{clock: clock, service: time.Millisecond, stallAt: -1, fail: func(n int64) error {
		switch {
		case n%10 == 0:
			return &RequestError{Code: "grpc_Unavailable"}
		case n%25 == 1:
			return context.DeadlineExceeded
		}
		return nil
	}}
	res, err := Run(context.Background(), target, Options{Mode: Closed, Concurrency: 1, Duration: time.Hour, Requests: 100,
		Keys: KeyOptions{Distribution: Uniform, Space: 10}, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 14 || res.ErrorCodes["grpc_Unavailable"] != 10 || res.ErrorCodes["timeout"] != 4 {
		t.Errorf("errors %d %v, want 10 grpc_Unavailable and 4 timeout", res.Errors, res.ErrorCodes)
	}
	if res.Requests != 100 {
		t.Errorf("failed requests are not counted: %d requests", res.Requests)
	}
}

func TestRunWriteMix(t *testing.T) {
	var writes, all atomic.Int64
	_, err := Run(context.Background(), TargetFunc(func(_ context.Context, r *Request) error {
		all.Add(1)
		if r.Write {
			writes.Add(1)
		}
		return nil
	}), Options{Mode: Closed, Concurrency: 2, Duration: time.Minute, Requests: 20_000, WriteFraction: 0.25,
		Keys: KeyOptions{Distribution: Uniform, Space: 10}})
	if err != nil {
		t.Fatal(err)
	}
	if share := float64(writes.Load()) / float64(all.Load()); share < 0.23 || share > 0.27 {
		t.Errorf("write share %.3f, want 0.25", share)
	}
}

func TestOptionsCheck(t *testing.T) {
	good := Options{Mode: Closed, Concurrency: 1, Duration: time.Second, Keys: KeyOptions{Distribution: Uniform, Space: 1}}
	if err := good.Check(); err != nil {
		t.Fatal(err)
	}
	for name, edit := range map[string]func(*Options){
		"mode":        func(o *Options) { o.Mode = "burst" },
		"open rate":   func(o *Options) { o.Mode = Open },
		"concurrency": func(o *Options) { o.Concurrency = 0 },
		"duration":    func(o *Options) { o.Duration = 0 },
		"too long":    func(o *Options) { o.Duration = 2 * MaxDuration },
		"count":       func(o *Options) { o.Requests = MaxRequests + 1 },
		"writes":      func(o *Options) { o.WriteFraction = 1.5 },
		"keys":        func(o *Options) { o.Keys.Space = 0 },
	} {
		o := good
		edit(&o)
		if o.Check() == nil {
			t.Errorf("%s: bad options pass Check", name)
		}
	}
}

// TargetFunc makes a target of a function; every worker calls it.
type TargetFunc func(context.Context, *Request) error

func (f TargetFunc) NewWorker() (Worker, error) { return f, nil }

func (f TargetFunc) Do(ctx context.Context, r *Request) error { return f(ctx, r) }

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := Median(c.in); got != c.want {
			t.Errorf("Median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// RunArm divides the CPU time each process used during the run (warm-up included) by the
// requests sent: the server's and Envoy's apart, each only when the arm can read it.
func TestRunArmCPUPerRequest(t *testing.T) {
	clock := &virtualClock{}
	target := &stallTarget{clock: clock, service: time.Millisecond, stallAt: -1}
	counter := func(step time.Duration) func() (time.Duration, error) {
		var used time.Duration
		return func() (time.Duration, error) { used += step; return used, nil }
	}
	o := Options{Mode: Closed, Concurrency: 1, Duration: time.Hour, Requests: 100, Keys: KeyOptions{Distribution: Uniform, Space: 10}, Clock: clock}
	res, err := RunArm(context.Background(), Arm{Name: "a", Target: target, ServerCPU: counter(2 * time.Millisecond), EnvoyCPU: counter(5 * time.Millisecond)}, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.AllRequests != 100 || res.ServerCPUPerRequest != 20_000 || res.EnvoyCPUPerRequest != 50_000 {
		t.Errorf("%d requests, server %v ns, envoy %v ns per request; want 100, 20000, 50000", res.AllRequests, res.ServerCPUPerRequest, res.EnvoyCPUPerRequest)
	}
	res, err = RunArm(context.Background(), Arm{Name: "b", Target: target}, o)
	if err != nil {
		t.Fatal(err)
	}
	if res.ServerCPUPerRequest != 0 || res.EnvoyCPUPerRequest != 0 {
		t.Errorf("an arm without CPU readers reports %v and %v", res.ServerCPUPerRequest, res.EnvoyCPUPerRequest)
	}
	failing := func() (time.Duration, error) { return 0, errors.New("no such process") }
	if _, err := RunArm(context.Background(), Arm{Name: "c", Target: target, EnvoyCPU: failing}, o); err == nil {
		t.Error("an Envoy CPU that cannot be read is not an error")
	}
}
