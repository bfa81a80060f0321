package loadtest

import (
	"math"
	"math/bits"
)

// subBucketBits sets the histogram's precision: every power-of-two range of values is split into
// 2^subBucketBits linear buckets, so a recorded value is known to within 1/128 (0.8%) of itself,
// whatever its magnitude. That is HdrHistogram's log-linear layout with two significant digits,
// in a few dozen lines and without a dependency.
const (
	subBucketBits  = 7
	subBucketCount = 1 << subBucketBits
	// maxRecordable caps a value at 2^40 ns (about 18 minutes); anything slower is recorded as
	// the cap. No request of a load test lives that long: the generator times requests out far
	// sooner.
	maxRecordable = int64(1)<<40 - 1
)

// Histogram counts values (nanoseconds, in practice) in log-linear buckets. Its size depends
// only on the largest value recorded, never on how many: a run of a billion requests takes no
// more memory than a run of a hundred. The zero value is ready to use; it is not safe for
// concurrent use, so each worker of a run keeps its own and they are merged at the end.
type Histogram struct {
	counts []uint64
	total  uint64
	min    int64
	max    int64
	sum    float64
}

// bucketIndex maps v (0 <= v <= maxRecordable) to its bucket. Values below subBucketCount have
// a bucket of their own; above, the top subBucketBits+1 significant bits choose the bucket.
func bucketIndex(v int64) int {
	u := uint64(v) //nolint:gosec // v is not negative
	shift := bits.Len64(u) - subBucketBits - 1
	if shift <= 0 {
		return int(u) //nolint:gosec // below 2*subBucketCount
	}
	return shift*subBucketCount + int(u>>uint(shift)) //nolint:gosec // u>>shift is below 2*subBucketCount
}

// bucketRange returns the lowest and highest value that land in bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < 2*subBucketCount {
		return int64(i), int64(i)
	}
	shift := i/subBucketCount - 1
	top := i - shift*subBucketCount
	lo = int64(top) << uint(shift)
	return lo, lo + int64(1)<<uint(shift) - 1
}

// Record adds one value. Negative values count as 0 and values above the cap as the cap.
func (h *Histogram) Record(v int64) {
	v = min(max(v, 0), maxRecordable)
	i := bucketIndex(v)
	if i >= len(h.counts) {
		h.grow(i)
	}
	h.counts[i]++
	if h.total == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.total++
	h.sum += float64(v)
}

// grow makes room for bucket i, with headroom so that a slowly rising maximum does not copy the
// slice on every new bucket.
func (h *Histogram) grow(i int) {
	n := max(i+1, 2*len(h.counts), 4*subBucketCount)
	n = min(n, bucketIndex(maxRecordable)+1)
	counts := make([]uint64, n)
	copy(counts, h.counts)
	h.counts = counts
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) {
	if o.total == 0 {
		return
	}
	if len(o.counts) > len(h.counts) {
		h.grow(len(o.counts) - 1)
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.total == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.total += o.total
	h.sum += o.sum
}

// Count returns how many values were recorded.
func (h *Histogram) Count() uint64 { return h.total }

// Min returns the smallest value recorded, 0 when none was.
func (h *Histogram) Min() int64 { return h.min }

// Max returns the largest value recorded, exactly, 0 when none was.
func (h *Histogram) Max() int64 { return h.max }

// Mean returns the mean of the values recorded, 0 when none was.
func (h *Histogram) Mean() float64 {
	if h.total == 0 {
		return 0
	}
	return h.sum / float64(h.total)
}

// CountAbove returns how many recorded values lie in buckets entirely above v: the values
// above v, give or take the width of v's own bucket.
func (h *Histogram) CountAbove(v int64) uint64 {
	var n uint64
	for i, c := range h.counts {
		if lo, _ := bucketRange(i); lo > v {
			n += c
		}
	}
	return n
}

// eachBucket calls fn with the bounds and count of every bucket that holds values, lowest
// first.
func (h *Histogram) eachBucket(fn func(lo, hi int64, n uint64)) {
	for i, c := range h.counts {
		if c > 0 {
			lo, hi := bucketRange(i)
			fn(lo, hi, c)
		}
	}
}

// Quantile returns the value at quantile q (0 <= q <= 1): the smallest bucket bound at or above
// which lie no more than (1-q) of the values. It reports the highest value of that bucket, so it
// errs high by at most the bucket's width (under 1%), never low: a tail latency is never
// understated. Quantile(1) is the exact maximum and Quantile(0) the exact minimum.
func (h *Histogram) Quantile(q float64) int64 {
	if h.total == 0 {
		return 0
	}
	if q <= 0 {
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	// rank is the 1-based position of the value wanted among the sorted values.
	rank := uint64(math.Ceil(q * float64(h.total)))
	rank = max(rank, 1)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			_, hi := bucketRange(i)
			return min(max(hi, h.min), h.max)
		}
	}
	return h.max
}
