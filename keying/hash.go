package keying

import (
	"math/bits"

	"github.com/cespare/xxhash/v2"
)

// HashFunc names the 64-bit hash of the hash transform.
type HashFunc uint8

// The supported hash functions. XXHash64 is the default; FNV1a64 is there for services whose
// clients already place keys with it.
const (
	XXHash64 HashFunc = iota + 1
	FNV1a64
)

// ParseHashFunc reads a hash function's configuration name.
func ParseHashFunc(s string) (HashFunc, bool) {
	switch s {
	case "xxhash64":
		return XXHash64, true
	case "fnv1a64":
		return FNV1a64, true
	}
	return 0, false
}

// String returns the hash function's configuration name.
func (h HashFunc) String() string {
	switch h {
	case XXHash64:
		return "xxhash64"
	case FNV1a64:
		return "fnv1a64"
	}
	return "unknown"
}

// Sum64 hashes s.
func (h HashFunc) Sum64(s string) uint64 {
	if h == FNV1a64 {
		return fnv1a64(s)
	}
	return xxhash.Sum64String(s)
}

// fnv1a64 is FNV-1a with the 64-bit offset basis and prime; hash/fnv would allocate its state.
func fnv1a64(s string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= prime
	}
	return h
}

// ReduceHash maps a 64-bit hash h into [low, high] (inclusive). With K = high-low+1 keys, the
// result is low + floor(h*K / 2^64): the high word of the 128-bit product, which spreads the
// hash evenly over the range without a division. For the full int64 range (K = 2^64) it is
// low + h, that is h with its top bit flipped. This formula is part of the public contract:
// changing it would move keys between partitions.
func ReduceHash(h uint64, low, high int64) int64 {
	k := uint64(high) - uint64(low) + 1 //nolint:gosec // two's complement: the key count of [low, high], 2^64 wrapping to 0
	off := h
	if k != 0 { // k wraps to 0 exactly for the full range
		off, _ = bits.Mul64(h, k)
	}
	return int64(uint64(low) + off) //nolint:gosec // two's complement: low + off stays in [low, high]
}
