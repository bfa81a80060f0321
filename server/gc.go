package server

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// DefaultGCHeadroom is the default of GCTuning.Headroom.
const DefaultGCHeadroom = 64 << 20

// GCTuning is the garbage collector's settings for a server process.
type GCTuning struct {
	// GOGC is the collector's target percentage; 0 adapts it to the live heap (see Headroom),
	// unless $GOGC is set.
	GOGC int
	// Headroom, with GOGC 0, is how far the heap may grow past live data before a collection,
	// at least as far as GOGC=100 lets it; 0 keeps Go's own setting.
	Headroom int64
	// MemoryLimit is a soft memory limit, near which the collector works harder; 0 keeps
	// $GOMEMLIMIT or none.
	MemoryLimit int64
}

// Apply sets the process's GC settings until ctx ends. Only a server command calls it: it
// changes the whole process, so code that embeds the server (tests, the demo) keeps its own.
//
// partroute's live heap is small (a few MiB, plus the naming view) and every request allocates
// in gRPC and protobuf, so with Go's default GOGC=100 the collector runs every few hundred
// requests, a large share of the CPU per request at a high rate (docs/benchmarks.md). Letting
// the heap grow by a fixed headroom instead (GOGC = 100 × headroom / live, never below 100)
// runs it far less often for a bounded amount of memory, and leaves a large heap (a view of a
// million partitions) at Go's default.
func (t GCTuning) Apply(ctx context.Context) error {
	if t.GOGC < 0 || t.Headroom < 0 || t.MemoryLimit < 0 {
		return fmt.Errorf("-gogc %d, -gc-headroom %d and -memory-limit %d must not be negative", t.GOGC, t.Headroom, t.MemoryLimit)
	}
	if t.MemoryLimit > 0 {
		debug.SetMemoryLimit(t.MemoryLimit)
	}
	switch {
	case t.GOGC > 0:
		debug.SetGCPercent(t.GOGC)
	case os.Getenv("GOGC") != "" || t.Headroom == 0:
		// The operator's $GOGC stands; a zero headroom asks for Go's own setting.
	default:
		go tuneGC(ctx, uint64(t.Headroom), time.Second)
	}
	return nil
}

// tuneGC sets GOGC from the live heap every interval, so that a collection comes after the
// heap has grown by headroom or doubled, whichever is more.
func tuneGC(ctx context.Context, headroom uint64, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	current := -1
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if pct := gcPercent(sample[0].Value.Uint64(), headroom); pct != current {
				debug.SetGCPercent(pct)
				current = pct
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// gcPercent is the GOGC that lets a heap of live bytes grow by headroom, at least 100 and at
// most 10000, rounded to a multiple of 50 so that small changes of the live heap do not move it.
func gcPercent(live, headroom uint64) int {
	live = max(live, 1<<20)
	pct := min(max(headroom*100/live, 100), 10000)
	return int(pct / 50 * 50)
}
