package extproc

import (
	"testing"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
)

// TestCodecMarshalsLikeProto checks that every response the handler gives (routed, passed
// through, rejected, and the empty ones) reads back as the same message, whichever code
// marshalled it. Run with -tags vtprotobuf, it checks the generated code.
func TestCodecMarshalsLikeProto(t *testing.T) {
	f := newFixture(t)
	f.handler.log = discardLogger()
	codec := NewCodec()
	_, vt := any(&extprocv3.ProcessingResponse{}).(vtMarshaler)
	t.Logf("generated marshalling code in this build: %v", vt)
	msgs := []*extprocv3.ProcessingRequest{
		benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"),
		benchHeaders("GET", "api.example.org", "/api/sessions/current", "cookie", "session=8d1f0c5e2b7a4c9d"),
		benchHeaders("GET", "x.example.org", "/elsewhere"),
		benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "abc"),
		{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}},
	}
	for _, msg := range msgs {
		out := f.process(t, msg)
		if len(out) != 1 {
			t.Fatalf("%d responses", len(out))
		}
		data, err := codec.Marshal(out[0])
		if err != nil {
			t.Fatal(err)
		}
		var back extprocv3.ProcessingResponse
		if err := proto.Unmarshal(data.Materialize(), &back); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&back, out[0]) {
			t.Errorf("codec changed the response:\n got %v\nwant %v", &back, out[0])
		}
		data.Free()
	}
	// An answer the handler sent in its wire form goes out as those bytes, read as the answer.
	raw := newFakeStream(benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"))
	raw.raw = true
	if err := f.handler.Process(raw); err != nil || len(raw.out) != 1 {
		t.Fatalf("unexpected answer %v, %v", raw.out, err)
	}
	want, err := decodeAnswer(raw.out[0])
	if err != nil || want.GetDynamicMetadata() == nil {
		t.Fatalf("encoded answer %v: %v", want, err)
	}
	data, err := codec.Marshal(raw.out[0])
	if err != nil {
		t.Fatal(err)
	}
	var back extprocv3.ProcessingResponse
	if err := proto.Unmarshal(data.Materialize(), &back); err != nil || !proto.Equal(&back, want) {
		t.Errorf("encoded answer through the codec: %v, %v; want %v", &back, err, want)
	}
	// A message without generated code, as the health service sends, goes through gRPC's codec.
	data, err = codec.Marshal(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
	if err != nil {
		t.Fatal(err)
	}
	var h healthpb.HealthCheckResponse
	if err := codec.Unmarshal(data, &h); err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health response round trip: %v, %v", &h, err)
	}
}

// BenchmarkCodecMarshal measures marshalling a routed response, the handler's most common, as
// the handler sends it: encoded already, so the codec copies its bytes.
func BenchmarkCodecMarshal(b *testing.B) {
	f := newFixture(b)
	s := newFakeStream(benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"))
	s.raw = true
	if err := f.handler.Process(s); err != nil || len(s.out) != 1 {
		b.Fatalf("unexpected answer %v, %v", s.out, err)
	}
	out := s.out
	codec := NewCodec()
	b.ReportAllocs()
	for b.Loop() {
		data, err := codec.Marshal(out[0])
		if err != nil {
			b.Fatal(err)
		}
		data.Free()
	}
}
