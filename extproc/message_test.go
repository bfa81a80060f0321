package extproc

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestMessageFieldNumbers checks the field numbers the decoder reads against the messages'
// descriptors.
func TestMessageFieldNumbers(t *testing.T) {
	number := func(m proto.Message, name string) protowire.Number {
		f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
		if f == nil {
			t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), name)
		}
		return f.Number()
	}
	req := &extprocv3.ProcessingRequest{}
	for _, c := range []struct {
		what      string
		got, want protowire.Number
	}{
		{"request_headers", fieldProcessingRequestHeaders, number(req, "request_headers")},
		{"response_headers", fieldProcessingResponseHeaders, number(req, "response_headers")},
		{"request_body", fieldProcessingRequestBody, number(req, "request_body")},
		{"response_body", fieldProcessingResponseBody, number(req, "response_body")},
		{"request_trailers", fieldProcessingRequestTrailers, number(req, "request_trailers")},
		{"response_trailers", fieldProcessingResponseTrailers, number(req, "response_trailers")},
		{"HttpHeaders.headers", fieldHTTPHeadersHeaders, number(&extprocv3.HttpHeaders{}, "headers")},
		{"HttpHeaders.end_of_stream", fieldHTTPHeadersEndOfStream, number(&extprocv3.HttpHeaders{}, "end_of_stream")},
		{"HttpBody.body", fieldHTTPBodyBody, number(&extprocv3.HttpBody{}, "body")},
		{"HttpBody.end_of_stream", fieldHTTPBodyEndOfStream, number(&extprocv3.HttpBody{}, "end_of_stream")},
		{"HeaderMap.headers", fieldHeaderMapHeaders, number(&corev3.HeaderMap{}, "headers")},
		{"HeaderValue.key", fieldHeaderKey, number(&corev3.HeaderValue{}, "key")},
		{"HeaderValue.value", fieldHeaderValue, number(&corev3.HeaderValue{}, "value")},
		{"HeaderValue.raw_value", fieldHeaderRawValue, number(&corev3.HeaderValue{}, "raw_value")},
	} {
		if c.got != c.want {
			t.Errorf("%s: the decoder reads field %d, the message has %d", c.what, c.got, c.want)
		}
	}
	// Every member of the request oneof is a kind the decoder knows: a member added by a later
	// version must be added here, or the handler would answer its messages as of no kind.
	oneof := req.ProtoReflect().Descriptor().Oneofs().ByName("request")
	for i := 0; i < oneof.Fields().Len(); i++ {
		if f := oneof.Fields().Get(i); kindOf(f.Number()) == kindNone {
			t.Errorf("the request oneof's member %s (field %d) is no kind of the decoder", f.Name(), f.Number())
		}
	}
}

// view is what the handler reads of a request message, to compare the decoder's with the
// generated code's.
type view struct {
	kind        messageKind
	endOfStream bool
	headers     [][2]string // key, and the value the handler reads
	body        []byte
}

func (v view) String() string {
	return fmt.Sprintf("kind %d, end_of_stream %v, headers %q, body %q", v.kind, v.endOfStream, v.headers, v.body)
}

func (v view) equal(w view) bool {
	if v.kind != w.kind || v.endOfStream != w.endOfStream || !bytes.Equal(v.body, w.body) || len(v.headers) != len(w.headers) {
		return false
	}
	for i := range v.headers {
		if v.headers[i] != w.headers[i] {
			return false
		}
	}
	return true
}

// viewOfMessage is what the handler reads of m.
func viewOfMessage(m *message) view {
	v := view{kind: m.kind, endOfStream: m.endOfStream, body: m.body}
	for i := range m.headers.Len() {
		k, value := m.headers.At(i)
		v.headers = append(v.headers, [2]string{k, value})
	}
	return v
}

// viewOfRequest is what the handler would read of r.
func viewOfRequest(r *extprocv3.ProcessingRequest) view {
	var v view
	var headers *extprocv3.HttpHeaders
	switch m := r.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		v.kind, headers = kindRequestHeaders, m.RequestHeaders
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		v.kind, headers = kindResponseHeaders, m.ResponseHeaders
	case *extprocv3.ProcessingRequest_RequestBody:
		v.kind, v.body, v.endOfStream = kindRequestBody, m.RequestBody.GetBody(), m.RequestBody.GetEndOfStream()
	case *extprocv3.ProcessingRequest_ResponseBody:
		v.kind, v.body, v.endOfStream = kindResponseBody, m.ResponseBody.GetBody(), m.ResponseBody.GetEndOfStream()
	case *extprocv3.ProcessingRequest_RequestTrailers:
		v.kind = kindRequestTrailers
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		v.kind = kindResponseTrailers
	}
	if headers != nil {
		v.endOfStream = headers.GetEndOfStream()
		for _, h := range headers.GetHeaders().GetHeaders() {
			// Envoy sends raw_value; value is read when it is empty.
			value := h.GetValue()
			if len(h.GetRawValue()) > 0 {
				value = string(h.GetRawValue())
			}
			v.headers = append(v.headers, [2]string{h.GetKey(), value})
		}
	}
	return v
}

