package extproc

import (
	"bytes"
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/contract"
)

// noopHandler is the floor the real handler is measured against: it answers every
// request_headers message with an empty HeadersResponse and decides nothing. What it costs is
// what gRPC, protobuf and the stream cost on their own.
type noopHandler struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noopHandler) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || srv.Context().Err() != nil {
				return nil
			}
			return err
		}
		if req.GetRequestHeaders() == nil {
			continue
		}
		if err := srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
			return err
		}
	}
}

// benchHeaders is a request as a browser or SDK client sends it through Envoy: the
// pseudo-headers, a dozen ordinary headers, and the key near the end, in raw_value.
func benchHeaders(method, authority, path string, key ...string) *extprocv3.ProcessingRequest {
	extra := []string{
		"user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
		"accept", "application/json, text/plain, */*",
		"accept-encoding", "gzip, deflate, br",
		"accept-language", "en-GB,en;q=0.9",
		"content-type", "application/json",
		"x-forwarded-proto", "https",
		"x-request-id", "5b0d6c1e-8f4a-4c1b-9a57-2f3e8d9c0a11",
		"x-forwarded-for", "203.0.113.7",
		"x-envoy-expected-rq-timeout-ms", "15000",
	}
	return requestHeaders(method, authority, path, append(extra, key...)...)
}

// benchCases are the requests of the handler benchmarks, each with the check that its answer
// is the one expected, so that a benchmark never measures a wrong path.
var benchCases = []struct {
	name string
	msg  *extprocv3.ProcessingRequest
	ok   func(*extprocv3.ProcessingResponse) bool
}{
	{"header/int64", benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"), isRouted},
	{"cookie/hash", benchHeaders("GET", "api.example.org", "/api/sessions/current", "cookie", "theme=dark; session=8d1f0c5e2b7a4c9d"), isRouted},
}

func isRouted(r *extprocv3.ProcessingResponse) bool {
	return r.GetRequestHeaders().GetResponse().GetHeaderMutation() != nil && r.GetDynamicMetadata() != nil
}

func isRejected(r *extprocv3.ProcessingResponse) bool { return r.GetImmediateResponse() != nil }

func isEmptyHeaders(r *extprocv3.ProcessingResponse) bool {
	return r.GetRequestHeaders() != nil && r.GetRequestHeaders().GetResponse() == nil
}

// benchFakeStream runs one stream with one request per iteration through srv, on a fake
// stream that neither marshals nor allocates: what it measures is the handler's own work.
func benchFakeStream(b *testing.B, srv extprocv3.ExternalProcessorServer, msg *extprocv3.ProcessingRequest, ok func(*extprocv3.ProcessingResponse) bool) {
	s := newFakeStream(msg)
	s.out = make([]*extprocv3.ProcessingResponse, 0, 1)
	if err := srv.Process(s); err != nil || len(s.out) != 1 || !ok(s.out[0]) {
		b.Fatalf("unexpected answer: %v, %v", s.out, err)
	}
	s.raw = true
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s.reset()
		if err := srv.Process(s); err != nil {
			b.Fatal(err)
		}
	}
}

// reportDecisionTime adds the handler's own measure of the decision, from its histogram, as
// decision-ns/op.
func reportDecisionTime(b *testing.B, m *Metrics) {
	var out dto.Metric
	if err := m.decision.Write(&out); err != nil {
		b.Fatal(err)
	}
	if h := out.GetHistogram(); h.GetSampleCount() > 0 {
		b.ReportMetric(h.GetSampleSum()/float64(h.GetSampleCount())*1e9, "decision-ns/op")
	}
}

func BenchmarkHandlerHeaders(b *testing.B) {
	for _, c := range benchCases {
		b.Run(c.name, func(b *testing.B) {
			f := newFixture(b)
			benchFakeStream(b, f.handler, c.msg, c.ok)
			b.StopTimer()
			reportDecisionTime(b, f.metrics)
		})
	}
}

func BenchmarkHandlerReject(b *testing.B) {
	f := newFixture(b)
	// The log is at debug level in the fixture; a production logger is at info, where a
	// rejection costs no logging at all.
	f.handler.log = discardLogger()
	benchFakeStream(b, f.handler, benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "abc"), isRejected)
}

func BenchmarkNoopHandler(b *testing.B) {
	benchFakeStream(b, noopHandler{}, benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"), isEmptyHeaders)
}

// processCPU returns the CPU time the process has used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds the CPU time per request since start, of client and server together, as
// cpu-ns/op: on a shared machine it varies less than the wall time.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
}

