package loadtest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/cache"
	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// bigConfig is a configuration whose one service has n partitions and keys by hash, like the
// load test's scenario.
func bigConfig(tb testing.TB, n int) *config.Config {
	tb.Helper()
	dir := tb.TempDir()
	text := fmt.Sprintf(`listen: {extproc: "127.0.0.1:0", admin: "127.0.0.1:0"}
naming: {source: file, file: naming.yaml}
services:
  - name: %s
    match: {pathPrefix: %s}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 1099511627775, count: %d}
    key: {sources: [{path: "%s{id}"}], transform: hash}
    replicas: {reads: secondary}
`, ScenarioService, strings.TrimSuffix(ScenarioPathPrefix, "/"), n, ScenarioPathPrefix)
	cfg, err := config.Parse([]byte(text), dir+"/partroute.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// bigView is the naming view of bigConfig's service, built as a naming source builds one
// after decoding: a partition per range, each with a primary and two secondaries. Every
// replica has an address string of its own, as when each is decoded from its own text, which
// is the most memory the view can take.
func bigView(cfg *config.Config) *resolver.View {
	svc := cfg.Services[0]
	scheme := svc.Scheme()
	sv := &resolver.ServiceView{Name: svc.Name, Kind: scheme.Kind(), Partitions: make([]resolver.Partition, scheme.Count())}
	for i := range sv.Partitions {
		lo, hi := scheme.Bounds(i)
		sv.Partitions[i] = resolver.Partition{
			ID: resolver.DefaultPartitionID(svc.Name, scheme.Kind(), lo, hi, ""), Index: i, LowKey: lo, HighKey: hi,
			Replicas: replicasOf(i),
		}
	}
	return &resolver.View{Version: "big", Services: map[string]*resolver.ServiceView{svc.Name: sv}}
}

func replicasOf(i int) []resolver.Replica {
	ip := "10." + strconv.Itoa(i>>16&255) + "." + strconv.Itoa(i>>8&255) + "." + strconv.Itoa(i&255)
	return []resolver.Replica{
		{Address: ip + ":8080", Role: resolver.RolePrimary, Healthy: true},
		{Address: ip + ":8081", Role: resolver.RoleSecondary, Healthy: true},
		{Address: ip + ":8082", Role: resolver.RoleSecondary, Healthy: true},
	}
}

// cacheKey and resolution have the shape of a pull source's cache entries: keyed by service and
// partition, holding a versioned replica set.
type cacheKey struct {
	service, serviceID, listener string
	index                        int
	low, high                    int64
}

type resolution struct {
	partition *resolver.Partition
	version   string
}

// bigCache is a resolution cache of size entries, every one filled, each with a partition of
// its own.
func bigCache(tb testing.TB, size int) (*cache.Cache[cacheKey, *resolution], []cacheKey) {
	tb.Helper()
	c, err := cache.New(cache.Options[cacheKey, *resolution]{
		Size: size, TTL: time.Hour,
		Fill: func(_ context.Context, k cacheKey, _ *resolution, _ bool) (*resolution, error) {
			return &resolution{
				partition: &resolver.Partition{ID: "fabric-" + strconv.Itoa(k.index), Index: k.index, LowKey: k.low, HighKey: k.high, Replicas: replicasOf(k.index)},
				version:   strconv.Itoa(k.index),
			}, nil
		},
	})
	if err != nil {
		tb.Fatal(err)
	}
	keys := make([]cacheKey, size)
	for i := range keys {
		keys[i] = cacheKey{service: ScenarioService, serviceID: "myapp~users", listener: "", index: i, low: int64(i) << 20, high: int64(i)<<20 + 1<<20 - 1}
		if _, res, err := c.Get(context.Background(), keys[i]); err != nil || res != cache.Miss {
			tb.Fatalf("fill %d: %v, %v", i, res, err)
		}
	}
	return c, keys
}

// residentBytes is the process's resident set size, from /proc/self/status.
func residentBytes(tb testing.TB) uint64 {
	tb.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				tb.Fatal(err)
			}
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// settledHeap collects garbage, returns freed memory to the system, and reports the live heap
// and the resident set.
func settledHeap(tb testing.TB) (heap, rss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, residentBytes(tb)
}

// TestMillionPartitionsFitInMemory holds a naming view of 1,000,000 partitions (3 replicas
// each) and a full 100,000-entry resolution cache, and checks that the process stays under
// 500 MiB resident, and that a lookup still costs nothing: no allocation, and no slower at a
// million partitions than at ten (the benchmark below has the numbers).
func TestMillionPartitionsFitInMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds a million partitions; the race detector multiplies the memory they take")
	}
	const limit = 500 << 20
	heap0, rss0 := settledHeap(t)
	cfg := bigConfig(t, 1_000_000)
	view := bigView(cfg)
	c, keys := bigCache(t, 100_000)
	heap, rss := settledHeap(t)
	t.Logf("live heap %d MiB (%d MiB before), resident %d MiB (%d MiB before)", heap>>20, heap0>>20, rss>>20, rss0>>20)
	if rss > limit {
		t.Errorf("resident set %d MiB with a million partitions and 100k cache entries, want under %d MiB", rss>>20, limit>>20)
	}
	res := resolver.New(&resolver.State{Config: cfg, Naming: view})
	req := &keying.Request{Method: "GET", Path: ScenarioPathPrefix + "12345", Authority: ScenarioAuthority, Headers: keying.HeaderList{}}
	if d := res.Resolve(context.Background(), req); d.Err != nil || d.Partition == nil {
		t.Fatalf("decision %+v", d)
	}
	if n := testing.AllocsPerRun(100, func() {
		_ = res.Resolve(context.Background(), req)
		_, _, _ = c.Get(context.Background(), keys[len(keys)/2])
	}); n != 0 {
		t.Errorf("a lookup allocates %v times at a million partitions, want 0", n)
	}
	runtime.KeepAlive(view)
	runtime.KeepAlive(c)
}

