package extproc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/resolver"
)

// wantAnswer builds, as messages, the routed answer that an answer encodes: what Envoy must
// read from the bytes.
func wantAnswer(d resolver.Decision, a *answer, hosts string, ryw map[string]string) *extprocv3.ProcessingResponse {
	names := d.Config.Headers
	lbRole := d.Role.String()
	if d.Role == resolver.RoleAny {
		lbRole = ""
	}
	md := &structpb.Struct{Fields: map[string]*structpb.Value{
		contract.LBNamespace: structpb.NewStructValue(contract.LBFields(d.Partition.ID, lbRole)),
	}}
	hr := &extprocv3.HeadersResponse{}
	switch names.SetBy {
	case config.SetByEnvoy:
		req := map[string]*structpb.Value{
			contract.RequestKeyPartition: structpb.NewStringValue(d.Partition.ID),
			contract.RequestKeyRole:      structpb.NewStringValue(d.Role.String()),
		}
		if a.key != nil {
			req[contract.RequestKeyKey] = structpb.NewStringValue(string(a.key))
		}
		md.Fields[contract.RequestNamespace] = structpb.NewStructValue(&structpb.Struct{Fields: req})
	case config.SetByNone:
	default:
		// The headers set replace the client's copies; the key header, when there is no key,
		// is removed.
		m := &extprocv3.HeaderMutation{SetHeaders: []*corev3.HeaderValueOption{setHeader(names.Partition, []byte(d.Partition.ID)), setHeader(names.Role, []byte(d.Role.String()))}}
		if a.key != nil {
			m.SetHeaders = append(m.SetHeaders, setHeader(names.Key, a.key))
		} else {
			m.RemoveHeaders = []string{names.Key}
		}
		hr.Response = &extprocv3.CommonResponse{HeaderMutation: m}
	}
	if hosts != "" {
		md.Fields[contract.HostsNamespace] = structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			contract.KeyHosts: structpb.NewStringValue(hosts),
		}})
	}
	if ryw != nil {
		f := map[string]*structpb.Value{}
		for k, v := range ryw {
			f[k] = structpb.NewStringValue(v)
		}
		md.Fields[contract.RYWNamespace] = structpb.NewStructValue(&structpb.Struct{Fields: f})
	}
	resp := &extprocv3.ProcessingResponse{DynamicMetadata: md}
	if a.body {
		resp.Response = &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{Response: hr.Response}}
	} else {
		resp.Response = &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: hr}
	}
	return resp
}

// decodeEncoded reads an encoded answer as Envoy does, failing on bytes that are not a
// ProcessingResponse or hold fields it does not know.
func decodeEncoded(tb testing.TB, b []byte) *extprocv3.ProcessingResponse {
	tb.Helper()
	out, err := decodeAnswer(encodedResponse(new(extprocv3.ProcessingResponse), b))
	if err != nil {
		tb.Fatalf("encoded answer %x: %v", b, err)
	}
	return out
}