// messageCases are encoded request messages, each built field by field where the generated
// code cannot build it (a field twice, a wrong wire type), with what they must decode to.
func messageCases() []struct {
	name string
	b    []byte
} {
	hv := func(key, value, raw string) []byte {
		var b []byte
		b = protowire.AppendTag(b, fieldHeaderKey, protowire.BytesType)
		b = protowire.AppendString(b, key)
		if value != "" {
			b = protowire.AppendTag(b, fieldHeaderValue, protowire.BytesType)
			b = protowire.AppendString(b, value)
		}
		if raw != "" {
			b = protowire.AppendTag(b, fieldHeaderRawValue, protowire.BytesType)
			b = protowire.AppendString(b, raw)
		}
		return b
	}
	field := func(b []byte, n protowire.Number, v []byte) []byte {
		b = protowire.AppendTag(b, n, protowire.BytesType)
		return protowire.AppendBytes(b, v)
	}
	boolField := func(b []byte, n protowire.Number, v uint64) []byte {
		b = protowire.AppendTag(b, n, protowire.VarintType)
		return protowire.AppendVarint(b, v)
	}
	headerMap := func(values ...[]byte) []byte {
		var b []byte
		for _, v := range values {
			b = field(b, fieldHeaderMapHeaders, v)
		}
		return b
	}
	httpHeaders := func(hm []byte, eos uint64) []byte {
		b := field(nil, fieldHTTPHeadersHeaders, hm)
		return boolField(b, fieldHTTPHeadersEndOfStream, eos)
	}
	body := func(v string, eos uint64) []byte {
		b := field(nil, fieldHTTPBodyBody, []byte(v))
		return boolField(b, fieldHTTPBodyEndOfStream, eos)
	}
	marshal := func(r *extprocv3.ProcessingRequest) []byte {
		b, err := proto.Marshal(r)
		if err != nil {
			panic(err)
		}
		return b
	}
	attrs, _ := structpb.NewStruct(map[string]any{"a": "b"})
	return []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"request headers", marshal(benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"))},
		{"value and raw value", field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("a", "v", ""), hv("b", "", "r"), hv("c", "v", "r")), 1))},
		{"response headers", field(nil, fieldProcessingResponseHeaders, httpHeaders(headerMap(hv(":status", "", "503")), 0))},
		{"request body", marshal(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(`{"id":7}`), EndOfStream: true}}})},
		{"empty body", field(nil, fieldProcessingRequestBody, body("", 1))},
		{"response body", field(nil, fieldProcessingResponseBody, body("x", 0))},
		{"request trailers", marshal(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{Trailers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "t", Value: "v"}}}}}})},
		{"response trailers", marshal(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}})},
		{"fields the decision does not read", marshal(&extprocv3.ProcessingRequest{
			Request:           &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "k", RawValue: []byte("v")}}}}},
			MetadataContext:   &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"ns": attrs}},
			Attributes:        map[string]*structpb.Struct{"envoy.filters.http.ext_proc": attrs},
			ObservabilityMode: true,
			ProtocolConfig:    &extprocv3.ProtocolConfiguration{SendBodyWithoutWaitingForHeaderResponse: true},
		})},
		{"the deprecated attributes of HttpHeaders", field(nil, fieldProcessingRequestHeaders, slicesConcat(
			httpHeaders(headerMap(hv("a", "", "1")), 1),
			field(nil, 2, slicesConcat(field(nil, 1, []byte("x")), field(nil, 2, marshalStruct(attrs)))))),
		},
		{"headers merged across two request_headers", slicesConcat(
			field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("a", "", "1")), 1)),
			field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("b", "", "2")), 0)))},
		{"two header maps in one HttpHeaders", field(nil, fieldProcessingRequestHeaders, slicesConcat(
			field(nil, fieldHTTPHeadersHeaders, headerMap(hv("a", "", "1"))),
			field(nil, fieldHTTPHeadersHeaders, headerMap(hv("b", "", "2")))))},
		{"a header's fields twice", field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(slicesConcat(hv("a", "v1", "r1"), hv("b", "v2", "r2"))), 0))},
		{"body replaces headers", slicesConcat(
			field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("a", "", "1")), 1)),
			field(nil, fieldProcessingRequestBody, body("b", 0)))},
		{"headers after headers and body", slicesConcat(
			field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("a", "", "1")), 1)),
			field(nil, fieldProcessingRequestBody, body("b", 1)),
			field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("c", "", "3")), 0)))},
		{"body twice", slicesConcat(field(nil, fieldProcessingRequestBody, body("first", 1)), field(nil, fieldProcessingRequestBody, body("second", 0)))},
		{"end_of_stream as a large varint", field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("a", "", "1")), 1<<40))},
		{"request_headers with a wrong wire type", slicesConcat(
			field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(hv("a", "", "1")), 0)),
			boolField(nil, fieldProcessingRequestHeaders, 1),
			boolField(nil, fieldProcessingRequestBody, 1))},
		{"a header key with a wrong wire type", field(nil, fieldProcessingRequestHeaders, httpHeaders(headerMap(slicesConcat(hv("a", "", "1"), boolField(nil, fieldHeaderKey, 5))), 0))},
		{"unknown fields at every level", field(boolField(nil, 99, 1), fieldProcessingRequestHeaders, slicesConcat(
			protowire.AppendFixed32(protowire.AppendTag(nil, 50, protowire.Fixed32Type), 7),
			field(nil, fieldHTTPHeadersHeaders, slicesConcat(headerMap(slicesConcat(hv("a", "", "1"), protowire.AppendFixed64(protowire.AppendTag(nil, 9, protowire.Fixed64Type), 1))),
				protowire.AppendTag(protowire.AppendTag(nil, 7, protowire.StartGroupType), 7, protowire.EndGroupType)))))},
		{"a member of a later version", field(nil, 40, []byte("later"))},
	}
}

