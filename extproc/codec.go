package extproc

import (
	"google.golang.org/grpc/encoding"
	// gRPC's proto codec registers itself when its package is loaded; Codec falls back to it.
	_ "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// vtMarshaler is the marshalling code that go-control-plane generates with vtprotobuf. Its
// types have it only in a binary built with the build tag vtprotobuf (as `make build` does).
type vtMarshaler interface {
	SizeVT() int
	MarshalToSizedBufferVTStrict(dAtA []byte) (int, error)
}

// Codec is the ext_proc server's gRPC codec: protobuf on the wire, like gRPC's own, but
// responses are marshalled by the generated vtprotobuf code when the binary has it. That code
// writes each field directly instead of walking the message by reflection, which matters for
// partroute's responses: the envoy.lb Struct is a map of maps, and marshalling it by reflection
// takes several times the time and the allocations of the generated code (docs/benchmarks.md
// has the measurements: BenchmarkCodecMarshal without and with the tag). Without the build
// tag, and for every message without the generated code (health checks), it is gRPC's own
// codec. No unmarshalling code is generated for the ext_proc messages: the handler's requests
// are decoded by partroute's own decoder, everything else by gRPC's codec.
type Codec struct {
	proto encoding.CodecV2
}

// NewCodec returns the codec; pass it to the server with grpc.ForceServerCodecV2.
func NewCodec() Codec { return Codec{proto: encoding.GetCodecV2("proto")} }

// Name is "proto": the content subtype clients send and expect is unchanged.
func (Codec) Name() string { return "proto" }

// Marshal marshals v with its generated code when it has some, into a pooled buffer when the
// message is large enough for gRPC to pool it.
func (c Codec) Marshal(v any) (mem.BufferSlice, error) {
	m, ok := v.(vtMarshaler)
	if !ok {
		return c.proto.Marshal(v)
	}
	size := m.SizeVT()
	if encoded := unknownFields(v); len(encoded) == size && size > 0 {
		// A message whose whole encoding is its unknown fields is an answer the handler wrote
		// in its wire form (answer.go): its bytes go out as they are. They belong to that one
		// response, which nothing modifies once sent, so they are not copied.
		return mem.BufferSlice{mem.SliceBuffer(encoded)}, nil
	}
	if mem.IsBelowBufferPoolingThreshold(size) {
		buf := make([]byte, size)
		if _, err := m.MarshalToSizedBufferVTStrict(buf); err != nil {
			return nil, err
		}
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	pool := mem.DefaultBufferPool()
	buf := pool.Get(size)
	if _, err := m.MarshalToSizedBufferVTStrict((*buf)[:size]); err != nil {
		pool.Put(buf)
		return nil, err
	}
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// unknownFields returns the unknown fields of v, a protobuf message.
func unknownFields(v any) []byte {
	if m, ok := v.(interface{ ProtoReflect() protoreflect.Message }); ok {
		return m.ProtoReflect().GetUnknown()
	}
	return nil
}

// Unmarshal decodes an ext_proc request into the handler's message itself (message.go), from a
// copy of data, which gRPC reuses once Unmarshal returns; every other message is gRPC's codec's.
func (c Codec) Unmarshal(data mem.BufferSlice, v any) error {
	if m, ok := v.(*message); ok {
		return m.unmarshal(data.Materialize())
	}
	return c.proto.Unmarshal(data, v)
}
