package loadtest

import (
	"fmt"
	"math/rand/v2"
)

// Distribution is how request keys are drawn from the key space.
type Distribution string

// The key distributions.
const (
	// Uniform draws every key of the space equally often: every partition is equally hot.
	Uniform Distribution = "uniform"
	// Zipf draws key k with probability proportional to 1/(v+k)^s: a few keys (and the
	// partitions that hold them) take most of the traffic, as real users and tenants do.
	Zipf Distribution = "zipf"
)

// KeyOptions describe the keys of a run.
type KeyOptions struct {
	Distribution Distribution `json:"distribution"`
	// Space is the number of distinct keys, 0 to Space-1; at least 1.
	Space uint64 `json:"space"`
	// ZipfS (> 1) and ZipfV (>= 1) are the Zipf parameters s and v of math/rand/v2.
	ZipfS float64 `json:"zipf_s,omitempty"`
	ZipfV float64 `json:"zipf_v,omitempty"`
}

// Check reports options that cannot generate keys.
func (o KeyOptions) Check() error {
	if o.Space < 1 {
		return fmt.Errorf("key space must hold at least 1 key")
	}
	switch o.Distribution {
	case Uniform:
	case Zipf:
		if !(o.ZipfS > 1) || !(o.ZipfV >= 1) {
			return fmt.Errorf("zipf needs s > 1 and v >= 1, not s=%v v=%v", o.ZipfS, o.ZipfV)
		}
	default:
		return fmt.Errorf("key distribution %q is not uniform or zipf", o.Distribution)
	}
	return nil
}

// KeyGen draws keys. Each worker has its own, seeded apart from the others, so that workers do
// not share (and lock) one source and a run with a given seed draws the same keys.
type KeyGen struct {
	rng   *rand.Rand
	space uint64
	zipf  *rand.Zipf
}

// NewKeyGen returns a generator of keys in [0, o.Space). o must pass Check.
func NewKeyGen(o KeyOptions, seed, stream uint64) *KeyGen {
	g := &KeyGen{rng: rand.New(rand.NewPCG(seed, stream)), space: o.Space} //nolint:gosec // load-test keys, seeded so that a run can be repeated; nothing secret
	if o.Distribution == Zipf {
		g.zipf = rand.NewZipf(g.rng, o.ZipfS, o.ZipfV, o.Space-1)
	}
	return g
}

// Next returns the next key.
func (g *KeyGen) Next() uint64 {
	if g.zipf != nil {
		return g.zipf.Uint64()
	}
	return g.rng.Uint64N(g.space)
}

// Float64 returns a number in [0, 1) from the same source, for the read/write draw.
func (g *KeyGen) Float64() float64 { return g.rng.Float64() }