func slicesConcat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func marshalStruct(s *structpb.Struct) []byte {
	b, err := proto.Marshal(s)
	if err != nil {
		panic(err)
	}
	return b
}

// TestDecodeMessage decodes each case as the generated code does.
func TestDecodeMessage(t *testing.T) {
	for _, c := range messageCases() {
		t.Run(c.name, func(t *testing.T) {
			var want extprocv3.ProcessingRequest
			if err := proto.Unmarshal(c.b, &want); err != nil {
				t.Fatalf("the generated code cannot decode the case: %v", err)
			}
			m := new(message)
			if err := m.unmarshal(bytes.Clone(c.b)); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if got, want := viewOfMessage(m), viewOfRequest(&want); !got.equal(want) {
				t.Errorf("decoded\n%v\nwant\n%v", got, want)
			}
		})
	}
}

// Malformed messages are errors, never a panic or a partial decision.
func TestDecodeMessageMalformed(t *testing.T) {
	good, err := proto.Marshal(benchHeaders("GET", "a.test", "/", "x-user-id", "1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		b    []byte
	}{
		{"truncated", good[:len(good)-3]},
		{"a length past the end", []byte{byte(fieldProcessingRequestHeaders)<<3 | 2, 0x7f, 1, 2}},
		{"field number 0", []byte{0x02, 0x00}},
		{"an unterminated varint", append(protowire.AppendTag(nil, fieldProcessingRequestHeaders, protowire.VarintType), 0x80)},
		{"an end group without a start", []byte{0x0c}},
		{"a nested length past the end", []byte{byte(fieldProcessingRequestHeaders)<<3 | 2, 2, 0x0a, 0x05}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := new(message).unmarshal(c.b)
			if !errors.Is(err, errMessageMalformed) {
				t.Errorf("unmarshal: %v, want %v", err, errMessageMalformed)
			}
			if proto.Unmarshal(c.b, new(extprocv3.ProcessingRequest)) == nil {
				t.Errorf("the generated code decodes the case: it is not malformed")
			}
		})
	}
}

// FuzzDecodeMessage holds the decoder to the generated code: whatever the generated code
// decodes, the decoder decodes to what the handler would read of the generated code's message.
// What the generated code refuses, the decoder may decode (it does not validate the fields it
// skips, nor UTF-8), but never panics on.
func FuzzDecodeMessage(f *testing.F) {
	for _, c := range messageCases() {
		f.Add(c.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// A new message, and messages reused as a stream reuses its own.
		for _, m := range append(usedMessages(t), new(message)) {
			err := m.unmarshal(bytes.Clone(b))
			var want extprocv3.ProcessingRequest
			if proto.Unmarshal(b, &want) != nil {
				return
			}
			if err != nil {
				t.Fatalf("the generated code decodes %x, the decoder fails: %v", b, err)
			}
			if got, want := viewOfMessage(m), viewOfRequest(&want); !got.equal(want) {
				t.Fatalf("%x decoded\n%v\nwant\n%v", b, got, want)
			}
		}
	})
}

// A message reused for the next message of its stream holds nothing of the one before: an
// empty message after a body with end_of_stream has no kind, no body and no end of stream.
func TestMessageReset(t *testing.T) {
	m := decodeRequest(t, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x"), EndOfStream: true}}})
	m.reset()
	if err := m.unmarshal(nil); err != nil {
		t.Fatal(err)
	}
	if got := viewOfMessage(m); !got.equal(view{}) || m.body != nil {
		t.Errorf("reused message decoded %v", got)
	}
}

// usedMessages are messages that have held a message of each kind that leaves something
// behind (headers; a body with end_of_stream) and been reset, as the stream reuses its own.
func usedMessages(tb testing.TB) []*message {
	tb.Helper()
	var out []*message
	for _, r := range []*extprocv3.ProcessingRequest{
		benchHeaders("PUT", "users.example.com", "/api/users", "x-user-id", "17"),
		{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte("x"), EndOfStream: true}}},
	} {
		m := decodeRequest(tb, r)
		m.reset()
		out = append(out, m)
	}
	return out
}
