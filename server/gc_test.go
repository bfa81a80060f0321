package server

import "testing"

func TestGCPercent(t *testing.T) {
	const mib = 1 << 20
	for _, c := range []struct {
		live, headroom uint64
		want           int
	}{
		{3 * mib, 64 * mib, 2100},   // a small heap grows by the headroom
		{0, 64 * mib, 6400},         // an empty heap counts as 1 MiB
		{64 * mib, 64 * mib, 100},   // the headroom is one live heap: Go's default
		{308 * mib, 64 * mib, 100},  // a large heap never goes below GOGC=100
		{1 << 10, 1 << 40, 10000},   // the percentage is bounded
		{40 * mib, 64 * mib, 150},   // 160, rounded down to a multiple of 50
		{41 * mib, 64 * mib, 150},   // a slightly different heap leaves it where it was
		{5 * mib, 64 * mib, 1250},   // 1280, rounded
		{1 * mib, 100 * mib, 10000}, // bounded
	} {
		if got := gcPercent(c.live, c.headroom); got != c.want {
			t.Errorf("gcPercent(%d MiB, %d MiB) = %d, want %d", c.live/mib, c.headroom/mib, got, c.want)
		}
	}
}
