package keying_test

import (
	"errors"
	"math"
	"math/big"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/partroute/partroute/keying"
)

// span is one partition's inclusive key range.
type span struct{ low, high int64 }

// refSplit computes the bounds of partition i of [low, high] split into count partitions with
// math/big, straight from the definition: with K keys, every partition gets floor(K/count) keys
// and the first K mod count partitions get one more. It shares no arithmetic with the package.
func refSplit(low, high int64, count, i int) span {
	k := new(big.Int).Sub(big.NewInt(high), big.NewInt(low))
	k.Add(k, big.NewInt(1))
	q, r := new(big.Int).DivMod(k, big.NewInt(int64(count)), new(big.Int))
	bi := big.NewInt(int64(i))
	start := new(big.Int).Mul(bi, q)
	if bi.Cmp(r) < 0 {
		start.Add(start, bi)
	} else {
		start.Add(start, r)
	}
	start.Add(start, big.NewInt(low))
	width := new(big.Int).Set(q)
	if bi.Cmp(r) < 0 {
		width.Add(width, big.NewInt(1))
	}
	end := new(big.Int).Add(start, width)
	end.Sub(end, big.NewInt(1))
	if !start.IsInt64() || !end.IsInt64() {
		panic("reference bounds outside int64")
	}
	return span{start.Int64(), end.Int64()}
}

// refWidth returns floor(K/count), plus one for the first K mod count partitions, as a big.Int.
func refWidth(low, high int64, count, i int) *big.Int {
	k := new(big.Int).Sub(big.NewInt(high), big.NewInt(low))
	k.Add(k, big.NewInt(1))
	q, r := new(big.Int).DivMod(k, big.NewInt(int64(count)), new(big.Int))
	if big.NewInt(int64(i)).Cmp(r) < 0 {
		q.Add(q, big.NewInt(1))
	}
	return q
}

// width returns the number of keys in [low, high] as a big.Int.
func width(s span) *big.Int {
	w := new(big.Int).Sub(big.NewInt(s.high), big.NewInt(s.low))
	return w.Add(w, big.NewInt(1))
}

