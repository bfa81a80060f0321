package loadtest

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// BackendHeader is the response header in which a backend names itself.
const BackendHeader = "x-backend"

// Echo is what a backend answers: who it is and how partroute labelled the request.
type Echo struct {
	Backend   string `json:"backend"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Partition string `json:"partition,omitempty"`
	Role      string `json:"role,omitempty"`
	Key       string `json:"key,omitempty"`
}

// Backend is one HTTP server on loopback that plays a replica. It counts what it serves, so
// that a test can compare what clients were told with what replicas saw.
type Backend struct {
	Addr   string
	srv    *http.Server
	lis    net.Listener
	served atomic.Int64
	writes atomic.Int64
	// status, when not zero, is answered instead of 200: a replica that fails.
	status atomic.Int32
}

// Served returns how many requests the backend answered with 2xx.
func (b *Backend) Served() int64 { return b.served.Load() }

// Writes returns how many non-read requests the backend answered with 2xx.
func (b *Backend) Writes() int64 { return b.writes.Load() }

// FailWith makes the backend answer every request with status (0 restores normal service).
func (b *Backend) FailWith(status int) { b.status.Store(int32(status)) }

// Close stops the backend at once; requests in flight are cut off, as when a replica dies.
func (b *Backend) Close() error { return b.srv.Close() }

// Stop stops the backend the way a replica process shuts down: it refuses new connections,
// finishes the requests it has accepted, and closes idle ones.
func (b *Backend) Stop(ctx context.Context) error { return b.srv.Shutdown(ctx) }

func (b *Backend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s := b.status.Load(); s != 0 {
		w.Header().Set(BackendHeader, b.Addr)
		w.WriteHeader(int(s))
		return
	}
	e := Echo{
		Backend:   b.Addr,
		Method:    r.Method,
		Path:      r.URL.RequestURI(),
		Partition: r.Header.Get("x-partition-id"),
		Role:      r.Header.Get("x-partition-role"),
		Key:       r.Header.Get("x-partition-key"),
	}
	w.Header().Set(BackendHeader, b.Addr)
	w.Header().Set("content-type", "application/json")
	b.served.Add(1)
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
	default:
		b.writes.Add(1)
	}
	_ = json.NewEncoder(w).Encode(e)
}

// Backends is a set of backends by address.
type Backends struct {
	mu   sync.Mutex
	byAd map[string]*Backend
}

// StartBackends starts one backend on each address (host:port, loopback).
func StartBackends(addrs []string) (*Backends, error) {
	bs := &Backends{byAd: map[string]*Backend{}}
	for _, a := range addrs {
		if _, dup := bs.byAd[a]; dup {
			continue
		}
		b, err := StartBackend(a)
		if err != nil {
			bs.Close()
			return nil, err
		}
		bs.byAd[a] = b
	}
	return bs, nil
}

// StartBackend starts one backend on addr.
func StartBackend(addr string) (*Backend, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("backend %s: %w", addr, err)
	}
	b := &Backend{Addr: lis.Addr().String(), lis: lis}
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

// All returns every backend.
func (bs *Backends) All() []*Backend {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	out := make([]*Backend, 0, len(bs.byAd))
	for _, b := range bs.byAd {
		out = append(out, b)
	}
	return out
}

// Close stops every backend.
func (bs *Backends) Close() {
	for _, b := range bs.All() {
		_ = b.srv.Shutdown(context.Background())
	}
}
