package loadtest

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/partroute/partroute/config"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestAnswerReadsWhatItChecks checks the generator's partial reading of responses against
// responses built and marshalled with the real types.
func TestAnswerReadsWhatItChecks(t *testing.T) {
	routed := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{
				SetHeaders:    []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-partition-id", RawValue: []byte("users/0:9")}}},
				RemoveHeaders: []string{"x-partition-id"},
			},
		}}},
		DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{"envoy.lb": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{"partition": structpb.NewStringValue("users/0:9")}})}},
	}
	// A passthrough removes the client's headers by mutation, with no metadata, in every shape.
	passthrough := &extprocv3.ProcessingResponse{
		Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
			HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"x-partition-id", "x-partition-role", "x-partition-key"}},
		}}},
	}
	cases := []struct {
		name string
		msg  *extprocv3.ProcessingResponse
		want answer
		// err is checkAnswer's code with expectRouted under headers.setBy extproc, and
		// errMetadataOnly under envoy and none, whose routed answers have no mutation.
		err, errMetadataOnly string
	}{
		{"routed", routed, answer{kind: fieldRequestHeaders, mutation: true, metadata: true}, "", ""},
		{"routed, metadata and Envoy's headers", FloorAnswer("users-0", "primary", "0", config.SetByEnvoy), answer{kind: fieldRequestHeaders, metadata: true}, "unrouted", ""},
		{"routed, metadata alone", FloorAnswer("users-0", "primary", "0", config.SetByNone), answer{kind: fieldRequestHeaders, metadata: true}, "unrouted", ""},
		{"passthrough", passthrough, answer{kind: fieldRequestHeaders, mutation: true}, "unrouted", "unrouted"},
		{"empty headers response", NoopResponse(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{}}), answer{kind: fieldRequestHeaders}, "unrouted", "unrouted"},
		{"immediate", &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
			Status: &typev3.HttpStatus{Code: typev3.StatusCode_ServiceUnavailable}, Body: []byte(`{"error":{}}`), Details: "x",
		}}}, answer{kind: fieldImmediateResponse, status: 503}, "immediate_503", "immediate_503"},
		{"body response", NoopResponse(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{}}), answer{kind: 3}, "wrong_kind", "wrong_kind"},
	}
	codec := newAnswerCodec()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b, err := proto.Marshal(c.msg)
			if err != nil {
				t.Fatal(err)
			}
			// Split the bytes in two buffers, as a message that spans two HTTP/2 frames.
			data := mem.BufferSlice{mem.SliceBuffer(b[:len(b)/2]), mem.SliceBuffer(b[len(b)/2:])}
			var got answer
			if err := codec.Unmarshal(data, &got); err != nil {
				t.Fatal(err)
			}
			if got != c.want {
				t.Errorf("answer %+v, want %+v", got, c.want)
			}
			for setBy, want := range map[config.SetBy]string{config.SetByExtProc: c.err, config.SetByEnvoy: c.errMetadataOnly, config.SetByNone: c.errMetadataOnly} {
				err = checkAnswer(&got, true, setBy)
				if code := codeOf(err); code != want {
					t.Errorf("checkAnswer under setBy %v: %v, want code %q", setBy, err, want)
				}
				if err := checkAnswer(&got, false, setBy); got.kind == fieldRequestHeaders && err != nil {
					t.Errorf("checkAnswer under setBy %v, not expecting a routed answer: %v", setBy, err)
				}
			}
		})
	}
	var a answer
	if err := a.parse([]byte{0x0a, 0x05, 0x01}); err == nil {
		t.Error("a truncated message parses")
	}
}

func codeOf(err error) string {
	if err == nil {
		return ""
	}
	return ErrorCode(err)
}

func TestAnswerCodecMarshalsRequests(t *testing.T) {
	codec := newAnswerCodec()
	msg, _, path, _ := envoyHeaders("users.example.com")
	path.RawValue = []byte("/api/users/7")
	data, err := codec.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	var back extprocv3.ProcessingRequest
	if err := proto.Unmarshal(data.Materialize(), &back); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&back, msg) {
		t.Errorf("request changed in marshalling: %v", &back)
	}
	if n := len(back.GetRequestHeaders().GetHeaders().GetHeaders()); n < 12 {
		t.Errorf("%d headers, want the 4 pseudo-headers and 8 others", n)
	}
	for _, h := range back.GetRequestHeaders().GetHeaders().GetHeaders() {
		if h.GetValue() != "" {
			t.Errorf("header %s sets value; Envoy sends raw_value only", h.GetKey())
		}
	}
}

func TestRequestIDs(t *testing.T) {
	seen := map[string]bool{}
	for seq := uint64(0); seq < 10_000; seq++ {
		id := string(appendRequestID(nil, seq))
		if len(id) != 36 || id[8] != '-' || id[13] != '-' || id[18] != '-' || id[23] != '-' {
			t.Fatalf("request id %q is not UUID-shaped", id)
		}
		if seen[id] {
			t.Fatalf("request id %q repeats", id)
		}
		seen[id] = true
	}
}
