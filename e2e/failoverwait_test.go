package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/internal/testkit"
)

// startFailoverWaitStack is the failover stack (file naming source, xDS to a real Envoy) with
// writes held for up to wait.
func startFailoverWaitStack(t *testing.T, wait string) *failoverStack {
	t.Helper()
	return startFailoverStackWithReplicas(t, "{failoverWait: "+wait+"}", nil)
}

// removePrimary writes partition 0 without a primary, b and c its secondaries, and returns
// when partroute decides with that view (its xDS server serves its snapshot): from then on,
// no write is decided with the old primary.
func (f *failoverStack) removePrimary() time.Time {
	f.t.Helper()
	before := f.serving(f.admin)
	f.writeNaming("", f.b, f.c)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	at, err := f.waitServing(ctx, f.admin, before, false)
	if err != nil {
		f.t.Error(err)
	}
	return at
}

// metricValue is the value of one series in a /metrics text, or -1 when it is missing.
func metricValue(text, series string) float64 {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	return -1
}

// Under a steady write load, partition 0 loses its primary for 800 ms, then a secondary is
// promoted: every write partroute decided after the primary went away is held through the gap
// and succeeds on the new primary; none reaches the old one.
func TestFailoverWaitHoldsWritesThroughTheGap(t *testing.T) {
	f := startFailoverWaitStack(t, "3s")
	const gap = 800 * time.Millisecond
	var (
		removedAt, gapSeen, promotedAt time.Time
		changes                        sync.WaitGroup
	)
	writes := f.steadyWrites(50, 4*time.Second, time.Second, func() {
		changes.Go(func() {
			removedAt = time.Now()
			gapSeen = f.removePrimary()
			// The gap is the scenario's, not a wait for a condition: the naming view stays
			// without a primary this long, as during a slow reconfiguration.
			timer := time.NewTimer(gap - time.Since(removedAt))
			<-timer.C
			before := f.serving(f.admin)
			promotedAt = time.Now()
			f.promote(f.b, f.c)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := f.waitAcked(ctx, before); err != nil {
				t.Error(err)
			}
		})
	})
	changes.Wait()
	if gapSeen.IsZero() {
		t.Fatal("partroute never served the view without a primary")
	}
	var inGap, seenLate, onOld int
	var longest time.Duration
	for _, w := range writes {
		switch {
		case w.sent.Before(removedAt):
			continue
		case w.sent.Before(gapSeen):
			// Sent while partroute had not yet read the change: the old primary may still
			// take it, as it would without a failover wait.
			seenLate++
			if w.status != http.StatusOK {
				t.Errorf("write sent %v after the removal, before partroute saw it: status %d (%s)", w.sent.Sub(removedAt), w.status, w.code)
			}
			continue
		}
		if w.sent.Before(promotedAt) {
			inGap++
		}
		if w.status != http.StatusOK || w.backend != f.b {
			t.Errorf("write sent %v after partroute saw the removal: status %d (%s), served by %q; want 200 from the new primary %s",
				w.sent.Sub(gapSeen).Round(time.Millisecond), w.status, w.code, w.backend, f.b)
		}
		if w.backend == f.a {
			onOld++
		}
		longest = max(longest, w.done.Sub(w.sent))
	}
	t.Logf("failover wait: %d writes; partroute saw the removal %v after it; %d writes sent in the gap, %d before partroute saw it; the longest held %v; %d on the old primary",
		len(writes), gapSeen.Sub(removedAt).Round(time.Millisecond), inGap, seenLate, longest.Round(time.Millisecond), onOld)
	if inGap < 20 {
		t.Errorf("only %d writes were sent in the gap of %v at 50/s", inGap, gap)
	}
	if longest < gap/2 {
		t.Errorf("the longest write took %v: writes of the gap were not held", longest)
	}
	m := f.metrics(f.admin)
	if got := metricValue(m, "partroute_failover_held_requests"); got != 0 {
		t.Errorf("partroute_failover_held_requests = %v after the failover, want 0", got)
	}
	if got := metricValue(m, `partroute_failover_hold_duration_seconds_count{end="published"}`); got < float64(inGap) {
		t.Errorf("hold_duration_seconds_count{end=published} = %v, want at least the %d writes of the gap:\n%s", got, inGap, grepLines(m, "partroute_failover_"))
	}
	if got := metricValue(m, `partroute_failover_hold_duration_seconds_count{end="timeout"}`); got != 0 {
		t.Errorf("hold_duration_seconds_count{end=timeout} = %v, want 0", got)
	}
}

