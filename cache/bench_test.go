package cache

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// partitionKey and replicas are shaped like the resolver's key and value: the cache is keyed by
// (service, partition) and holds a versioned replica set.
type partitionKey struct {
	service, partition string
}

type replicas struct {
	version   int64
	endpoints []string
}

func newBenchCache(tb testing.TB) *Cache[partitionKey, replicas] {
	tb.Helper()
	c, err := New(Options[partitionKey, replicas]{
		Size:         100_000,
		TTL:          time.Hour,
		StaleIfError: 5 * time.Minute,
		Fill: func(_ context.Context, _ partitionKey, prev replicas, _ bool) (replicas, error) {
			return replicas{version: prev.version + 1, endpoints: []string{"10.0.0.1:8080", "10.0.0.2:8080"}}, nil
		},
		Metrics: prometheus.NewRegistry(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func BenchmarkGetHit(b *testing.B) {
	c := newBenchCache(b)
	ctx := context.Background()
	k := partitionKey{service: "users", partition: "p-2"}
	if _, _, err := c.Get(ctx, k); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, res, _ := c.Get(ctx, k); res != Hit {
			b.Fatalf("result %v; want hit", res)
		}
	}
}

func BenchmarkGetHitParallel(b *testing.B) {
	c := newBenchCache(b)
	ctx := context.Background()
	keys := make([]partitionKey, 1024)
	for i := range keys {
		keys[i] = partitionKey{service: "users", partition: "p-" + strconv.Itoa(i)}
		if _, _, err := c.Get(ctx, keys[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if _, res, _ := c.Get(ctx, keys[i%len(keys)]); res != Hit {
				b.Errorf("result %v; want hit", res)
				return
			}
			i++
		}
	})
}
