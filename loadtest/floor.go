package loadtest

import (
	"errors"
	"io"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
)

// FloorProcessor is the decoding floor: the least a server on go-control-plane's generated
// code pays to route as partroute does. gRPC decodes each request message into a
// ProcessingRequest, whole, and the server answers request headers with bytes encoded once, at
// start, in the shape of partroute's answer under the scenario's headers.setBy (FloorAnswer),
// so that it decides nothing and encodes nothing per request. partroute's server cost is
// measured against it as well as against the no-op server; partroute's own decoder reads only
// what its decision needs (extproc/message.go), which is cheaper than the floor's decoding.
//
// With one partition, every answer names that partition's primary, so through Envoy every
// request lands on one replica. With several (loadtest -floor-spread), the floor answers for
// each partition in turn, the primary for a write and the secondaries for a read (a GET or a
// HEAD), so that Envoy spreads requests over the subsets as it does partroute's: the
// difference between the two measures what Envoy's routing itself costs.
type FloorProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
	// answers holds, for each partition, the answer to a write and then the answer to a read.
	answers []preEncoded
	// next counts the answers of a spreading floor, to take the partitions in turn.
	next atomic.Uint64
}

// NewFloorProcessor returns the floor server, answering in partroute's shape of setBy for the
// partitions, with key as every request's key, under the default header names.
func NewFloorProcessor(partitions []string, key string, setBy config.SetBy) (*FloorProcessor, error) {
	if len(partitions) == 0 {
		return nil, errors.New("the decoding floor needs a partition to answer for")
	}
	f := &FloorProcessor{}
	for _, partition := range partitions {
		for _, role := range [2]string{"primary", "secondary"} {
			b, err := proto.Marshal(FloorAnswer(partition, role, key, setBy))
			if err != nil {
				return nil, err
			}
			f.answers = append(f.answers, b)
		}
	}
	return f, nil
}

// answer returns the answer to the request headers h.
func (f *FloorProcessor) answer(h *extprocv3.HttpHeaders) preEncoded {
	if len(f.answers) == 2 {
		return f.answers[0]
	}
	partitions := uint64(len(f.answers) / 2)
	i := 2 * int(f.next.Add(1)%partitions) //nolint:gosec // below the number of partitions, an int
	for _, hv := range h.GetHeaders().GetHeaders() {
		if hv.GetKey() == ":method" {
			if m := string(hv.GetRawValue()); m == "GET" || m == "HEAD" {
				i++
			}
			break
		}
	}
	return f.answers[i]
}

// FloorAnswer is the answer the floor server sends, decoded: what partroute answers a request
// to partition of key key for role (primary or secondary) when its configuration has
// headers.setBy setBy (the zero SetBy is the default's). Every shape carries the envoy.lb metadata. With extproc the answer also sets the
// three headers, replacing the client's copies, by header mutation; with envoy it has no mutation
// and gives the headers' values in the partroute.request metadata for Envoy's routes to set;
// with none it has the envoy.lb metadata alone.
func FloorAnswer(partition, role, key string, setBy config.SetBy) *extprocv3.ProcessingResponse {
	h := config.DefaultHeaders()
	metadata := map[string]*structpb.Value{
		contract.LBNamespace: structpb.NewStructValue(contract.LBFields(partition, role)),
	}
	headers := &extprocv3.HeadersResponse{}
	switch setBy.OrDefault() {
	case config.SetByExtProc:
		set := func(name, value string) *corev3.HeaderValueOption {
			return &corev3.HeaderValueOption{
				Header:       &corev3.HeaderValue{Key: name, RawValue: []byte(value)},
				AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
			}
		}
		// The headers set replace the client's copies, as partroute's do.
		headers.Response = &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{
			SetHeaders: []*corev3.HeaderValueOption{set(h.Partition, partition), set(h.Role, role), set(h.Key, key)},
		}}
	case config.SetByEnvoy:
		metadata[contract.RequestNamespace] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			contract.RequestKeyPartition: structpb.NewStringValue(partition),
			contract.RequestKeyRole:      structpb.NewStringValue(role),
			contract.RequestKeyKey:       structpb.NewStringValue(key),
		}})
	}
	return &extprocv3.ProcessingResponse{
		Response:        &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: headers},
		DynamicMetadata: &structpb.Struct{Fields: metadata},
	}
}

// Process answers each message of one stream until the client half-closes or resets it.
func (f *FloorProcessor) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := srv.Context()
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		var out any
		if h := req.GetRequestHeaders(); h != nil {
			out = f.answer(h)
		} else {
			resp := NoopResponse(req)
			if resp == nil {
				continue
			}
			out = resp
		}
		if err := srv.SendMsg(out); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// preEncoded is a message already encoded, which FloorCodec sends as it is.
type preEncoded []byte

// FloorCodec is the floor server's codec: pre-encoded answers go out as they are, and every
// other message goes through next, the codec partroute's server uses. Pass it to the server
// with grpc.ForceServerCodecV2, after partroute's server options.
type FloorCodec struct{ next encoding.CodecV2 }

// NewFloorCodec wraps next.
func NewFloorCodec(next encoding.CodecV2) FloorCodec { return FloorCodec{next: next} }

// Name is "proto", as next's.
func (FloorCodec) Name() string { return "proto" }

// Marshal sends a pre-encoded message's bytes, shared by every answer: gRPC only reads them.
func (c FloorCodec) Marshal(v any) (mem.BufferSlice, error) {
	if b, ok := v.(preEncoded); ok {
		return mem.BufferSlice{mem.SliceBuffer(b)}, nil
	}
	return c.next.Marshal(v)
}

// Unmarshal is next's: the floor decodes requests as partroute does.
func (c FloorCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.next.Unmarshal(data, v) }

// FloorServerOptions are opts with the floor's codec in place of the one they set, next.
func FloorServerOptions(next encoding.CodecV2, opts ...grpc.ServerOption) []grpc.ServerOption {
	return append(opts, grpc.ForceServerCodecV2(NewFloorCodec(next)))
}