// BenchmarkGRPCStreamPerRequest sends each request over its own stream on loopback, as Envoy
// does, to the real handler and to the no-op floor. Allocations are those of client and
// server together: the difference between the two is the handler's.
func BenchmarkGRPCStreamPerRequest(b *testing.B) {
	msg := benchCases[0].msg
	for _, c := range []struct {
		name string
		// srv returns the server and, for the real handler, its metrics.
		srv func(b *testing.B) (extprocv3.ExternalProcessorServer, *Metrics)
		ok  func(*extprocv3.ProcessingResponse) bool
	}{
		{"handler", func(b *testing.B) (extprocv3.ExternalProcessorServer, *Metrics) {
			f := newFixture(b)
			f.handler.log = discardLogger()
			return f.handler, f.metrics
		}, isRouted},
		{"noop", func(*testing.B) (extprocv3.ExternalProcessorServer, *Metrics) { return noopHandler{}, nil }, isEmptyHeaders},
	} {
		b.Run(c.name+"/serial", func(b *testing.B) {
			srv, m := c.srv(b)
			g := startGRPC(b, srv)
			ctx := context.Background()
			if r, err := roundTrip(ctx, g.client, msg); err != nil || !c.ok(r) {
				b.Fatalf("unexpected answer: %v, %v", r, err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU(b)
			for i := 0; i < b.N; i++ {
				if _, err := roundTrip(ctx, g.client, msg); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			reportCPU(b, cpu)
			if m != nil {
				reportDecisionTime(b, m)
			}
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			srv, m := c.srv(b)
			g := startGRPC(b, srv)
			ctx := context.Background()
			b.ReportAllocs()
			// Many streams in flight at once, as behind a busy Envoy.
			b.SetParallelism(8)
			b.ResetTimer()
			cpu := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := roundTrip(ctx, g.client, msg); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			reportCPU(b, cpu)
			if m != nil {
				reportDecisionTime(b, m)
			}
		})
	}
}

// BenchmarkHandlerSelection measures a read of a partition of two secondaries and a primary
// with each replicas.selection: what the ordered host list adds to the handler's work.
func BenchmarkHandlerSelection(b *testing.B) {
	for _, sel := range []string{"subset", "ordered"} {
		b.Run(sel, func(b *testing.B) {
			cfg := loadExampleConfig(b, "replicas: {reads: any}", "replicas: {reads: secondary, selection: "+sel+"}")
			view := loadExampleView(b, cfg, "- {address: 127.0.0.1:8085, role: secondary}",
				"- {address: 127.0.0.1:8085, role: secondary}\n          - {address: 127.0.0.1:8089, role: secondary}")
			f := newFixtureWith(b, cfg, view)
			benchFakeStream(b, f.handler, benchHeaders("GET", "users.example.com", "/api/users", "x-user-id", "12"), isRouted)
		})
	}
}

// BenchmarkHandlerReadYourWrites measures what read-your-writes costs the handler: a write
// that mints a token and a read that carries one (verified, to the primary), against the same
// requests with the feature off (the example configuration, where the token header is only
// one more header), and a read without a token with it on.
func BenchmarkHandlerReadYourWrites(b *testing.B) {
	_, ring := newRYWFixture(b)
	token := ring.Mint("users", "users-1", time.Now().Add(time.Hour))
	write := benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17")
	read := benchHeaders("GET", "users.example.com", "/api/users", "x-user-id", "17", "x-ryw", token)
	plainRead := benchHeaders("GET", "users.example.com", "/api/users", "x-user-id", "17")
	minted := func(r *extprocv3.ProcessingResponse) bool { return isRouted(r) && rywMetadata(r) != nil }
	toPrimary := func(r *extprocv3.ProcessingResponse) bool {
		return isRouted(r) && rywMetadata(r) == nil && r.GetDynamicMetadata().GetFields()[contract.LBNamespace].GetStructValue().GetFields()[contract.KeyRole].GetStringValue() == "primary"
	}
	toAny := func(r *extprocv3.ProcessingResponse) bool {
		return isRouted(r) && rywMetadata(r) == nil && r.GetDynamicMetadata().GetFields()[contract.LBNamespace].GetStructValue().GetFields()[contract.KeyRole] == nil
	}
	for _, c := range []struct {
		name string
		on   bool
		msg  *extprocv3.ProcessingRequest
		ok   func(*extprocv3.ProcessingResponse) bool
	}{
		{"off/write", false, write, func(r *extprocv3.ProcessingResponse) bool { return isRouted(r) && rywMetadata(r) == nil }},
		{"on/write", true, write, minted},
		{"off/read", false, read, toAny},
		{"on/read-token", true, read, toPrimary},
		{"on/read-no-token", true, plainRead, toAny},
	} {
		b.Run(c.name, func(b *testing.B) {
			f := newFixture(b)
			if c.on {
				f, _ = newRYWFixture(b)
			}
			benchFakeStream(b, f.handler, c.msg, c.ok)
			b.StopTimer()
			reportDecisionTime(b, f.metrics)
		})
	}
}

// BenchmarkDecodeRequest decodes a request's headers message as the handler receives it
// (decoder), and as the generated code decodes it into a ProcessingRequest (generated), from
// the copy of gRPC's bytes that each keeps.
func BenchmarkDecodeRequest(b *testing.B) {
	wire, err := proto.Marshal(benchCases[0].msg)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m := new(message)
			if err := m.unmarshal(bytes.Clone(wire)); err != nil || m.headers.Len() == 0 {
				b.Fatal(err)
			}
		}
	})
	b.Run("generated", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var r extprocv3.ProcessingRequest
			if err := proto.Unmarshal(wire, &r); err != nil || r.GetRequestHeaders() == nil {
				b.Fatal(err)
			}
		}
	})
}
