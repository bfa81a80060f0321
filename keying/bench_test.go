package keying_test

import (
	"testing"

	"github.com/partroute/partroute/keying"
)

// realisticRequest is a request as Envoy hands it over: the four pseudo-headers and the
// ordinary headers of a browser or SDK client, with the key sources near the end.
func realisticRequest() *keying.Request {
	const path = "/api/users/17/orders?expand=items&page=2&user=17&sort=desc"
	return &keying.Request{
		Method:    "PUT",
		Authority: "users.example.com",
		Path:      path,
		Headers: keying.HeaderList{
			{Name: ":method", Value: "PUT"},
			{Name: ":path", Value: path},
			{Name: ":authority", Value: "users.example.com"},
			{Name: ":scheme", Value: "https"},
			{Name: "user-agent", Value: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"},
			{Name: "accept", Value: "application/json, text/plain, */*"},
			{Name: "accept-encoding", Value: "gzip, deflate, br"},
			{Name: "accept-language", Value: "en-GB,en;q=0.9"},
			{Name: "content-type", Value: "application/json"},
			{Name: "x-request-id", Value: "5b0d6c1e-8f4a-4c1b-9a57-2f3e8d9c0a11"},
			{Name: "x-forwarded-for", Value: "203.0.113.7"},
			{Name: "cookie", Value: "session=8d1f0c5e2b7a4c9d; theme=dark; uid=17; lang=en"},
			{Name: "x-user-id", Value: "17"},
		},
	}
}

// keyerCase is one keyer configuration of the hot path, with the partition it must find in
// realisticRequest.
type keyerCase struct {
	name      string
	transform keying.Transform
	kind      keying.SourceKind
	arg       string
	want      keying.Key
}

var hotPathCases = []keyerCase{
	{"path/int64", keying.TransformInt64, keying.SourcePath, "/api/users/{id}", keying.Key{Index: 1, Int: 17}},
	{"header/int64", keying.TransformInt64, keying.SourceHeader, "x-user-id", keying.Key{Index: 1, Int: 17}},
	{"query/int64", keying.TransformInt64, keying.SourceQuery, "user", keying.Key{Index: 1, Int: 17}},
	// The golden reduction of xxhash64("17") into [0, 33] is 8, the last key of partition 0.
	{"header/hash", keying.TransformHash, keying.SourceHeader, "x-user-id", keying.Key{Index: 0, Int: 8}},
	{"cookie/int64", keying.TransformInt64, keying.SourceCookie, "uid", keying.Key{Index: 1, Int: 17}},
}

// hotPathKeyer builds the keyer of a case over the [0, 33] by 4 scheme.
func hotPathKeyer(tb testing.TB, c keyerCase) *keying.Keyer {
	tb.Helper()
	return mustKeyer(tb, mustUniform(tb, 0, 33, 4), c.transform, 0, mustSource(tb, c.kind, c.arg))
}

// TestHotPathAllocations fails when key extraction on the request path starts to allocate.
func TestHotPathAllocations(t *testing.T) {
	req := realisticRequest()
	for _, c := range hotPathCases {
		t.Run(c.name, func(t *testing.T) {
			k := hotPathKeyer(t, c)
			got, f := k.Partition(req)
			if f != nil || got != c.want {
				t.Fatalf("Partition = %+v, %v; want %+v", got, f, c.want)
			}
			if n := testing.AllocsPerRun(200, func() {
				if _, f := k.Partition(req); f != nil {
					panic(f)
				}
			}); n != 0 {
				t.Errorf("Partition allocates %v times per call, want 0", n)
			}
		})
	}

	t.Run("path/name", func(t *testing.T) {
		named, err := keying.NewNamed([]string{"eu", "us", "apac"})
		if err != nil {
			t.Fatal(err)
		}
		k := mustKeyer(t, named, keying.TransformName, 0, mustSource(t, keying.SourcePath, "/api/regions/{region}"))
		r := &keying.Request{Path: "/api/regions/apac/items?x=1"}
		if n := testing.AllocsPerRun(200, func() {
			if got, f := k.Partition(r); f != nil || got.Index != 2 {
				panic("wrong partition")
			}
		}); n != 0 {
			t.Errorf("Partition allocates %v times per call, want 0", n)
		}
	})

	t.Run("primitives", func(t *testing.T) {
		full := mustUniform(t, -9223372036854775808, 9223372036854775807, 5)
		input := "user-7-abcdefghi"
		if n := testing.AllocsPerRun(200, func() {
			v, _ := keying.ParseInt64("-9223372036854775808")
			_, _ = full.PartitionOfInt64(v)
			_ = keying.ReduceHash(keying.FNV1a64.Sum64(input), -5, 5)
			_ = keying.ReduceHash(keying.XXHash64.Sum64(input), -5, 5)
		}); n != 0 {
			t.Errorf("ParseInt64, PartitionOfInt64 and ReduceHash allocate %v times, want 0", n)
		}
	})
}

var (
	sinkInt  int
	sinkI64  int64
	sinkBool bool
	sinkKey  keying.Key
)

func BenchmarkPartitionOfInt64(b *testing.B) {
	b.ReportAllocs()
	s := mustUniform(b, -9223372036854775808, 9223372036854775807, 1000003)
	keys := []int64{-9223372036854775808, -42, 0, 17, 5534023222112865485, 9223372036854775807}
	i := 0
	for b.Loop() {
		sinkInt, sinkBool = s.PartitionOfInt64(keys[i%len(keys)])
		i++
	}
}

func BenchmarkPartitionOfName(b *testing.B) {
	b.ReportAllocs()
	s, err := keying.NewNamed([]string{"eu-west", "eu-central", "us-east", "us-west", "apac-south", "apac-east"})
	if err != nil {
		b.Fatal(err)
	}
	names := []string{"us-west", "apac-east", "eu-west", "mars"}
	i := 0
	for b.Loop() {
		sinkInt, sinkBool = s.PartitionOfName(names[i%len(names)])
		i++
	}
}

func BenchmarkReduceHash16(b *testing.B) {
	const input = "user-7-abcdefghi" // 16 bytes
	for _, h := range []keying.HashFunc{keying.XXHash64, keying.FNV1a64} {
		b.Run(h.String(), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkI64 = keying.ReduceHash(h.Sum64(input), 0, 33)
			}
		})
	}
}

func BenchmarkParseInt64(b *testing.B) {
	for _, s := range []string{"17", "-9223372036854775808"} {
		b.Run(s, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sinkI64, sinkBool = keying.ParseInt64(s)
			}
		})
	}
}

func BenchmarkKeyerPartition(b *testing.B) {
	req := realisticRequest()
	for _, c := range hotPathCases {
		b.Run(c.name, func(b *testing.B) {
			k := hotPathKeyer(b, c)
			b.ReportAllocs()
			for b.Loop() {
				key, f := k.Partition(req)
				if f != nil {
					b.Fatal(f)
				}
				sinkKey = key
			}
		})
	}
}