// sampleIndexes returns the partition indexes a check visits in detail: all of them for small
// counts, and for big counts the first and last hundred, the ones around the boundary where
// partitions become one key narrower, and a fixed random sample.
func sampleIndexes(low, high int64, count int) []int {
	if count <= 4096 {
		idx := make([]int, count)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	k := new(big.Int).Sub(big.NewInt(high), big.NewInt(low))
	k.Add(k, big.NewInt(1))
	rem := int(new(big.Int).Mod(k, big.NewInt(int64(count))).Int64())
	set := map[int]bool{}
	for i := 0; i < 100; i++ {
		set[i] = true
		set[count-1-i] = true
	}
	for i := rem - 3; i <= rem+3; i++ {
		if i >= 0 && i < count {
			set[i] = true
		}
	}
	rng := rand.New(rand.NewPCG(1, uint64(count)))
	for range 500 {
		set[rng.IntN(count)] = true
	}
	idx := make([]int, 0, len(set))
	for i := range set {
		idx = append(idx, i)
	}
	sort.Ints(idx)
	return idx
}

// checkUniform checks a uniformInt64 scheme against the reference split: the bounds of every
// partition, that consecutive partitions touch with neither gap nor overlap, that together
// they cover exactly [low, high], and that PartitionOfInt64 agrees with Bounds.
func checkUniform(t *testing.T, s *keying.Scheme, low, high int64, count int) {
	t.Helper()
	if s.Kind() != keying.UniformInt64 || s.Count() != count || s.LowKey() != low || s.HighKey() != high {
		t.Fatalf("scheme is %v count %d [%d, %d], want uniformInt64 count %d [%d, %d]",
			s.Kind(), s.Count(), s.LowKey(), s.HighKey(), count, low, high)
	}

	// The walk over every partition uses only Bounds, so that it stays cheap for big counts.
	first, _ := s.Bounds(0)
	if first != low {
		t.Errorf("partition 0 starts at %d, want lowKey %d", first, low)
	}
	_, last := s.Bounds(count - 1)
	if last != high {
		t.Errorf("partition %d ends at %d, want highKey %d", count-1, last, high)
	}
	errs := 0
	for i := 0; i < count && errs < 5; i++ {
		lo, hi := s.Bounds(i)
		if lo > hi {
			t.Errorf("partition %d is [%d, %d], an empty range", i, lo, hi)
			errs++
		}
		if i+1 < count {
			next, _ := s.Bounds(i + 1)
			if hi == math.MaxInt64 || next != hi+1 {
				t.Errorf("partition %d ends at %d and partition %d starts at %d: gap or overlap", i, hi, i+1, next)
				errs++
			}
		}
	}

	for _, i := range sampleIndexes(low, high, count) {
		lo, hi := s.Bounds(i)
		want := refSplit(low, high, count, i)
		if lo != want.low || hi != want.high {
			t.Errorf("Bounds(%d) = [%d, %d], want [%d, %d]", i, lo, hi, want.low, want.high)
			continue
		}
		if w, rw := width(span{lo, hi}), refWidth(low, high, count, i); w.Cmp(rw) != 0 {
			t.Errorf("partition %d has %v keys, want %v", i, w, rw)
		}
		for _, key := range interiorKeys(lo, hi) {
			if got, ok := s.PartitionOfInt64(key); !ok || got != i {
				t.Errorf("PartitionOfInt64(%d) = %d, %v; want %d, true (partition [%d, %d])", key, got, ok, i, lo, hi)
			}
		}
	}

	if low > math.MinInt64 {
		if got, ok := s.PartitionOfInt64(low - 1); ok {
			t.Errorf("PartitionOfInt64(lowKey-1 = %d) = %d, true; want false", low-1, got)
		}
		if got, ok := s.PartitionOfInt64(math.MinInt64); ok {
			t.Errorf("PartitionOfInt64(MinInt64) = %d, true; want false", got)
		}
	}
	if high < math.MaxInt64 {
		if got, ok := s.PartitionOfInt64(high + 1); ok {
			t.Errorf("PartitionOfInt64(highKey+1 = %d) = %d, true; want false", high+1, got)
		}
		if got, ok := s.PartitionOfInt64(math.MaxInt64); ok {
			t.Errorf("PartitionOfInt64(MaxInt64) = %d, true; want false", got)
		}
	}
}

// interiorKeys returns the low and high key of [lo, hi], their neighbours inside the range and
// the middle key, computed without overflow.
func interiorKeys(lo, hi int64) []int64 {
	keys := []int64{lo, hi}
	if lo < hi {
		keys = append(keys, lo+1, hi-1)
	}
	mid := int64(uint64(lo) + (uint64(hi)-uint64(lo))/2)
	return append(keys, mid)
}

func TestUniformInt64Split(t *testing.T) {
	const (
		minI = math.MinInt64
		maxI = math.MaxInt64
	)
	tests := []struct {
		name      string
		low, high int64
		count     int
		// want pins the bounds of the first partitions (all of them when the count is
		// small), as golden values.
		want []span
	}{
		{
			name: "design example [0,33] by 4",
			low:  0, high: 33, count: 4,
			want: []span{{0, 8}, {9, 17}, {18, 25}, {26, 33}},
		},
		{
			name: "design example full range by 2",
			low:  minI, high: maxI, count: 2,
			want: []span{{minI, -1}, {0, maxI}},
		},
		{
			name: "design example full range by 5",
			low:  minI, high: maxI, count: 5,
			want: []span{
				{minI, -5534023222112865485},
				{-5534023222112865484, -1844674407370955162},
				{-1844674407370955161, 1844674407370955161},
				{1844674407370955162, 5534023222112865484},
				{5534023222112865485, maxI},
			},
		},
		{
			name: "full range by 3",
			low:  minI, high: maxI, count: 3,
			want: []span{
				{minI, -3074457345618258603},
				{-3074457345618258602, 3074457345618258602},
				{3074457345618258603, maxI},
			},
		},
		{
			name: "full range by 7",
			low:  minI, high: maxI, count: 7,
			want: []span{
				{minI, -6588122883467697006},
				{-6588122883467697005, -3952873730080618203},
				{-3952873730080618202, -1317624576693539401},
				{-1317624576693539400, 1317624576693539401},
				{1317624576693539402, 3952873730080618203},
			},
		},
		{name: "count 1", low: 0, high: 33, count: 1, want: []span{{0, 33}}},
		{name: "full range count 1", low: minI, high: maxI, count: 1, want: []span{{minI, maxI}}},
		{name: "one key count 1", low: 7, high: 7, count: 1, want: []span{{7, 7}}},
		{name: "MinInt64 only", low: minI, high: minI, count: 1, want: []span{{minI, minI}}},
		{name: "MaxInt64 only", low: maxI, high: maxI, count: 1, want: []span{{maxI, maxI}}},
		{
			name: "every partition one key",
			low:  -5, high: 5, count: 11,
			want: []span{{-5, -5}, {-4, -4}, {-3, -3}, {-2, -2}, {-1, -1}, {0, 0}, {1, 1}, {2, 2}, {3, 3}, {4, 4}, {5, 5}},
		},
		{
			name: "touching MinInt64",
			low:  minI, high: minI + 9, count: 3,
			want: []span{{minI, minI + 3}, {minI + 4, minI + 6}, {minI + 7, minI + 9}},
		},
		{
			name: "touching MaxInt64",
			low:  maxI - 9, high: maxI, count: 4,
			want: []span{{maxI - 9, maxI - 7}, {maxI - 6, maxI - 4}, {maxI - 3, maxI - 2}, {maxI - 1, maxI}},
		},
		{name: "two keys at MaxInt64", low: maxI - 1, high: maxI, count: 2, want: []span{{maxI - 1, maxI - 1}, {maxI, maxI}}},
		{name: "two keys at MinInt64", low: minI, high: minI + 1, count: 2, want: []span{{minI, minI}, {minI + 1, minI + 1}}},
		{name: "negative range", low: -100, high: -1, count: 3, want: []span{{-100, -67}, {-66, -34}, {-33, -1}}},
		{name: "range across zero", low: -10, high: 10, count: 4, want: []span{{-10, -5}, {-4, 0}, {1, 5}, {6, 10}}},
		{
			name: "non-negative int64",
			low:  0, high: maxI, count: 3,
			want: []span{{0, 3074457345618258602}, {3074457345618258603, 6148914691236517205}, {6148914691236517206, maxI}},
		},
		{name: "even split", low: 1, high: 100, count: 4, want: []span{{1, 25}, {26, 50}, {51, 75}, {76, 100}}},
		{name: "K == count big", low: -50000, high: 49999, count: 100000},
		{name: "K == count + 1 big", low: 0, high: 100000, count: 100000, want: []span{{0, 1}, {2, 2}}},
		{
			name: "full range by a million",
			low:  minI, high: maxI, count: 1000000,
			want: []span{{minI, -9223353590110702099}, {-9223353590110702098, -9223335143366628389}},
		},
		{name: "full range by a prime", low: minI, high: maxI, count: 1000003},
		{name: "full range by 2^20", low: minI, high: maxI, count: 1 << 20, want: []span{{minI, minI + 1<<44 - 1}}},
		{name: "half range by many", low: 0, high: maxI, count: 999983},
		{name: "full range by MaxInt", low: minI, high: maxI, count: math.MaxInt, want: []span{{minI, minI + 2}, {minI + 3, minI + 5}, {minI + 6, minI + 7}}},
		{name: "MaxInt keys by MaxInt", low: 0, high: math.MaxInt - 1, count: math.MaxInt, want: []span{{0, 0}, {1, 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := keying.NewUniformInt64(tt.low, tt.high, tt.count)
			if err != nil {
				t.Fatalf("NewUniformInt64(%d, %d, %d): %v", tt.low, tt.high, tt.count, err)
			}
			for i, want := range tt.want {
				if lo, hi := s.Bounds(i); lo != want.low || hi != want.high {
					t.Errorf("Bounds(%d) = [%d, %d], want [%d, %d]", i, lo, hi, want.low, want.high)
				}
			}
			if tt.count > 1<<22 {
				// Walking every partition of a huge count would take too long; check a
				// sample against the reference instead.
				checkUniformSample(t, s, tt.low, tt.high, tt.count)
				return
			}
			checkUniform(t, s, tt.low, tt.high, tt.count)
		})
	}
}

// checkUniformSample is checkUniform for counts too large to walk: it checks the sampled
// partitions and their neighbours only.
func checkUniformSample(t *testing.T, s *keying.Scheme, low, high int64, count int) {
	t.Helper()
	if _, hi := s.Bounds(count - 1); hi != high {
		t.Errorf("last partition ends at %d, want %d", hi, high)
	}
	for _, i := range sampleIndexes(low, high, count) {
		lo, hi := s.Bounds(i)
		if want := refSplit(low, high, count, i); lo != want.low || hi != want.high {
			t.Errorf("Bounds(%d) = [%d, %d], want [%d, %d]", i, lo, hi, want.low, want.high)
		}
		if i+1 < count {
			if next, _ := s.Bounds(i + 1); next != hi+1 {
				t.Errorf("partition %d ends at %d, partition %d starts at %d", i, hi, i+1, next)
			}
		}
		for _, key := range interiorKeys(lo, hi) {
			if got, ok := s.PartitionOfInt64(key); !ok || got != i {
				t.Errorf("PartitionOfInt64(%d) = %d, %v; want %d", key, got, ok, i)
			}
		}
	}
}

// TestUniformInt64Reference compares the scheme with an independent reference over many random
// ranges and counts: partition widths against the big.Int formula, and PartitionOfInt64 against
// a binary search over Bounds.
func TestUniformInt64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(20240601, 7))
	iterations := 3000
	if testing.Short() {
		iterations = 300
	}
	for it := 0; it < iterations; it++ {
		low, high := randomRange(rng)
		keys := new(big.Int).Sub(big.NewInt(high), big.NewInt(low))
		keys.Add(keys, big.NewInt(1))
		maxCount := int64(200)
		if keys.IsInt64() && keys.Int64() < maxCount {
			maxCount = keys.Int64()
		}
		count := 1 + int(rng.Int64N(maxCount))
		if rng.IntN(10) == 0 {
			count = int(maxCount) // as many partitions as the cap or the keys allow
		}
		s, err := keying.NewUniformInt64(low, high, count)
		if err != nil {
			t.Fatalf("NewUniformInt64(%d, %d, %d): %v", low, high, count, err)
		}

		// Every partition has q keys, the first r of them one more.
		q, r := new(big.Int).DivMod(keys, big.NewInt(int64(count)), new(big.Int))
		q1 := new(big.Int).Add(q, big.NewInt(1))
		total := new(big.Int)
		for i := 0; i < count; i++ {
			lo, hi := s.Bounds(i)
			w := width(span{lo, hi})
			rw := q
			if int64(i) < r.Int64() {
				rw = q1
			}
			if w.Cmp(rw) != 0 {
				t.Fatalf("[%d, %d] by %d: partition %d is [%d, %d] with %v keys, want %v",
					low, high, count, i, lo, hi, w, rw)
			}
			total.Add(total, w)
		}
		if total.Cmp(keys) != 0 {
			t.Fatalf("[%d, %d] by %d: partitions hold %v keys, want %v", low, high, count, total, keys)
		}

		probes := []int64{low, high}
		for range 20 {
			probes = append(probes, randomIn(rng, low, high))
		}
		for i := 0; i < count; i += 1 + count/8 {
			lo, hi := s.Bounds(i)
			probes = append(probes, lo, hi)
		}
		for _, key := range probes {
			want := searchBounds(s, key)
			got, ok := s.PartitionOfInt64(key)
			if !ok || got != want {
				t.Fatalf("[%d, %d] by %d: PartitionOfInt64(%d) = %d, %v; binary search says %d",
					low, high, count, key, got, ok, want)
			}
		}
	}
}