// BenchmarkLookup resolves requests (match, key from the path, hash, partition, role) against
// naming views of 10, 10,000 and 1,000,000 partitions, and hits a resolution cache of as many
// entries (up to its 100,000 default size). "spread" requests go to 4096 partitions at random,
// so that at a million partitions nearly every lookup misses the CPU caches; "hot" requests go
// to 16, which stay in them. The hot lookups cost the same at every size: the lookup itself is
// O(1), and what grows in the spread ones is the time to fetch a partition from main memory.
func BenchmarkLookup(b *testing.B) {
	for _, n := range []int{10, 10_000, 1_000_000} {
		cfg := bigConfig(b, n)
		view := bigView(cfg)
		res := resolver.New(&resolver.State{Config: cfg, Naming: view})
		reqs := make([]keying.Request, 4096)
		for i := range reqs {
			reqs[i] = keying.Request{Method: "GET", Authority: ScenarioAuthority, Headers: keying.HeaderList{},
				Path: ScenarioPathPrefix + strconv.Itoa(i*7919)}
		}
		size := min(n, 100_000)
		c, keys := bigCache(b, size)
		for _, spread := range []int{4096, 16} {
			name := "spread"
			if spread == 16 {
				name = "hot"
			}
			b.Run(fmt.Sprintf("view/%s/partitions=%d", name, n), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if d := res.Resolve(context.Background(), &reqs[i%spread]); d.Partition == nil {
						b.Fatal(d.Err)
					}
					i++
				}
			})
			b.Run(fmt.Sprintf("cache/%s/entries=%d", name, size), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, r, _ := c.Get(context.Background(), keys[((i%spread)*7919)%len(keys)]); r != cache.Hit {
						b.Fatal(r)
					}
					i++
				}
			})
		}
	}
}
