package loadtest

import "testing"

func TestKeysStayInTheSpace(t *testing.T) {
	for _, o := range []KeyOptions{
		{Distribution: Uniform, Space: 1},
		{Distribution: Uniform, Space: 10},
		{Distribution: Uniform, Space: 1 << 40},
		{Distribution: Zipf, Space: 1, ZipfS: 1.1, ZipfV: 1},
		{Distribution: Zipf, Space: 1000, ZipfS: 1.1, ZipfV: 1},
		{Distribution: Zipf, Space: 1 << 40, ZipfS: 2, ZipfV: 5},
	} {
		if err := o.Check(); err != nil {
			t.Fatalf("%+v: %v", o, err)
		}
		g := NewKeyGen(o, 1, 2)
		for i := 0; i < 100_000; i++ {
			if k := g.Next(); k >= o.Space {
				t.Fatalf("%+v: key %d is outside [0, %d)", o, k, o.Space)
			}
		}
	}
}

func TestUniformCoversTheSpaceEvenly(t *testing.T) {
	const space, draws = 10, 100_000
	g := NewKeyGen(KeyOptions{Distribution: Uniform, Space: space}, 3, 0)
	var counts [space]int
	for i := 0; i < draws; i++ {
		counts[g.Next()]++
	}
	for k, n := range counts {
		// 10% either side of 10000 is over 30 standard deviations: a failure is a bug.
		if n < draws/space*9/10 || n > draws/space*11/10 {
			t.Errorf("key %d drawn %d times of %d, want about %d", k, n, draws, draws/space)
		}
	}
}

func TestZipfIsSkewedTowardsLowKeys(t *testing.T) {
	const space, draws = 1000, 100_000
	g := NewKeyGen(KeyOptions{Distribution: Zipf, Space: space, ZipfS: 1.1, ZipfV: 1}, 3, 0)
	counts := make([]int, space)
	for i := 0; i < draws; i++ {
		counts[g.Next()]++
	}
	if counts[0] <= counts[1] || counts[1] <= counts[10] || counts[10] <= counts[500] {
		t.Errorf("counts of keys 0, 1, 10, 500 = %d, %d, %d, %d; want them falling", counts[0], counts[1], counts[10], counts[500])
	}
	top := 0
	for _, n := range counts[:10] {
		top += n
	}
	if top < draws/4 {
		t.Errorf("the 10 hottest of 1000 keys took %d of %d draws, want over a quarter", top, draws)
	}
}

func TestKeysAreReproducibleAndWorkersDiffer(t *testing.T) {
	o := KeyOptions{Distribution: Uniform, Space: 1 << 30}
	a, b, c := NewKeyGen(o, 9, 1), NewKeyGen(o, 9, 1), NewKeyGen(o, 9, 2)
	same, differ := true, false
	for i := 0; i < 100; i++ {
		x, y, z := a.Next(), b.Next(), c.Next()
		same = same && x == y
		differ = differ || x != z
	}
	if !same || !differ {
		t.Errorf("same seed and stream repeat: %v; another stream differs: %v", same, differ)
	}
}

func TestKeyOptionsCheck(t *testing.T) {
	for _, o := range []KeyOptions{
		{Distribution: Uniform, Space: 0},
		{Distribution: "pareto", Space: 10},
		{Distribution: Zipf, Space: 10, ZipfS: 1, ZipfV: 1},
		{Distribution: Zipf, Space: 10, ZipfS: 1.5, ZipfV: 0.5},
	} {
		if o.Check() == nil {
			t.Errorf("%+v passes Check", o)
		}
	}
}