// searchBounds finds the partition of key by binary search over Bounds.
func searchBounds(s *keying.Scheme, key int64) int {
	i := sort.Search(s.Count(), func(i int) bool {
		_, hi := s.Bounds(i)
		return hi >= key
	})
	if i == s.Count() {
		return -1
	}
	if lo, _ := s.Bounds(i); lo > key {
		return -1
	}
	return i
}

// randomRange returns a random inclusive range whose size is drawn from several magnitudes, so
// that tiny, mid-sized, huge and full ranges all occur, some of them touching MinInt64 or
// MaxInt64.
func randomRange(rng *rand.Rand) (int64, int64) {
	var size uint64 // number of keys minus one
	switch rng.IntN(5) {
	case 0:
		size = rng.Uint64N(64)
	case 1:
		size = rng.Uint64N(1 << 20)
	case 2:
		size = rng.Uint64N(1 << 40)
	case 3:
		size = rng.Uint64()
	default:
		size = math.MaxUint64 - rng.Uint64N(1000)
	}
	var low int64
	switch rng.IntN(4) {
	case 0:
		low = math.MinInt64
	case 1:
		return int64(uint64(math.MaxInt64) - size), math.MaxInt64
	default:
		// Any low that leaves room for size more keys.
		// The offset of low from MinInt64 may be anything in [0, 2^64-1-size].
		room := math.MaxUint64 - size
		var off uint64
		if room == math.MaxUint64 {
			off = rng.Uint64()
		} else {
			off = rng.Uint64N(room + 1)
		}
		low = int64(1<<63 + off)
	}
	return low, int64(uint64(low) + size)
}

