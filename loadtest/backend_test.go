package loadtest

import (
	"encoding/json"
	"net"
	"net/http"
	"testing"
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
