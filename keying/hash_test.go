package keying_test

import (
	"hash/fnv"
	"math"
	"math/big"
	"math/rand/v2"
	"testing"

	"github.com/partroute/partroute/keying"
)

// The golden hash values were computed outside the package: xxhash64 with an independent
// implementation of the XXH64 specification (seed 0) checked against the published vectors for
// "" and "abc", and fnv1a64 with the FNV-1a definition.
var hashGolden = []struct {
	in      string
	xxhash  uint64
	fnv1a64 uint64
}{
	{"", 0xef46db3751d8e999, 0xcbf29ce484222325},
	{"abc", 0x44bc2cf5ad770999, 0xe71fa2190541574b},
	{"42", 0x6de6f5d076d742b9, 0x07ee7e07b4b19223},
	{"user-7", 0x216dec03713b4cfd, 0xf84ba0aa754a486e},
	{"hello world", 0x45ab6734b21e6968, 0x779a65e7023cd2e7},
	{"The quick brown fox jumps over the lazy dog", 0x0b242d361fda71bc, 0xf3f9b7f5e7e47110},
}

func TestHashGolden(t *testing.T) {
	for _, tt := range hashGolden {
		if got := keying.XXHash64.Sum64(tt.in); got != tt.xxhash {
			t.Errorf("xxhash64(%q) = %#016x, want %#016x", tt.in, got, tt.xxhash)
		}
		if got := keying.FNV1a64.Sum64(tt.in); got != tt.fnv1a64 {
			t.Errorf("fnv1a64(%q) = %#016x, want %#016x", tt.in, got, tt.fnv1a64)
		}
		// hash/fnv is the standard library's FNV-1a; the package's own copy must agree.
		h := fnv.New64a()
		h.Write([]byte(tt.in))
		if got, want := keying.FNV1a64.Sum64(tt.in), h.Sum64(); got != want {
			t.Errorf("fnv1a64(%q) = %#016x, hash/fnv says %#016x", tt.in, got, want)
		}
	}
}

func TestFNV1a64MatchesStandardLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 0, 300)
	for range 2000 {
		buf = buf[:rng.IntN(cap(buf))]
		for i := range buf {
			buf[i] = byte(rng.Uint32())
		}
		h := fnv.New64a()
		h.Write(buf)
		if got, want := keying.FNV1a64.Sum64(string(buf)), h.Sum64(); got != want {
			t.Fatalf("fnv1a64(%q) = %#016x, hash/fnv says %#016x", buf, got, want)
		}
	}
}

func TestHashFuncNames(t *testing.T) {
	for _, tt := range []struct {
		name string
		h    keying.HashFunc
	}{{"xxhash64", keying.XXHash64}, {"fnv1a64", keying.FNV1a64}} {
		if got := tt.h.String(); got != tt.name {
			t.Errorf("String() = %q, want %q", got, tt.name)
		}
		if got, ok := keying.ParseHashFunc(tt.name); !ok || got != tt.h {
			t.Errorf("ParseHashFunc(%q) = %v, %v; want %v", tt.name, got, ok, tt.h)
		}
	}
	for _, s := range []string{"", "xxhash", "XXHash64", "fnv", "fnv1a", "sha256"} {
		if h, ok := keying.ParseHashFunc(s); ok {
			t.Errorf("ParseHashFunc(%q) = %v, true; want false", s, h)
		}
	}
	if got := keying.HashFunc(0).String(); got != "unknown" {
		t.Errorf("HashFunc(0).String() = %q, want unknown", got)
	}
}

// refReduce is ReduceHash's documented formula computed with math/big:
// low + floor(h*K / 2^64) with K = high-low+1.
func refReduce(h uint64, low, high int64) int64 {
	k := new(big.Int).Sub(big.NewInt(high), big.NewInt(low))
	k.Add(k, big.NewInt(1))
	v := new(big.Int).Mul(new(big.Int).SetUint64(h), k)
	v.Rsh(v, 64)
	v.Add(v, big.NewInt(low))
	if !v.IsInt64() {
		panic("reduced hash outside int64")
	}
	return v.Int64()
}

func TestReduceHashGolden(t *testing.T) {
	const (
		minI = math.MinInt64
		maxI = math.MaxInt64
	)
	hashes := []uint64{
		0,
		1,
		math.MaxUint64,
		1 << 63,
		0x6de6f5d076d742b9, // the xxhash64 of "42"
		0x216dec03713b4cfd, // the xxhash64 of "user-7"
		0xf84ba0aa754a486e, // the fnv1a64 of "user-7"
		0x45ab6734b21e6968, // the xxhash64 of "hello world"
	}
	// want[r][i] is the reduction of hashes[i] into ranges[r]. These literals pin the formula:
	// changing it moves keys between partitions, which must never happen between releases.
	ranges := []struct {
		low, high int64
		want      []int64
	}{
		{0, 33, []int64{0, 0, 33, 17, 14, 4, 32, 9}},
		{-100, 100, []int64{-100, -100, 100, 0, -14, -74, 94, -46}},
		{minI, maxI, []int64{
			minI, minI + 1, maxI, 0,
			-1304084766381358407, -6814531161612923651, 8668198561777338478, -4203152351195928216,
		}},
		{5, 5, []int64{5, 5, 5, 5, 5, 5, 5, 5}},
	}
	for _, r := range ranges {
		for i, h := range hashes {
			got := keying.ReduceHash(h, r.low, r.high)
			if got != r.want[i] {
				t.Errorf("ReduceHash(%#016x, %d, %d) = %d, want %d", h, r.low, r.high, got, r.want[i])
			}
			if ref := refReduce(h, r.low, r.high); got != ref {
				t.Errorf("ReduceHash(%#016x, %d, %d) = %d, the big.Int formula says %d", h, r.low, r.high, got, ref)
			}
		}
	}
}

func TestReduceHashProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for it := 0; it < 20000; it++ {
		low, high := randomRange(rng)
		h := rng.Uint64()
		if it%7 == 0 {
			h = []uint64{0, 1, math.MaxUint64, math.MaxUint64 - 1, 1 << 63, 1<<63 - 1}[it%6]
		}
		got := keying.ReduceHash(h, low, high)
		if got < low || got > high {
			t.Fatalf("ReduceHash(%#016x, %d, %d) = %d, outside the range", h, low, high, got)
		}
		if ref := refReduce(h, low, high); got != ref {
			t.Fatalf("ReduceHash(%#016x, %d, %d) = %d, the big.Int formula says %d", h, low, high, got, ref)
		}
		// The reduction keeps the order of hashes, so that it spreads them evenly.
		if h < math.MaxUint64 {
			if next := keying.ReduceHash(h+1, low, high); next < got {
				t.Fatalf("ReduceHash is not monotonic over [%d, %d]: %#016x -> %d, next hash -> %d", low, high, h, got, next)
			}
		}
		// Over the full range the reduction is the hash with its top bit flipped.
		if full := keying.ReduceHash(h, math.MinInt64, math.MaxInt64); full != int64(h^1<<63) {
			t.Fatalf("ReduceHash(%#016x) over the full range = %d, want %d", h, full, int64(h^1<<63))
		}
	}
}
