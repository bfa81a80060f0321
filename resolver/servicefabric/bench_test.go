package servicefabric

import (
	"context"
	"testing"

	"github.com/partroute/partroute/keying"
)

// BenchmarkPartitionHit measures the request path once a partition is cached: it runs for
// every proxied request and must not allocate.
func BenchmarkPartitionHit(b *testing.B) {
	env := newEnv(b, nil, nil)
	ctx := context.Background()
	svc := env.cfg.Service("regions")
	key := keying.Key{Index: 0, Name: "eu"}
	if _, err := env.src.Partition(ctx, svc, key); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := env.src.Partition(ctx, svc, key); err != nil {
			b.Fatal(err)
		}
	}
}

func TestPartitionHitDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	svc := env.cfg.Service("users")
	if _, err := env.src.Partition(ctx, svc, keying.Key{Index: 0}); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = env.src.Partition(ctx, svc, keying.Key{Index: 0}) }); n != 0 {
		t.Errorf("%v allocations per cached Partition, want 0", n)
	}
}