// TestEncodedAnswers checks every shape of encoded answer against the same answer built as
// messages: each headers.setBy, to headers and to a body, with and without a key, with a host
// list and a read-your-writes token, with long values whose lengths take two-byte varints.
func TestEncodedAnswers(t *testing.T) {
	long := make([]byte, 300)
	for i := range long {
		long[i] = 'k'
	}
	for _, setBy := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		for _, role := range []resolver.Role{resolver.RolePrimary, resolver.RoleSecondary, resolver.RoleAny} {
			for _, id := range []string{"users-0", "ü/" + string(long[:200])} {
				names := config.DefaultHeaders()
				names.SetBy = setBy
				d := resolver.Decision{Config: &config.Config{Headers: names}, Partition: &resolver.Partition{ID: id}, Role: role}
				parts := newAnswerParts(d)
				for _, key := range [][]byte{nil, []byte("17"), long} {
					for _, body := range []bool{false, true} {
						for _, extra := range []struct {
							hosts string
							ryw   map[string]string
						}{{}, {hosts: "10.0.0.1:80,10.0.0.2:80", ryw: map[string]string{contract.RYWKeyCookie: "c=t; Path=/", contract.RYWKeyToken: "t"}}} {
							a := answer{parts: &parts, body: body, key: key, keyHeader: names.Key}
							if extra.hosts != "" {
								a.hosts = appendNamespace(nil, contract.HostsNamespace, [2]string{contract.KeyHosts}, [2][]byte{[]byte(extra.hosts)})
								a.ryw = appendNamespace(nil, contract.RYWNamespace, [2]string{contract.RYWKeyCookie, contract.RYWKeyToken},
									[2][]byte{[]byte(extra.ryw[contract.RYWKeyCookie]), []byte(extra.ryw[contract.RYWKeyToken])})
							}
							got := decodeEncoded(t, a.appendTo(nil))
							if want := wantAnswer(d, &a, extra.hosts, extra.ryw); !proto.Equal(got, want) {
								t.Errorf("setBy %v role %v id %.10q key %.10q body %v hosts %q:\n got %v\nwant %v", setBy, role, id, key, body, extra.hosts, got, want)
							}
						}
					}
				}
			}
		}
	}
}

// TestAnswerFieldNumbers checks the field numbers the encoder writes against the messages'
// descriptors.
func TestAnswerFieldNumbers(t *testing.T) {
	number := func(m proto.Message, name string) int {
		f := m.ProtoReflect().Descriptor().Fields().ByName(protoreflect.Name(name))
		if f == nil {
			t.Fatalf("%s has no field %s", m.ProtoReflect().Descriptor().FullName(), name)
		}
		return int(f.Number())
	}
	value := &structpb.Value{}
	for _, c := range []struct {
		what string
		got  int
		want int
	}{
		{"request_headers", int(fieldRequestHeaders), number(&extprocv3.ProcessingResponse{}, "request_headers")},
		{"request_body", int(fieldRequestBody), number(&extprocv3.ProcessingResponse{}, "request_body")},
		{"dynamic_metadata", int(fieldDynamicMetadata), number(&extprocv3.ProcessingResponse{}, "dynamic_metadata")},
		{"HeadersResponse.response", int(fieldCommonResponse), number(&extprocv3.HeadersResponse{}, "response")},
		{"BodyResponse.response", int(fieldCommonResponse), number(&extprocv3.BodyResponse{}, "response")},
		{"header_mutation", int(fieldHeaderMutation), number(&extprocv3.CommonResponse{}, "header_mutation")},
		{"set_headers", int(fieldSetHeaders), number(&extprocv3.HeaderMutation{}, "set_headers")},
		{"remove_headers", int(fieldRemoveHeaders), number(&extprocv3.HeaderMutation{}, "remove_headers")},
		{"HeaderValueOption.header", int(fieldOptionHeader), number(&corev3.HeaderValueOption{}, "header")},
		{"append_action", int(fieldAppendAction), number(&corev3.HeaderValueOption{}, "append_action")},
		{"HeaderValue.key", int(fieldHeaderKey), number(&corev3.HeaderValue{}, "key")},
		{"raw_value", int(fieldHeaderRawValue), number(&corev3.HeaderValue{}, "raw_value")},
		{"Struct.fields", int(fieldStructFields), number(&structpb.Struct{}, "fields")},
		{"map entry key", int(fieldEntryKey), int((&structpb.Struct{}).ProtoReflect().Descriptor().Fields().ByName("fields").MapKey().Number())},
		{"map entry value", int(fieldEntryValue), int((&structpb.Struct{}).ProtoReflect().Descriptor().Fields().ByName("fields").MapValue().Number())},
		{"string_value", int(fieldStringValue), number(value, "string_value")},
		{"struct_value", int(fieldStructValue), number(value, "struct_value")},
	} {
		if c.got != c.want {
			t.Errorf("%s: the encoder writes field %d, the message has %d", c.what, c.got, c.want)
		}
	}
}
