package loadtest

import (
	"fmt"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/extproc"
)

// Field numbers of envoy.service.ext_proc.v3 messages that the generator reads.
const (
	fieldRequestHeaders    protowire.Number = 1 // ProcessingResponse.request_headers
	fieldImmediateResponse protowire.Number = 7 // ProcessingResponse.immediate_response
	fieldDynamicMetadata   protowire.Number = 8 // ProcessingResponse.dynamic_metadata
	fieldCommonResponse    protowire.Number = 1 // HeadersResponse.response
	fieldHeaderMutation    protowire.Number = 2 // CommonResponse.header_mutation
	fieldHTTPStatus        protowire.Number = 1 // ImmediateResponse.status, HttpStatus.code
)

// answer is what the generator needs to know of a ProcessingResponse: its kind, whether it
// routes (a header mutation and dynamic metadata), and an immediate response's status.
//
// The generator plays Envoy, which parses responses in C++ at a fraction of what a full Go
// unmarshal costs; decoding partroute's envoy.lb Struct (a map of maps) alone would cost the
// generator microseconds per request that the no-op baseline's empty answer does not, and on a
// machine the server shares that time is taken from the server. Reading only these fields keeps
// the generator's cost the same for every server.
type answer struct {
	kind     protowire.Number
	mutation bool
	metadata bool
	status   int
}

// parse reads b, a serialized ProcessingResponse.
func (a *answer) parse(b []byte) error {
	*a = answer{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return protowire.ParseError(n)
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == fieldDynamicMetadata:
			a.metadata = true
		case num >= 1 && num <= 7 || num == 11:
			a.kind = num
			switch num {
			case fieldRequestHeaders:
				common, ok := field(v, fieldCommonResponse)
				if ok {
					_, a.mutation = field(common, fieldHeaderMutation)
				}
			case fieldImmediateResponse:
				if st, ok := field(v, fieldHTTPStatus); ok {
					a.status = int(varintField(st, fieldHTTPStatus)) //nolint:gosec // an HTTP status; a wrong one only names the error it is counted under
				}
			}
		}
	}
	return nil
}

// field returns the last occurrence of length-delimited field num in message b.
func field(b []byte, num protowire.Number) (v []byte, ok bool) {
	for len(b) > 0 {
		n, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return nil, false
		}
		b = b[k:]
		if n == num && typ == protowire.BytesType {
			val, k := protowire.ConsumeBytes(b)
			if k < 0 {
				return nil, false
			}
			v, ok, b = val, true, b[k:]
			continue
		}
		if k = protowire.ConsumeFieldValue(n, typ, b); k < 0 {
			return nil, false
		}
		b = b[k:]
	}
	return v, ok
}

// varintField returns varint field num of message b, 0 when absent.
func varintField(b []byte, num protowire.Number) uint64 {
	var out uint64
	for len(b) > 0 {
		n, typ, k := protowire.ConsumeTag(b)
		if k < 0 {
			return 0
		}
		b = b[k:]
		if n == num && typ == protowire.VarintType {
			v, k := protowire.ConsumeVarint(b)
			if k < 0 {
				return 0
			}
			out, b = v, b[k:]
			continue
		}
		if k = protowire.ConsumeFieldValue(n, typ, b); k < 0 {
			return 0
		}
		b = b[k:]
	}
	return out
}

// answerCodec is the generator's gRPC codec: requests are marshalled like any protobuf message,
// and answers are read into an answer without unmarshalling them. It
// keeps the name "proto", so the server sees an ordinary gRPC request.
type answerCodec struct {
	proto encoding.CodecV2
}

// newAnswerCodec marshals requests with partroute's own server codec, which uses the generated
// vtprotobuf code when the binary is built with it: the generator's own cost is then lower, and
// more of the machine is left to the server.
func newAnswerCodec() answerCodec { return answerCodec{proto: extproc.NewCodec()} }

func (c answerCodec) Name() string { return "proto" }

func (c answerCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c answerCodec) Unmarshal(data mem.BufferSlice, v any) error {
	a, ok := v.(*answer)
	if !ok {
		if _, isProto := v.(proto.Message); !isProto {
			return fmt.Errorf("answer codec: cannot unmarshal into %T", v)
		}
		return c.proto.Unmarshal(data, v)
	}
	if len(data) == 1 {
		return a.parse(data[0].ReadOnlyData())
	}
	return a.parse(data.Materialize())
}
