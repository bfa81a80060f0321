package loadtest

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// TestBucketsTileTheRange checks that the buckets cover every recordable value exactly once,
// in order, and that each is at most 1/128 of its values wide.
func TestBucketsTileTheRange(t *testing.T) {
	next := int64(0)
	last := bucketIndex(maxRecordable)
	for i := 0; i <= last; i++ {
		lo, hi := bucketRange(i)
		if lo != next || hi < lo {
			t.Fatalf("bucket %d is [%d, %d], want it to start at %d", i, lo, hi, next)
		}
		if bucketIndex(lo) != i || bucketIndex(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: its bounds map to %d and %d", i, lo, hi, bucketIndex(lo), bucketIndex(hi))
		}
		if width := hi - lo + 1; lo >= subBucketCount && float64(width) > float64(lo)/subBucketCount {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/128 of its values", i, lo, hi)
		}
		next = hi + 1
	}
	if next != maxRecordable+1 {
		t.Fatalf("buckets end at %d, want %d", next-1, maxRecordable)
	}
}

// exactQuantile is the quantile of sorted values by the same rank rule as Histogram.Quantile.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestQuantilesOfKnownDistributions(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	cases := []struct {
		name   string
		values func() []int64
	}{
		{"constant", func() []int64 {
			v := make([]int64, 1000)
			for i := range v {
				v[i] = 250_000
			}
			return v
		}},
		{"uniform 1..10000", func() []int64 {
			v := make([]int64, 10000)
			for i := range v {
				v[i] = int64(i + 1)
			}
			return v
		}},
		{"small values are exact", func() []int64 {
			v := make([]int64, 256)
			for i := range v {
				v[i] = int64(i % 128)
			}
			return v
		}},
		{"exponential around 1ms", func() []int64 {
			v := make([]int64, 100_000)
			for i := range v {
				v[i] = int64(rng.ExpFloat64() * 1e6)
			}
			return v
		}},
		{"bimodal: 1% at 100ms", func() []int64 {
			v := make([]int64, 10_000)
			for i := range v {
				v[i] = 1_000_000 + rng.Int64N(1000)
				if i%100 == 0 {
					v[i] = 100_000_000 + rng.Int64N(1000)
				}
			}
			return v
		}},
		{"wide range", func() []int64 {
			v := make([]int64, 50_000)
			for i := range v {
				v[i] = int64(math.Pow(10, rng.Float64()*10))
			}
			return v
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			values := c.values()
			var h Histogram
			for _, v := range values {
				h.Record(v)
			}
			sorted := append([]int64(nil), values...)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
			if h.Count() != uint64(len(values)) {
				t.Fatalf("count %d, want %d", h.Count(), len(values))
			}
			if h.Min() != sorted[0] || h.Max() != sorted[len(sorted)-1] {
				t.Errorf("min, max = %d, %d; want %d, %d", h.Min(), h.Max(), sorted[0], sorted[len(sorted)-1])
			}
			for _, q := range []float64{0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				want := exactQuantile(sorted, q)
				if q == 0 {
					want = sorted[0]
				}
				got := h.Quantile(q)
				// A quantile is never understated and is at most one bucket (1/128) high.
				if got < want || float64(got) > float64(want)*(1+1.0/subBucketCount)+1 {
					t.Errorf("quantile %v = %d, want %d (+0.8%%)", q, got, want)
				}
			}
		})
	}
}

func TestBimodalTail(t *testing.T) {
	var h Histogram
	for i := 0; i < 990; i++ {
		h.Record(1_000_000)
	}
	for i := 0; i < 10; i++ {
		h.Record(100_000_000)
	}
	if p := h.Quantile(0.99); p < 1_000_000 || p > 1_010_000 {
		t.Errorf("p99 = %d, want the 1ms mode", p)
	}
	if p := h.Quantile(0.991); p < 100_000_000 {
		t.Errorf("p99.1 = %d, want the 100ms mode", p)
	}
	if n := h.CountAbove(10_000_000); n != 10 {
		t.Errorf("CountAbove(10ms) = %d, want 10", n)
	}
}

func TestHistogramEdges(t *testing.T) {
	var empty Histogram
	if empty.Quantile(0.5) != 0 || empty.Max() != 0 || empty.Mean() != 0 || empty.Count() != 0 {
		t.Error("an empty histogram reports values")
	}
	var h Histogram
	h.Record(-5)
	h.Record(math.MaxInt64)
	if h.Min() != 0 || h.Max() != maxRecordable {
		t.Errorf("min, max = %d, %d; want 0 and the cap %d", h.Min(), h.Max(), maxRecordable)
	}
	if h.Quantile(1) != maxRecordable {
		t.Errorf("p100 = %d, want the cap", h.Quantile(1))
	}
}

// TestMergeEqualsOneHistogram checks that histograms of parts, merged, equal the histogram of
// the whole, as a run's per-worker histograms must.
func TestMergeEqualsOneHistogram(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	var whole, merged Histogram
	parts := make([]Histogram, 8)
	for i := 0; i < 20_000; i++ {
		v := int64(rng.ExpFloat64() * 5e5)
		whole.Record(v)
		parts[i%len(parts)].Record(v)
	}
	for i := range parts {
		merged.Merge(&parts[i])
	}
	merged.Merge(&Histogram{})
	if merged.Count() != whole.Count() || merged.Min() != whole.Min() || merged.Max() != whole.Max() || math.Abs(merged.Mean()-whole.Mean()) > 1e-6*whole.Mean() {
		t.Fatalf("merged %d/%d/%d/%v, whole %d/%d/%d/%v", merged.Count(), merged.Min(), merged.Max(), merged.Mean(), whole.Count(), whole.Min(), whole.Max(), whole.Mean())
	}
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		if merged.Quantile(q) != whole.Quantile(q) {
			t.Errorf("quantile %v: merged %d, whole %d", q, merged.Quantile(q), whole.Quantile(q))
		}
	}
}

// TestHistogramMemoryIsBounded checks that memory depends on the range of values, not their
// number.
func TestHistogramMemoryIsBounded(t *testing.T) {
	var h Histogram
	for i := 0; i < 1_000_000; i++ {
		h.Record(int64(i % 10_000_000))
	}
	if n := len(h.counts); n > bucketIndex(maxRecordable)+1 {
		t.Fatalf("%d buckets", n)
	}
	before := len(h.counts)
	for i := 0; i < 1_000_000; i++ {
		h.Record(int64(i % 1000))
	}
	if len(h.counts) != before {
		t.Errorf("recording more values in range grew the histogram from %d to %d buckets", before, len(h.counts))
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	var h Histogram
	v := int64(1)
	for b.Loop() {
		h.Record(v)
		v = (v*1103515245 + 12345) & (1<<30 - 1)
	}
}
