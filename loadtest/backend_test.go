package loadtest

import (
	"encoding/json"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/partroute/partroute/internal/testkit"
)

// TestBackendReportsReplica checks that a backend started as a replica says which one, and
// with what role, in its answer and its headers, apart from the role partroute asked for; and
// that a plain backend says only its address.
func TestBackendReportsReplica(t *testing.T) {
	bs, err := StartReplicas([]BackendSpec{
		{Addr: "127.0.0.1:0", Replica: "users-1/replica-2", Role: "secondary"},
		{Addr: "127.0.0.1:0"},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	all := bs.All()
	if len(all) != 2 || all[0].Addr == all[1].Addr {
		t.Fatalf("two specs on port 0 should give two backends on their own ports, got %d", len(all))
	}
	if all[0].Replica != "users-1/replica-2" || all[1].Replica != "" {
		t.Errorf("All should list the backends in the order of their specs: %q, %q", all[0].Replica, all[1].Replica)
	}
	for _, b := range all {
		if bs.Get(b.Addr) != b {
			t.Errorf("Get(%s) does not return the backend listening there", b.Addr)
		}
		req, err := http.NewRequest(http.MethodGet, "http://"+b.Addr+"/api/users/9", http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("x-partition-id", "users-1")
		req.Header.Set("x-partition-role", "any")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e Echo
		err = json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := Echo{Backend: b.Addr, Method: "GET", Path: "/api/users/9", Partition: "users-1", Role: "any", Replica: b.Replica, ReplicaRole: b.Role}
		if e != want {
			t.Errorf("backend %s answered %+v, want %+v", b.Addr, e, want)
		}
		for h, v := range map[string]string{BackendHeader: b.Addr, ReplicaHeader: b.Replica, ReplicaRoleHeader: b.Role} {
			if got := resp.Header.Get(h); got != v {
				t.Errorf("backend %s: header %s is %q, want %q", b.Addr, h, got, v)
			}
		}
		if b.Replica == "" && (resp.Header.Values(ReplicaHeader) != nil || resp.Header.Values(ReplicaRoleHeader) != nil) {
			t.Errorf("a backend that plays no replica sent replica headers: %v", resp.Header)
		}
	}
}

// TestStartBackendsOnePerAddress keeps StartBackends' contract: an address given twice gets
// one backend.
func TestStartBackendsOnePerAddress(t *testing.T) {
	probe, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := probe.Addr().String()
	probe.Close()
	bs, err := StartBackends([]string{addr, addr})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	if n := len(bs.All()); n != 1 {
		t.Errorf("%d backends for one address given twice, want 1", n)
	}
}

// TestBackendRecordsRequestsAndRefusesOtherPartitions checks that a backend records the
// requests that carry an id, with how partroute labelled them and how often they came, and
// refuses a request labelled with a partition it does not hold.
func TestBackendRecordsRequestsAndRefusesOtherPartitions(t *testing.T) {
	b, err := StartReplica(BackendSpec{Addr: "127.0.0.1:0", Partition: "orders-0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	send := func(method, id, partition, role string) int {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+b.Addr+"/api/orders/1", http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		if id != "" {
			req.Header.Set(RequestIDHeader, id)
		}
		if partition != "" {
			req.Header.Set("x-partition-id", partition)
		}
		req.Header.Set("x-partition-role", role)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		method, id, partition, role string
		want                        int
	}{
		{http.MethodPut, "w1", "orders-0", "primary", http.StatusOK},
		{http.MethodPut, "w1", "orders-0", "primary", http.StatusOK}, // the same id again
		{http.MethodGet, "r1", "orders-0", "any", http.StatusOK},
		{http.MethodGet, "", "orders-0", "any", http.StatusOK}, // no id: counted, not recorded
		{http.MethodPut, "w2", "orders-1", "primary", http.StatusMisdirectedRequest},
		{http.MethodGet, "r2", "", "any", http.StatusMisdirectedRequest},
	} {
		if got := send(tc.method, tc.id, tc.partition, tc.role); got != tc.want {
			t.Errorf("%s %s labelled %q: status %d, want %d", tc.method, tc.id, tc.partition, got, tc.want)
		}
	}
	got := b.Requests()
	if len(got) != 2 {
		t.Errorf("recorded %v, want w1 and r1 only", got)
	}
	if w := got["w1"]; w.Method != http.MethodPut || w.Partition != "orders-0" || w.Role != "primary" || w.Times != 2 || w.At.IsZero() {
		t.Errorf("w1 recorded as %+v, want a PUT to orders-0 as primary, served twice, with its time", w)
	}
	if r := got["r1"]; r.Method != http.MethodGet || r.Role != "any" || r.Times != 1 {
		t.Errorf("r1 recorded as %+v, want a GET with role any, served once", r)
	}
	if b.Misrouted() != 2 || b.Served() != 4 || b.Writes() != 2 {
		t.Errorf("misrouted %d, served %d, writes %d; want 2, 4, 2", b.Misrouted(), b.Served(), b.Writes())
	}
}

// A backend records every value of the partition, role and key headers a request carried, a
// header sent twice or empty included, and nothing of one it did not carry.
func TestBackendRecordsPartitionHeaders(t *testing.T) {
	b, err := StartBackend("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for id, headers := range map[string]http.Header{
		"twice": {"X-Partition-Key": {"5", "250"}, "X-Partition-Role": {""}, "X-Other": {"x"}},
		"none":  {"X-Other": {"x"}},
	} {
		req, err := http.NewRequest(http.MethodGet, "http://"+b.Addr+"/api/orders/1", http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		req.Header = headers.Clone()
		req.Header.Set(RequestIDHeader, id)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	got := b.Requests()
	if h := got["twice"].Headers; len(h) != 2 || !slices.Equal(h["X-Partition-Key"], []string{"5", "250"}) || !slices.Equal(h["X-Partition-Role"], []string{""}) {
		t.Errorf("recorded headers %v, want the key's two values and the role's empty one alone", h)
	}
	if h := got["none"].Headers; len(h) != 0 {
		t.Errorf("recorded headers %v of a request without any", h)
	}
}

// A stalled backend answers nothing and holds each request until it is closed, which cuts the
// request off.
func TestStalledBackendHoldsRequestsUntilClosed(t *testing.T) {
	b, err := StartBackend("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b.Stall()
	done := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + b.Addr + "/api/users/9")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	testkit.WaitFor(t, "the request to stall", 5*time.Second, func() bool { return b.Stalled() == 1 })
	select {
	case err := <-done:
		t.Fatalf("a stalled backend answered: %v", err)
	default:
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err == nil {
		t.Error("the stalled request got an answer when the backend closed, want it cut off")
	}
	testkit.WaitFor(t, "the stalled count to drop", 5*time.Second, func() bool { return b.Stalled() == 0 })
	if b.Served() != 0 {
		t.Errorf("a stalled backend counted %d requests served", b.Served())
	}
}