// randomIn returns a random key in [low, high].
func randomIn(rng *rand.Rand, low, high int64) int64 {
	size := uint64(high) - uint64(low)
	if size == math.MaxUint64 {
		return int64(rng.Uint64())
	}
	return int64(uint64(low) + rng.Uint64N(size+1))
}

func TestUniformInt64Errors(t *testing.T) {
	tests := []struct {
		name      string
		low, high int64
		count     int
		field     string
		fragment  string
	}{
		{"low above high", 5, 4, 1, "lowKey", "5 is above highKey 4"},
		{"low far above high", math.MaxInt64, math.MinInt64, 2, "lowKey", "is above highKey"},
		{"count 0", 0, 33, 0, "count", "0 is below 1"},
		{"negative count", 0, 33, -3, "count", "-3 is below 1"},
		{"count above keys", 0, 2, 4, "count", "4 is above the number of keys in [0, 2], which is 3"},
		{"one key two partitions", 9, 9, 2, "count", "which is 1"},
		{"K == count - 1", -5, 4, 11, "count", "which is 10"},
		{"at MaxInt64", math.MaxInt64 - 1, math.MaxInt64, 3, "count", "which is 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := keying.NewUniformInt64(tt.low, tt.high, tt.count)
			if err == nil {
				t.Fatalf("NewUniformInt64(%d, %d, %d) = %v, want an error", tt.low, tt.high, tt.count, s)
			}
			checkFieldError(t, err, tt.field, tt.fragment)
		})
	}
}

