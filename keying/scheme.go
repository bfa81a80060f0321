package keying

import (
	"fmt"
	"strconv"
)

// SchemeKind names a partition scheme.
type SchemeKind uint8

// The partition schemes, as Service Fabric defines them.
const (
	Singleton SchemeKind = iota + 1
	UniformInt64
	Named
)

// String returns the scheme's configuration name.
func (k SchemeKind) String() string {
	switch k {
	case Singleton:
		return "singleton"
	case UniformInt64:
		return "uniformInt64"
	case Named:
		return "named"
	}
	return "unknown"
}

// ParseSchemeKind reads a scheme's configuration name.
func ParseSchemeKind(s string) (SchemeKind, bool) {
	switch s {
	case "singleton":
		return Singleton, true
	case "uniformInt64":
		return UniformInt64, true
	case "named":
		return Named, true
	}
	return 0, false
}

// FieldError is a validation failure of one field of a scheme or key specification. Field is
// relative to the specification (for example "count"), so that the configuration loader can
// prefix the path of the service it belongs to.
type FieldError struct {
	Field   string
	Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Scheme maps partition keys to partition indexes. It is immutable once built and safe for
// concurrent use.
type Scheme struct {
	kind  SchemeKind
	count int

	// uniformInt64: the range and the split. rpp is the number of keys every partition has at
	// least, and the first rem partitions have one more.
	low, high int64
	rpp, rem  uint64
	// boundary is the offset from low of the first key of partition rem: below it every
	// partition is rpp+1 keys wide, from it on rpp keys wide.
	boundary uint64

	// named: the names in configuration order and their indexes.
	names     []string
	nameIndex map[string]int
}

// NewSingleton returns the scheme with one partition that reads no key.
func NewSingleton() *Scheme { return &Scheme{kind: Singleton, count: 1} }

// NewUniformInt64 returns the scheme that splits [low, high] (both inclusive) into count
// partitions exactly as Service Fabric does: with K = high-low+1 keys, every partition gets
// floor(K/count) keys and the first K mod count partitions get one more.
func NewUniformInt64(low, high int64, count int) (*Scheme, error) {
	if count < 1 {
		return nil, &FieldError{"count", fmt.Sprintf("%d is below 1", count)}
	}
	if low > high {
		return nil, &FieldError{"lowKey", fmt.Sprintf("%d is above highKey %d", low, high)}
	}
	// Unsigned arithmetic covers the full int64 range, where the key count is 2^64 and does
	// not fit in any int64.
	span := uint64(high) - uint64(low) //nolint:gosec // two's complement: high-low as unsigned, exact for low <= high
	n := uint64(count)
	if span < n-1 {
		return nil, &FieldError{"count", fmt.Sprintf("%d is above the number of keys in [%d, %d], which is %d", count, low, high, span+1)}
	}
	rpp := span / n
	rem := span%n + 1
	if rem == n {
		rpp++
		rem = 0
	}
	s := &Scheme{kind: UniformInt64, count: count, low: low, high: high, rpp: rpp, rem: rem}
	// rem < count and rpp >= 1 whenever rem > 0, so rem*(rpp+1) stays below 2^64.
	s.boundary = rem * (rpp + 1)
	return s, nil
}

// NewNamed returns the scheme whose partitions are the given names, matched exactly and
// case-sensitively.
func NewNamed(names []string) (*Scheme, error) {
	if len(names) == 0 {
		return nil, &FieldError{"names", "a named scheme needs at least one name"}
	}
	s := &Scheme{kind: Named, count: len(names), names: append([]string(nil), names...), nameIndex: make(map[string]int, len(names))}
	for i, name := range names {
		if name == "" {
			return nil, &FieldError{"names[" + strconv.Itoa(i) + "]", "a partition name must not be empty"}
		}
		if !visibleASCII(name) {
			return nil, &FieldError{"names[" + strconv.Itoa(i) + "]", fmt.Sprintf("%q has a character outside visible ASCII (0x21-0x7e); partition names travel in headers and Envoy metadata", name)}
		}
		if j, dup := s.nameIndex[name]; dup {
			return nil, &FieldError{"names[" + strconv.Itoa(i) + "]", fmt.Sprintf("%q repeats names[%d]", name, j)}
		}
		s.nameIndex[name] = i
	}
	return s, nil
}

func visibleASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Kind returns the scheme's kind.
func (s *Scheme) Kind() SchemeKind { return s.kind }

// Count returns the number of partitions.
func (s *Scheme) Count() int { return s.count }

// LowKey and HighKey return the inclusive key range of a uniformInt64 scheme.
func (s *Scheme) LowKey() int64 { return s.low }

// HighKey returns the inclusive upper bound of a uniformInt64 scheme's key range.
func (s *Scheme) HighKey() int64 { return s.high }

// Names returns the partition names of a named scheme, in index order. The slice is shared:
// callers must not modify it.
func (s *Scheme) Names() []string { return s.names }

// Bounds returns the inclusive key range of partition i of a uniformInt64 scheme.
func (s *Scheme) Bounds(i int) (low, high int64) {
	u := uint64(i)                                   //nolint:gosec // i is a partition index, in [0, count)
	start := uint64(s.low) + u*s.rpp + min(u, s.rem) //nolint:gosec // two's complement: the offset from low, unsigned
	width := s.rpp
	if u < s.rem {
		width++
	}
	// width-1 wraps correctly for the single partition of the full range, whose width is 2^64
	// and so computes as 0.
	return int64(start), int64(start + width - 1) //nolint:gosec // two's complement: both bounds lie in [low, high]
}

// PartitionOfInt64 returns the index of the partition that holds key, or false when key lies
// outside [lowKey, highKey]. It is O(1).
func (s *Scheme) PartitionOfInt64(key int64) (int, bool) {
	if key < s.low || key > s.high {
		return 0, false
	}
	if s.count == 1 {
		return 0, true
	}
	off := uint64(key) - uint64(s.low) //nolint:gosec // two's complement: key-low as unsigned, exact for low <= key
	if off < s.boundary {
		return int(off / (s.rpp + 1)), true //nolint:gosec // a partition index, below count
	}
	return int(s.rem + (off-s.boundary)/s.rpp), true //nolint:gosec // a partition index, below count
}

// PartitionOfName returns the index of the named partition, or false when there is none.
func (s *Scheme) PartitionOfName(name string) (int, bool) {
	i, ok := s.nameIndex[name]
	return i, ok
}
