package resolver_test

import (
	"context"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// observingListener records what it is told.
type observingListener struct {
	seen []int
}

func (o *observingListener) ObserveUpstream(_ *config.Service, index, status int, _ keying.Headers) bool {
	o.seen = append(o.seen, status)
	return index == 0
}

func TestDecisionFeedback(t *testing.T) {
	cfg, err := config.Parse([]byte(`naming: {file: n.yaml}
services:
  - name: settings
    match: {pathPrefix: /s}
    partitioning: {scheme: singleton}
`), "/p/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte("services:\n  settings:\n    partitions:\n      - replicas: [{address: 10.0.0.1:80, role: primary}]\n"), "/p/n.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs := &observingListener{}
	r := resolver.New(&resolver.State{Config: cfg, Naming: view, Upstream: obs})
	d := r.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/s"})
	if d.Err != nil || d.Partition == nil || !d.Upstream.Wanted() {
		t.Fatalf("decision %+v", d)
	}
	// The feedback stays tied to the state of its lookup: a state swapped in since, without a
	// listener, does not cut it off.
	r.Swap(&resolver.State{Config: cfg, Naming: view})
	if !d.Upstream.Report(503, keying.HeaderList{}) || len(obs.seen) != 1 || obs.seen[0] != 503 {
		t.Errorf("a routed request's response did not reach the naming source: %v", obs.seen)
	}
	r.Swap(&resolver.State{Config: cfg, Naming: view, Upstream: obs})
	rejected := r.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/elsewhere"})
	if rejected.Upstream.Wanted() || rejected.Upstream.Report(503, nil) || len(obs.seen) != 1 {
		t.Errorf("an unrouted request reached the naming source: %v", obs.seen)
	}

	// A state without a listener wants nothing.
	plain := resolver.New(&resolver.State{Config: cfg, Naming: view})
	d = plain.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/s"})
	if d.Upstream.Wanted() || d.Upstream.Report(503, nil) {
		t.Error("a plain view claims to re-resolve")
	}
}
