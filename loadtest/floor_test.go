package loadtest

import (
	"context"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // the codec the floor wraps
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/contract"
)

// The decoding floor answers request headers with its pre-encoded answer, which a client
// decodes into partroute's shape, and other messages with the empty answer of their kind.
func TestFloorAnswersWithItsPreEncodedShape(t *testing.T) {
	floor, err := NewFloorProcessor("users-0", "0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := StartExtProcServer("127.0.0.1:0", floor, FloorServerOptions(encoding.GetCodecV2("proto"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	cc, err := grpc.NewClient(srv.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := extprocv3.NewExternalProcessorClient(cc).Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/api/users/1")}}},
	}}}
	trailers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}
	for _, m := range []*extprocv3.ProcessingRequest{headers, trailers, headers} {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case m == trailers:
			if resp.GetRequestTrailers() == nil {
				t.Errorf("trailers answered with %v", resp)
			}
		case !proto.Equal(resp, FloorAnswer("users-0", "0")):
			t.Errorf("request headers answered with %v, want %v", resp, FloorAnswer("users-0", "0"))
		}
	}
	want := FloorAnswer("users-0", "0")
	if got := want.GetDynamicMetadata().GetFields()[contract.LBNamespace].GetStructValue().GetFields()[contract.KeyRole].GetStringValue(); got != "primary" {
		t.Errorf("the floor's answer asks for role %q, want primary", got)
	}
	if n := len(want.GetRequestHeaders().GetResponse().GetHeaderMutation().GetSetHeaders()); n != 3 {
		t.Errorf("the floor's answer sets %d headers, want partroute's 3", n)
	}
	_ = stream.CloseSend()
}
