package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// BackendHeader is the response header in which a backend names itself by its address.
const BackendHeader = "x-backend"

// RequestIDHeader is the request header in which a test names each request it sends; a
// backend records what it served under that name (Backend.Requests), so that the test can
// tell which replica served which request. Requests without it are only counted, as the load
// test's are.
const RequestIDHeader = "x-loadtest-request-id"

// ReplicaHeader and ReplicaRoleHeader are the response headers in which a backend that plays a
// replica of a naming view gives the replica's name and its role there.
const (
	ReplicaHeader     = "x-backend-replica"
	ReplicaRoleHeader = "x-backend-role"
)

// Echo is what a backend answers: who it is and how partroute labelled the request.
type Echo struct {
	Backend   string `json:"backend"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Partition string `json:"partition,omitempty"`
	// Role is the role partroute asked for (primary, secondary or any), not the backend's own.
	Role string `json:"role,omitempty"`
	Key  string `json:"key,omitempty"`
	// Replica and ReplicaRole are the replica the backend plays and that replica's role in
	// the naming view, when it was started as one (BackendSpec).
	Replica     string `json:"replica,omitempty"`
	ReplicaRole string `json:"replicaRole,omitempty"`
}

// BackendSpec is a backend to start: where it listens and which replica it says it is.
type BackendSpec struct {
	// Addr is host:port. Port 0 takes a free port, held from the start, so that no other
	// process can answer in the backend's place.
	Addr string
	// Replica and Role, when set, are reported in every answer (Echo and response headers):
	// the replica of the naming view the backend plays, and its role there.
	Replica, Role string
	// Partition, when set, is the id of the partition the backend holds. A request that
	// partroute labelled with another partition (or with none) is refused with 421
	// Misdirected Request and counted (Backend.Misrouted), as a store refuses a key it does
	// not own.
	Partition string
}

// ServedRequest is what a backend recorded of a request that named itself in RequestIDHeader.
type ServedRequest struct {
	Method string
	// Partition and Role are how partroute labelled the request (x-partition-id and
	// x-partition-role): the partition it chose and the role it asked for.
	Partition, Role string
	// Headers holds every value of x-partition-id, x-partition-role and x-partition-key the
	// request carried, under their canonical names, and none of a header it did not carry:
	// Partition and Role read one value each, and cannot tell a header sent twice, or sent
	// empty, from one sent once or not at all.
	Headers http.Header
	// At is when the backend served it.
	At time.Time
	// Times is how often the backend served a request of this id; more than 1 is a request
	// sent, or retried, twice.
	Times int
}

// Backend is one HTTP server on loopback that plays a replica. It counts what it serves, so
// that a test can compare what clients were told with what replicas saw.
type Backend struct {
	Addr string
	// Replica and Role are what the backend reports being (BackendSpec); empty for a backend
	// that plays no particular replica.
	Replica, Role string
	// Partition is the partition the backend holds (BackendSpec); empty for one that takes
	// any request.
	Partition string
	srv       *http.Server
	lis       net.Listener
	served    atomic.Int64
	writes    atomic.Int64
	misrouted atomic.Int64
	mu        sync.Mutex
	requests  map[string]ServedRequest
	// status, when not zero, is answered instead of 200: a replica that fails.
	status atomic.Int32
	// stall makes every request wait unanswered until its connection closes (Stall), and
	// stalled counts the requests waiting so.
	stall   atomic.Bool
	stalled atomic.Int64
}

// Served returns how many requests the backend answered with 2xx.
func (b *Backend) Served() int64 { return b.served.Load() }

// Writes returns how many non-read requests the backend answered with 2xx.
func (b *Backend) Writes() int64 { return b.writes.Load() }

// Misrouted returns how many requests the backend refused because partroute had labelled them
// with a partition other than its own.
func (b *Backend) Misrouted() int64 { return b.misrouted.Load() }

// Requests returns what the backend served of the requests that carried RequestIDHeader, by
// their id. A request refused (FailWith, Misrouted) is not among them.
func (b *Backend) Requests() map[string]ServedRequest {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]ServedRequest, len(b.requests))
	maps.Copy(out, b.requests)
	return out
}

// FailWith makes the backend answer every request with status (0 restores normal service).
func (b *Backend) FailWith(status int) { b.status.Store(int32(status)) } //nolint:gosec // an HTTP status, three digits

// Stall makes the backend hold every request it receives from now on without an answer, until
// the request's connection closes (Close cuts them all off): a replica that hangs.
func (b *Backend) Stall() { b.stall.Store(true) }

// Stalled returns how many requests are waiting on a stalled backend now.
func (b *Backend) Stalled() int64 { return b.stalled.Load() }

// Close stops the backend at once; requests in flight are cut off, as when a replica dies.
func (b *Backend) Close() error { return b.srv.Close() }

// Stop stops the backend the way a replica process shuts down: it refuses new connections,
// finishes the requests it has accepted, and closes idle ones.
func (b *Backend) Stop(ctx context.Context) error { return b.srv.Shutdown(ctx) }

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if b.stall.Load() {
		b.stalled.Add(1)
		defer b.stalled.Add(-1)
		<-r.Context().Done()
		return
	}
	b.identify(w.Header())
	if s := b.status.Load(); s != 0 {
		w.WriteHeader(int(s))
		return
	}
	e := Echo{
		Backend:     b.Addr,
		Method:      r.Method,
		Path:        r.URL.RequestURI(),
		Partition:   r.Header.Get("x-partition-id"),
		Role:        r.Header.Get("x-partition-role"),
		Key:         r.Header.Get("x-partition-key"),
		Replica:     b.Replica,
		ReplicaRole: b.Role,
	}
	if b.Partition != "" && e.Partition != b.Partition {
		b.misrouted.Add(1)
		http.Error(w, fmt.Sprintf("backend %s holds partition %s, not %q", b.Addr, b.Partition, e.Partition), http.StatusMisdirectedRequest)
		return
	}
	if id := r.Header.Get(RequestIDHeader); id != "" {
		b.mu.Lock()
		rec := b.requests[id]
		b.requests[id] = ServedRequest{Method: r.Method, Partition: e.Partition, Role: e.Role, Headers: partitionHeaders(r.Header), At: time.Now(), Times: rec.Times + 1}
		b.mu.Unlock()
	}
	w.Header().Set("content-type", "application/json")
	b.served.Add(1)
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		b.writes.Add(1)
	}
	_ = json.NewEncoder(w).Encode(e)
}

// partitionHeaders are the values of the partition, role and key headers in h.
func partitionHeaders(h http.Header) http.Header {
	out := http.Header{}
	for _, name := range []string{"x-partition-id", "x-partition-role", "x-partition-key"} {
		if v := h.Values(name); len(v) > 0 {
			out[http.CanonicalHeaderKey(name)] = slices.Clone(v)
		}
	}
	return out
}

// identify names the backend in the response headers h.
func (b *Backend) identify(h http.Header) {
	h.Set(BackendHeader, b.Addr)
	if b.Replica != "" {
		h.Set(ReplicaHeader, b.Replica)
	}
	if b.Role != "" {
		h.Set(ReplicaRoleHeader, b.Role)
	}
}

// Backends is a set of backends by address.
type Backends struct {
	mu   sync.Mutex
	byAd map[string]*Backend
	// list holds the backends in the order they were started.
	list []*Backend
}

// StartBackends starts one backend on each address (host:port, loopback); an address given
// twice gets one backend.
func StartBackends(addrs []string) (*Backends, error) {
	seen := map[string]bool{}
	specs := make([]BackendSpec, 0, len(addrs))
	for _, a := range addrs {
		if !seen[a] {
			seen[a] = true
			specs = append(specs, BackendSpec{Addr: a})
		}
	}
	return StartReplicas(specs)
}

// StartReplicas starts one backend for each spec; All returns them in the order of specs. The
// set knows each backend by the address it listens on, so several specs may ask for port 0.
func StartReplicas(specs []BackendSpec) (*Backends, error) {
	bs := &Backends{byAd: map[string]*Backend{}}
	for _, s := range specs {
		b, err := StartReplica(s)
		if err != nil {
			bs.Close()
			return nil, err
		}
		bs.byAd[b.Addr] = b
		bs.list = append(bs.list, b)
	}
	return bs, nil
}

// StartBackend starts one backend on addr.
func StartBackend(addr string) (*Backend, error) {
	return StartReplica(BackendSpec{Addr: addr})
}

// StartReplica starts one backend as spec says.
func StartReplica(spec BackendSpec) (*Backend, error) {
	lis, err := net.Listen("tcp", spec.Addr)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", spec.Addr, err)
	}
	b := &Backend{Addr: lis.Addr().String(), Replica: spec.Replica, Role: spec.Role, Partition: spec.Partition, lis: lis, requests: map[string]ServedRequest{}}
	b.srv = &http.Server{Handler: b, ReadHeaderTimeout: 5 * time.Second}
	// Serve returns only when the backend is closed, which is how a test stops a replica.
	go func() { _ = b.srv.Serve(lis) }()
	return b, nil
}

// Get returns the backend at addr, or nil.
func (bs *Backends) Get(addr string) *Backend {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return bs.byAd[addr]
}

// All returns every backend, in the order they were started.
func (bs *Backends) All() []*Backend {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	return slices.Clone(bs.list)
}

// Close stops every backend: gracefully, and at once after a bounded wait, so that a client
// holding a request open cannot keep it from returning.
func (bs *Backends) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, b := range bs.All() {
		if b.srv.Shutdown(ctx) != nil {
			_ = b.srv.Close()
		}
	}
}
