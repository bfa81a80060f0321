package extproc

import (
	"sync"
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// TestPartsCacheCollisionsAndReloads checks that the prebuilt parts of a routed response are
// always those of the decision at hand: when two partitions share a slot, when a reload gives a
// partition another id at the same index, and when the header names change.
func TestPartsCacheCollisionsAndReloads(t *testing.T) {
	names := config.DefaultHeaders()
	renamed := names
	renamed.Partition = "x-shard"
	metadataOnly := names
	metadataOnly.SetBy = config.SetByEnvoy
	svc := &config.Service{Name: "users"}
	decision := func(id string, index int, role resolver.Role, h config.Headers) resolver.Decision {
		return resolver.Decision{Config: &config.Config{Headers: h}, Service: svc, Partition: &resolver.Partition{ID: id, Index: index}, Role: role}
	}
	var c partsCache
	for round := 0; round < 3; round++ {
		for _, d := range []resolver.Decision{
			decision("users/0", 0, resolver.RolePrimary, names),
			decision("users/0", 0, resolver.RoleSecondary, names),
			decision("users/0", 0, resolver.RoleAny, names),
			// Index 1024 maps to the slot of index 0 (4096 slots, 4 per index).
			decision("users/1024", partsSlots/4, resolver.RolePrimary, names),
			// A reload that renamed partition 0.
			decision("users/zero", 0, resolver.RolePrimary, names),
			decision("users/0", 0, resolver.RolePrimary, renamed),
			// A reload that changed the answer's shape.
			decision("users/0", 0, resolver.RolePrimary, metadataOnly),
		} {
			a := answer{parts: &c.get(d).answer, key: []byte("5"), keyHeader: d.Config.Headers.Key}
			if got, want := decodeEncoded(t, a.appendTo(nil)), wantAnswer(d, &a, "", nil); !proto.Equal(got, want) {
				t.Errorf("%s %v %v: answer %v, want %v", d.Partition.ID, d.Role, d.Config.Headers, got, want)
			}
		}
	}
	d := decision("users/7", 7, resolver.RolePrimary, names)
	first := c.get(d)
	if again := c.get(d); again != first {
		t.Error("a repeated decision does not hit the cache")
	}
}

// TestPartsCacheConcurrent has many streams build, read and marshal shared parts at once; the
// race detector checks that sharing them is safe.
func TestPartsCacheConcurrent(t *testing.T) {
	f := newFixture(t)
	f.handler.log = discardLogger()
	msgs := []*struct {
		method, path string
		key          []string
	}{
		{"PUT", "/api/users", []string{"x-user-id", "3"}},
		{"GET", "/api/users", []string{"x-user-id", "20"}},
		{"GET", "/api/sessions/current", []string{"cookie", "session=abc"}},
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				m := msgs[(g+i)%len(msgs)]
				s := newFakeStream(benchHeaders(m.method, "users.example.com", m.path, m.key...))
				if err := f.handler.Process(s); err != nil || len(s.out) != 1 || !isRouted(s.out[0]) {
					t.Errorf("%s %s: %v, %v", m.method, m.path, s.out, err)
					return
				}
				if _, err := proto.Marshal(s.out[0]); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestHandlerAllocations holds the handler to its allocation budget: a routed request may cost
// at most 10 allocations more than the no-op handler's. It costs 2 when this is written (the
// scratch, and the copy of the message its decoder keeps), fewer than the no-op handler's 3,
// to which the fake stream hands messages already decoded.
func TestHandlerAllocations(t *testing.T) {
	f := newFixture(t)
	f.handler.log = discardLogger()
	msg := benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17")
	allocs := func(srv extprocv3.ExternalProcessorServer, ok func(*extprocv3.ProcessingResponse) bool) float64 {
		s := newFakeStream(msg)
		s.out = make([]*extprocv3.ProcessingResponse, 0, 1)
		if err := srv.Process(s); err != nil || len(s.out) != 1 || !ok(s.out[0]) {
			t.Fatalf("unexpected answer %v, %v", s.out, err)
		}
		s.raw = true
		return testing.AllocsPerRun(500, func() {
			s.reset()
			if err := srv.Process(s); err != nil {
				t.Fatal(err)
			}
		})
	}
	routed, noop := allocs(f.handler, isRouted), allocs(noopHandler{}, isEmptyHeaders)
	if routed > noop+10 {
		t.Errorf("a routed request allocates %v times, the no-op handler %v: want at most 10 more", routed, noop)
	}
	t.Logf("allocations per request: handler %v, no-op %v", routed, noop)
}
