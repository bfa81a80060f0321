package loadtest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // the codec the floor wraps
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
)

// The decoding floor answers request headers with its pre-encoded answer, which a client
// decodes into partroute's shape for the floor's headers.setBy, and other messages with the
// empty answer of their kind. The shape is partroute's own: the same header mutation (or none)
// and the same metadata namespaces and fields as partroute's answer to a write under the same
// setBy, so that partroute is compared with a floor of its own shape.
func TestFloorAnswersWithItsPreEncodedShape(t *testing.T) {
	for _, setBy := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		t.Run(setBy.String(), func(t *testing.T) {
			srv := startFloor(t, []string{"users-0"}, setBy)
			want := FloorAnswer("users-0", "primary", "0", setBy)
			headers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
				Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":path", RawValue: []byte("/api/users/1")}}},
			}}}
			trailers := &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}}
			answers := exchange(t, srv.Addr, headers, trailers, headers)
			if answers[1].GetRequestTrailers() == nil {
				t.Errorf("trailers answered with %v", answers[1])
			}
			for _, resp := range []*extprocv3.ProcessingResponse{answers[0], answers[2]} {
				if !proto.Equal(resp, want) {
					t.Errorf("request headers answered with %v, want %v", resp, want)
				}
			}
			if got := want.GetDynamicMetadata().GetFields()[contract.LBNamespace].GetStructValue().GetFields()[contract.KeyRole].GetStringValue(); got != "primary" {
				t.Errorf("the floor's answer asks for role %q, want primary", got)
			}

			// partroute's own answer to a write, under the same setBy, has the floor's shape.
			sc := DefaultScenario()
			sc.SetBy = setBy
			pr := startPartrouteFor(t, prometheus.NewRegistry(), sc)
			msg, method, path, _ := envoyHeaders(ScenarioAuthority)
			method.RawValue, path.RawValue = []byte("PUT"), []byte(ScenarioPathPrefix+"12")
			got := exchange(t, pr.Addr, msg)[0]
			if shapeOf(got) != shapeOf(want) {
				t.Errorf("partroute's answer has the shape\n  %s\nthe floor's\n  %s", shapeOf(got), shapeOf(want))
			}
		})
	}
}

// A floor given several partitions answers for each in turn, with the primary for a write and
// the secondaries for a read, as partroute routes: through Envoy it spreads the requests over
// the subsets as partroute does. Given one, it answers every request for its primary.
func TestFloorSpreadsOverItsPartitions(t *testing.T) {
	request := func(method string) *extprocv3.ProcessingRequest {
		msg, m, path, _ := envoyHeaders(ScenarioAuthority)
		m.RawValue, path.RawValue = []byte(method), []byte(ScenarioPathPrefix+"12")
		return msg
	}
	answered := func(t *testing.T, partitions []string, methods ...string) map[string]int {
		t.Helper()
		srv := startFloor(t, partitions, config.SetByExtProc)
		got := map[string]int{}
		for _, method := range methods {
			resp := exchange(t, srv.Addr, request(method))[0]
			lb := resp.GetDynamicMetadata().GetFields()[contract.LBNamespace].GetStructValue().GetFields()
			got[method+" "+lb[contract.KeyPartition].GetStringValue()+" "+lb[contract.KeyRole].GetStringValue()]++
		}
		return got
	}
	t.Run("several", func(t *testing.T) {
		got := answered(t, []string{"p0", "p1"}, "PUT", "PUT", "GET", "GET", "HEAD", "HEAD")
		want := map[string]int{"PUT p0 primary": 1, "PUT p1 primary": 1, "GET p0 secondary": 1, "GET p1 secondary": 1, "HEAD p0 secondary": 1, "HEAD p1 secondary": 1}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("answers %v, want %v", got, want)
		}
	})
	t.Run("one", func(t *testing.T) {
		got := answered(t, []string{"p0"}, "PUT", "GET")
		if want := map[string]int{"PUT p0 primary": 1, "GET p0 primary": 1}; fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("answers %v, want %v", got, want)
		}
	})
	if _, err := NewFloorProcessor(nil, "0", config.SetByExtProc); err == nil {
		t.Error("a floor without a partition was made")
	}
}

// startFloor serves the decoding floor for partitions in the shape of setBy on a loopback port,
// with the codec it wraps.
func startFloor(t *testing.T, partitions []string, setBy config.SetBy) *GRPCServer {
	t.Helper()
	floor, err := NewFloorProcessor(partitions, "0", setBy)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := StartExtProcServer("127.0.0.1:0", floor, FloorServerOptions(encoding.GetCodecV2("proto"))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// exchange sends msgs on one ext_proc stream to the server at addr, one at a time, and returns
// the answer to each.
func exchange(t *testing.T, addr string, msgs ...*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	var out []*extprocv3.ProcessingResponse
	for _, m := range msgs {
		if err := stream.Send(m); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, resp)
	}
	_ = stream.CloseSend()
	return out
}

// shapeOf describes an answer to request headers by what it holds rather than its values: the
// headers it sets and removes, and the fields of each metadata namespace.
func shapeOf(resp *extprocv3.ProcessingResponse) string {
	m := resp.GetRequestHeaders().GetResponse().GetHeaderMutation()
	var set []string
	for _, h := range m.GetSetHeaders() {
		set = append(set, h.GetHeader().GetKey()+"("+h.GetAppendAction().String()+")")
	}
	removed := slices.Clone(m.GetRemoveHeaders())
	slices.Sort(set)
	slices.Sort(removed)
	out := fmt.Sprintf("kind %T, mutation %v, set %v, removed %v, metadata", resp.GetResponse(), m != nil, set, removed)
	var namespaces []string
	for ns, v := range resp.GetDynamicMetadata().GetFields() {
		var fields []string
		for f := range v.GetStructValue().GetFields() {
			fields = append(fields, f)
		}
		slices.Sort(fields)
		namespaces = append(namespaces, ns+"{"+strings.Join(fields, " ")+"}")
	}
	slices.Sort(namespaces)
	return out + " " + strings.Join(namespaces, " ")
}
