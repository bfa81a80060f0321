package resolver_test

import (
	"context"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// observingNaming serves one partition from a view and records what it is told.
type observingNaming struct {
	*resolver.View
	seen []int
}

func (o *observingNaming) ObserveUpstream(_ *config.Service, index int, status int, _ keying.Headers) bool {
	o.seen = append(o.seen, status)
	return index == 0
}

func TestObserveResponse(t *testing.T) {
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
	obs := &observingNaming{View: view}
	r := resolver.New(&resolver.State{Config: cfg, Naming: obs})
	d := r.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/s"})
	if d.Err != nil || d.Partition == nil {
		t.Fatalf("decision %+v", d)
	}
	if !r.ObserveResponse(&d, 503, keying.HeaderList{}) || len(obs.seen) != 1 || obs.seen[0] != 503 {
		t.Errorf("a routed request's response did not reach the naming source: %v", obs.seen)
	}
	rejected := r.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/elsewhere"})
	if r.ObserveResponse(&rejected, 503, nil) || r.ObserveResponse(nil, 503, nil) || len(obs.seen) != 1 {
		t.Errorf("an unrouted request reached the naming source: %v", obs.seen)
	}

	// A naming view that does not observe is left alone.
	plain := resolver.New(&resolver.State{Config: cfg, Naming: view})
	d = plain.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/s"})
	if plain.ObserveResponse(&d, 503, nil) {
		t.Error("a plain view claims to re-resolve")
	}
}