// checkFieldError checks that err is a *keying.FieldError of the field with a message holding
// the fragment, and that Error() joins the two.
func checkFieldError(t *testing.T, err error, field, fragment string) {
	t.Helper()
	var fe *keying.FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T) is not a *keying.FieldError", err, err)
	}
	if fe.Field != field {
		t.Errorf("Field = %q, want %q (error %q)", fe.Field, field, err)
	}
	if !strings.Contains(fe.Message, fragment) {
		t.Errorf("Message = %q, want it to contain %q", fe.Message, fragment)
	}
	if want := field + ": " + fe.Message; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

func TestNamed(t *testing.T) {
	input := []string{"eu", "us", "apac", "US-West_2.b~"}
	s, err := keying.NewNamed(input)
	if err != nil {
		t.Fatal(err)
	}
	if s.Kind() != keying.Named || s.Count() != 4 {
		t.Fatalf("scheme is %v with %d partitions, want named with 4", s.Kind(), s.Count())
	}
	// The scheme keeps its own copy of the names.
	input[0] = "changed"
	if got := s.Names(); len(got) != 4 || got[0] != "eu" || got[3] != "US-West_2.b~" {
		t.Errorf("Names() = %q after the caller changed its slice", got)
	}

	tests := []struct {
		name string
		want int
		ok   bool
	}{
		{"eu", 0, true},
		{"us", 1, true},
		{"apac", 2, true},
		{"US-West_2.b~", 3, true},
		{"EU", 0, false},
		{"Us", 0, false},
		{"eu ", 0, false},
		{" eu", 0, false},
		{"e", 0, false},
		{"euu", 0, false},
		{"", 0, false},
		{"changed", 0, false},
		{"us-west_2.b~", 0, false},
	}
	for _, tt := range tests {
		got, ok := s.PartitionOfName(tt.name)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("PartitionOfName(%q) = %d, %v; want %d, %v", tt.name, got, ok, tt.want, tt.ok)
		}
	}
}

