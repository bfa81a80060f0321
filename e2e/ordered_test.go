package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
)

// orderedRetry lets a read walk the whole list of partition 0: two secondaries, then the
// primary.
var orderedRetry = &envoyconfig.Retry{NumRetries: 2}

// startOrderedStack is the failover stack (a primary, b and c secondaries of partition 0, d
// the primary of partition 1) with ordered selection and reads under the given policy.
func startOrderedStack(t *testing.T, reads string) *failoverStack {
	t.Helper()
	return startFailoverStackWithReplicas(t, "{reads: "+reads+", selection: ordered}", orderedRetry)
}

// read sends a GET for key through Envoy and returns its status and the backend that answered.
func (f *failoverStack) read(key int) (int, string) {
	f.t.Helper()
	resp, err := f.client.Get(fmt.Sprintf("http://%s/api/orders/%d", f.envoy, key))
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get(loadtest.BackendHeader)
}

// With both secondaries of a partition dead (the naming view still calls them healthy), reads
// under the secondary policy walk partroute's list past them and are served by the primary.
// The subset load balancer alone would retry among the dead secondaries and fail.
func TestOrderedReadsFallBackToThePrimary(t *testing.T) {
	f := startOrderedStack(t, "secondary")
	for _, dead := range []string{f.b, f.c} {
		if err := f.backends.Get(dead).Close(); err != nil {
			t.Fatal(err)
		}
	}
	for key := range 20 {
		if status, backend := f.read(key); status != http.StatusOK || backend != f.a {
			t.Fatalf("read of key %d with both secondaries dead: %d from %q, want 200 from the primary %s", key, status, backend, f.a)
		}
	}
}

// With the first replica of some lists dead, the retry lands on the second of the list, not
// anywhere in the partition: under the any policy a list is the two secondaries (from a random
// one), then the primary, so every read is served by the live secondary and none by the
// primary. The subset load balancer would send about half of the retries to the primary.
func TestOrderedRetryLandsOnTheSecondHost(t *testing.T) {
	f := startOrderedStack(t, "any")
	if err := f.backends.Get(f.b).Close(); err != nil {
		t.Fatal(err)
	}
	const reads = 40
	for i := range reads {
		if status, backend := f.read(i % 50); status != http.StatusOK || backend != f.c {
			t.Fatalf("read %d with secondary %s dead: %d from %q, want 200 from the other secondary %s", i, f.b, status, backend, f.c)
		}
	}
	if n := f.backends.Get(f.a).Served(); n != 0 {
		t.Errorf("the primary served %d of %d reads: retries did not follow the list", n, reads)
	}
}

// A list made stale by a failover never reaches another partition. Reads are decided (each
// list: partition 0's two secondaries and its primary) and their first attempts hang on a
// secondary; meanwhile every replica of the list leaves partition 0, which gets new ones, and
// Envoy takes the new endpoints. The attempts are then cut off: each retry finds no host of
// its list left in the cluster, and the partition's own subset, not the cluster at large,
// serves it. A fallback to the whole cluster would send each read to the right replica one
// time in three, and all three reads there one time in 27.
func TestStaleOrderedListStaysInThePartition(t *testing.T) {
	f := startOrderedStack(t, "secondary")
	newAddrs := testkit.FreePorts(t, 2)
	fresh, err := loadtest.StartBackends(newAddrs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fresh.Close)
	newPrimary, newSecondary := newAddrs[0], newAddrs[1]
	b, c := f.backends.Get(f.b), f.backends.Get(f.c)
	b.Stall()
	c.Stall()

	type answer struct {
		status  int
		backend string
		body    string
		err     error
	}
	// Three, as Envoy lets a cluster have at most three retries in flight by default
	// (circuit_breakers max_retries): a fourth would get its reset, unretried.
	const reads = 3
	got := make(chan answer, reads)
	for key := range reads {
		go func() {
			resp, err := f.client.Get(fmt.Sprintf("http://%s/api/orders/%d", f.envoy, key))
			if err != nil {
				got <- answer{err: err}
				return
			}
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
			resp.Body.Close()
			got <- answer{status: resp.StatusCode, backend: resp.Header.Get(loadtest.BackendHeader), body: string(body)}
		}()
	}
	testkit.WaitFor(t, "the reads' first attempts to hang on the secondaries", 10*time.Second, func() bool { return b.Stalled()+c.Stalled() == reads })

	old := f.serving(f.admin)
	f.writeNaming(newPrimary, newSecondary)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := f.waitAcked(ctx, old); err != nil {
		t.Fatal(err)
	}
	// The old replicas die; the hanging attempt is cut off and retried.
	for _, old := range []string{f.a, f.b, f.c} {
		_ = f.backends.Get(old).Close()
	}
	for range reads {
		var a answer
		select {
		case a = <-got:
		case <-ctx.Done():
			t.Fatal("a read got no answer")
		}
		if a.err != nil || a.status != http.StatusOK || a.backend != newSecondary {
			t.Errorf("read retried after the failover: %d %q from %q (%v), want 200 from partition 0's new secondary %s", a.status, a.body, a.backend, a.err, newSecondary)
		}
	}
	if n := f.backends.Get(f.d).Served() + fresh.Get(newPrimary).Served(); n != 0 {
		t.Errorf("replicas outside partition 0's secondaries served %d requests", n)
	}
}