// With the primary gone for longer than the wait, each write gets 503 partition_unavailable
// about the wait's time after it was sent, not Envoy's 504 at its message timeout.
func TestFailoverWaitAnswers503AtTheBound(t *testing.T) {
	const wait = 600 * time.Millisecond
	f := startFailoverWaitStack(t, wait.String())
	var gapSeen time.Time
	writes := f.steadyWrites(20, 2500*time.Millisecond, 500*time.Millisecond, func() { gapSeen = f.removePrimary() })
	n := 0
	for _, w := range writes {
		if w.sent.Before(gapSeen) {
			continue
		}
		took := w.done.Sub(w.sent)
		if w.status != http.StatusServiceUnavailable || w.code != "partition_unavailable" {
			t.Errorf("write sent %v into the gap: status %d (%s), want 503 partition_unavailable", w.sent.Sub(gapSeen), w.status, w.code)
			continue
		}
		// Answered once the wait is over, and well before the override's end.
		if took < wait-50*time.Millisecond || took > wait+400*time.Millisecond {
			t.Errorf("write sent %v into the gap answered after %v, want about the wait of %v", w.sent.Sub(gapSeen).Round(time.Millisecond), took.Round(time.Millisecond), wait)
		}
		n++
	}
	if n < 10 {
		t.Fatalf("only %d writes were sent into the gap", n)
	}
	t.Logf("failover wait of %v passed: %d writes answered 503", wait, n)
	if got := metricValue(f.metrics(f.admin), `partroute_failover_hold_duration_seconds_count{end="timeout"}`); got < float64(n) {
		t.Errorf("hold_duration_seconds_count{end=timeout} = %v, want at least %d", got, n)
	}
}

// A drain (partroute's context cancelled) answers every held write at once, 503
// partition_unavailable from partroute itself, and partroute then exits cleanly.
func TestFailoverWaitDrainAnswersHeldWrites(t *testing.T) {
	f := startFailoverWaitStack(t, "8s")
	f.removePrimary()
	const n = 10
	results := make(chan writeResult, n)
	for i := range n {
		go func() {
			w := writeResult{sent: time.Now()}
			req, _ := http.NewRequest("PUT", fmt.Sprintf("http://%s/api/orders/%d", f.envoy, i), http.NoBody)
			resp, err := f.client.Do(req)
			w.done = time.Now()
			if err == nil {
				w.status, w.code = resp.StatusCode, resp.Header.Get(extproc.ErrorHeader)
				resp.Body.Close()
			}
			results <- w
		}()
	}
	testkit.WaitFor(t, fmt.Sprintf("%d writes to be held", n), 10*time.Second, func() bool {
		return metricValue(f.metrics(f.admin), "partroute_failover_held_requests") == n
	})
	drainAt := time.Now()
	f.procs[0].Stop()
	exited := time.Since(drainAt)
	for range n {
		w := <-results
		if w.status != http.StatusServiceUnavailable || w.code != "partition_unavailable" {
			t.Errorf("held write at the drain: status %d (%q), want partroute's 503 partition_unavailable", w.status, w.code)
		}
		if took := w.done.Sub(drainAt); took > 2*time.Second {
			t.Errorf("held write answered %v after the drain began, want at once (the wait is 8s)", took)
		}
	}
	t.Logf("drain: %d held writes answered; partroute exited %v after the drain began", n, exited.Round(time.Millisecond))
}