func TestNamedErrors(t *testing.T) {
	tests := []struct {
		name     string
		names    []string
		field    string
		fragment string
	}{
		{"nil", nil, "names", "at least one name"},
		{"empty list", []string{}, "names", "at least one name"},
		{"empty name", []string{"eu", ""}, "names[1]", "must not be empty"},
		{"duplicate", []string{"eu", "us", "eu"}, "names[2]", `"eu" repeats names[0]`},
		{"case differs is no duplicate but space is invisible", []string{"eu", "EU", "e u"}, "names[2]", "outside visible ASCII"},
		{"tab", []string{"a\tb"}, "names[0]", `"a\tb" has a character outside visible ASCII`},
		{"newline", []string{"ok", "a\n"}, "names[1]", "outside visible ASCII"},
		{"DEL", []string{"a\x7f"}, "names[0]", "outside visible ASCII"},
		{"non-ASCII", []string{"zürich"}, "names[0]", "outside visible ASCII"},
		{"NUL", []string{"\x00"}, "names[0]", "outside visible ASCII"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := keying.NewNamed(tt.names)
			if err == nil {
				t.Fatalf("NewNamed(%q) = %v, want an error", tt.names, s)
			}
			checkFieldError(t, err, tt.field, tt.fragment)
		})
	}
}

func TestSingleton(t *testing.T) {
	s := keying.NewSingleton()
	if s.Kind() != keying.Singleton || s.Count() != 1 {
		t.Fatalf("NewSingleton() is %v with %d partitions, want singleton with 1", s.Kind(), s.Count())
	}
	if len(s.Names()) != 0 {
		t.Errorf("Names() = %q, want none", s.Names())
	}
}

func TestSchemeKindNames(t *testing.T) {
	for _, k := range []keying.SchemeKind{keying.Singleton, keying.UniformInt64, keying.Named} {
		got, ok := keying.ParseSchemeKind(k.String())
		if !ok || got != k {
			t.Errorf("ParseSchemeKind(%q) = %v, %v; want %v", k.String(), got, ok, k)
		}
	}
	if want := []string{"singleton", "uniformInt64", "named"}; keying.Singleton.String() != want[0] ||
		keying.UniformInt64.String() != want[1] || keying.Named.String() != want[2] {
		t.Errorf("scheme kind names are %q %q %q, want %q", keying.Singleton, keying.UniformInt64, keying.Named, want)
	}
	for _, s := range []string{"", "UniformInt64", "uniformint64", "Named", "int64"} {
		if k, ok := keying.ParseSchemeKind(s); ok {
			t.Errorf("ParseSchemeKind(%q) = %v, true; want false", s, k)
		}
	}
	if got := keying.SchemeKind(0).String(); got != "unknown" {
		t.Errorf("SchemeKind(0).String() = %q, want unknown", got)
	}
}
