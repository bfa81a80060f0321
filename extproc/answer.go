package extproc

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/resolver"
)

// A routed answer is written in its wire form directly, from parts encoded once per partition,
// role and header names (routeParts), with only what changes per request (the key, the host
// list of ordered selection, a read-your-writes token) appended. Marshalling the answer as a
// message, even with generated code, walked the envelope and the envoy.lb Struct (a map of
// maps) for every request, and was most of what partroute's server spent per request beyond the
// decoding floor (docs/benchmarks.md, "partroute's server at the floor").
//
// The bytes travel as the unknown fields of an otherwise empty ProcessingResponse: every
// protobuf codec, generated or by reflection, writes unknown fields as they are, so the answer
// is an ordinary message to gRPC, its stats handlers and any codec, and Envoy reads the fields
// it knows. TestEncodedAnswers checks every shape against the answer built as a message.

// Field numbers of the messages partroute encodes itself. TestAnswerFieldNumbers checks them
// against the messages' descriptors.
const (
	fieldRequestHeaders  protowire.Number = 1 // ProcessingResponse.request_headers
	fieldRequestBody     protowire.Number = 3 // ProcessingResponse.request_body
	fieldDynamicMetadata protowire.Number = 8 // ProcessingResponse.dynamic_metadata
	fieldCommonResponse  protowire.Number = 1 // HeadersResponse.response, BodyResponse.response
	fieldHeaderMutation  protowire.Number = 2 // CommonResponse.header_mutation
	fieldSetHeaders      protowire.Number = 1 // HeaderMutation.set_headers
	fieldRemoveHeaders   protowire.Number = 2 // HeaderMutation.remove_headers
	fieldOptionHeader    protowire.Number = 1 // HeaderValueOption.header
	fieldAppendAction    protowire.Number = 3 // HeaderValueOption.append_action
	fieldHeaderKey       protowire.Number = 1 // HeaderValue.key
	fieldHeaderRawValue  protowire.Number = 3 // HeaderValue.raw_value
	fieldStructFields    protowire.Number = 1 // Struct.fields, a map: each entry a message
	fieldEntryKey        protowire.Number = 1 // the key of a map entry
	fieldEntryValue      protowire.Number = 2 // the value of a map entry
	fieldStringValue     protowire.Number = 3 // Value.string_value
	fieldStructValue     protowire.Number = 5 // Value.struct_value
)

// answerParts are the encoded parts of a routed answer that depend only on the partition, the
// role and the configuration's headers block.
type answerParts struct {
	// mutation is the body of the header mutation without the key header: the partition and
	// role headers set. It is empty when Envoy's routes set the headers or none are set
	// (headers.setBy).
	mutation []byte
	// lb is the envoy.lb namespace, encoded as a Struct of that one field: Structs encoded one
	// after the other read as one Struct with all their fields.
	lb []byte
	// request is the body of the partroute.request namespace's Struct without the key, for
	// headers.setBy: envoy; nil otherwise.
	request []byte
}

// newAnswerParts encodes the parts of the answers that route d's requests. They are written
// by hand like the rest of the answer, not marshalled: a partition id that is not valid UTF-8
// would make a marshaller fail, and Envoy, not partroute, is the judge of what it accepts.
func newAnswerParts(d resolver.Decision) answerParts {
	var p answerParts
	names := &d.Config.Headers
	role := d.Role.String()
	switch names.SetBy.OrDefault() {
	case config.SetByEnvoy:
		p.request = appendStringField(nil, contract.RequestKeyPartition, []byte(d.Partition.ID))
		p.request = appendStringField(p.request, contract.RequestKeyRole, []byte(role))
	case config.SetByNone:
	default:
		p.mutation = appendHeaderOption(nil, names.Partition, []byte(d.Partition.ID))
		p.mutation = appendHeaderOption(p.mutation, names.Role, []byte(role))
	}
	lbRole := ""
	if d.Role != resolver.RoleAny {
		// Role is left out for "any", so that the [partition] subset selector applies.
		lbRole = role
	}
	p.lb = appendNamespace(nil, contract.LBNamespace, [2]string{contract.KeyPartition, contract.KeyRole}, [2][]byte{[]byte(d.Partition.ID), []byte(lbRole)})
	return p
}

// answer is what a routed answer holds beyond its parts.
type answer struct {
	parts *answerParts
	// body says the answer is to the request body (a service keyed on it) rather than to the
	// request headers.
	body bool
	// key is the key's text, nil for a singleton service, whose requests carry none; keyHeader
	// names its header, which the answer sets to key or, without one, removes.
	key       []byte
	keyHeader string
	// hosts is the encoded partroute.hosts namespace of ordered selection, and ryw the
	// partroute.ryw namespace of a minted token; nil when the answer has none.
	hosts, ryw []byte
}

// headerOptionSize is the size of the HeaderValueOption message that sets header name to a
// value of n bytes.
func headerOptionSize(name string, n int) int {
	return protowire.SizeTag(fieldOptionHeader) + protowire.SizeBytes(headerValueSize(name, n)) +
		protowire.SizeTag(fieldAppendAction) + protowire.SizeVarint(uint64(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
}

// headerValueSize is the size of the HeaderValue message of header name with a raw value of n
// bytes.
func headerValueSize(name string, n int) int {
	return protowire.SizeTag(fieldHeaderKey) + protowire.SizeBytes(len(name)) +
		protowire.SizeTag(fieldHeaderRawValue) + protowire.SizeBytes(n)
}

// mutationSize is the size of the header mutation's body, 0 when the answer has none.
func (a *answer) mutationSize() int {
	if len(a.parts.mutation) == 0 {
		return 0
	}
	n := len(a.parts.mutation)
	if a.key != nil {
		n += protowire.SizeTag(fieldSetHeaders) + protowire.SizeBytes(headerOptionSize(a.keyHeader, len(a.key)))
	} else {
		n += removalSize(a.keyHeader)
	}
	return n
}

// requestSize is the size of the partroute.request namespace's Struct body, with the key.
func (a *answer) requestSize() int {
	n := len(a.parts.request)
	if a.key != nil {
		n += structFieldSize(contract.RequestKeyKey, stringValueSize(len(a.key)))
	}
	return n
}

// metadataSize is the size of the dynamic metadata's Struct body.
func (a *answer) metadataSize() int {
	n := len(a.parts.lb) + len(a.hosts) + len(a.ryw)
	if a.parts.request != nil {
		n += structFieldSize(contract.RequestNamespace, structValueSize(a.requestSize()))
	}
	return n
}

// appendTo appends the encoded answer to b.
func (a *answer) appendTo(b []byte) []byte {
	mutation := a.mutationSize()
	b = appendMutationHead(b, a.body, mutation)
	if mutation > 0 {
		b = append(b, a.parts.mutation...)
		if a.key != nil {
			b = appendHeaderOption(b, a.keyHeader, a.key)
		} else {
			// A singleton's request has no key: the client's copy of the header goes.
			b = appendRemoveHeader(b, a.keyHeader)
		}
	}
	b = protowire.AppendTag(b, fieldDynamicMetadata, protowire.BytesType)
	b = appendLen(b, a.metadataSize())
	b = append(b, a.parts.lb...)
	if a.parts.request != nil {
		request := a.requestSize()
		b = appendStructFieldHead(b, contract.RequestNamespace, structValueSize(request))
		b = protowire.AppendTag(b, fieldStructValue, protowire.BytesType)
		b = appendLen(b, request)
		b = append(b, a.parts.request...)
		if a.key != nil {
			b = appendStringField(b, contract.RequestKeyKey, a.key)
		}
	}
	b = append(b, a.hosts...)
	return append(b, a.ryw...)
}

// appendMutationHead appends an answer's kind (request headers, or the request body) up to
// the body of its header mutation, which is mutation bytes long and which the caller appends
// next; with mutation 0 the answer has no CommonResponse at all.
func appendMutationHead(b []byte, body bool, mutation int) []byte {
	kind := fieldRequestHeaders
	if body {
		kind = fieldRequestBody
	}
	b = protowire.AppendTag(b, kind, protowire.BytesType)
	if mutation == 0 {
		return appendLen(b, 0)
	}
	common := protowire.SizeTag(fieldHeaderMutation) + protowire.SizeBytes(mutation)
	b = appendLen(b, protowire.SizeTag(fieldCommonResponse)+protowire.SizeBytes(common))
	b = protowire.AppendTag(b, fieldCommonResponse, protowire.BytesType)
	b = appendLen(b, common)
	b = protowire.AppendTag(b, fieldHeaderMutation, protowire.BytesType)
	return appendLen(b, mutation)
}

// appendHeaderOption appends the set_headers entry of a HeaderMutation that sets header name
// to value, replacing every copy the request has: Envoy applies OVERWRITE_IF_EXISTS_OR_ADD by
// removing them all before it adds the one, so a routed answer removes only the header it does
// not set (TestHeadersSetByThroughEnvoy sends each header twice). The value goes in raw_value
// only: Envoy rejects a header that sets both it and value.
func appendHeaderOption(b []byte, name string, value []byte) []byte {
	b = protowire.AppendTag(b, fieldSetHeaders, protowire.BytesType)
	b = appendLen(b, headerOptionSize(name, len(value)))
	b = protowire.AppendTag(b, fieldOptionHeader, protowire.BytesType)
	b = appendLen(b, headerValueSize(name, len(value)))
	b = protowire.AppendTag(b, fieldHeaderKey, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, fieldHeaderRawValue, protowire.BytesType)
	b = protowire.AppendBytes(b, value)
	b = protowire.AppendTag(b, fieldAppendAction, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD))
}

// appendRemoval appends the answer that only removes the client's copies of partroute's
// headers, to the request headers or to the request body.
func appendRemoval(b []byte, names *config.Headers, body bool) []byte {
	return appendRemovals(appendMutationHead(b, body, removalsSize(names)), names)
}

// appendRemovals appends the remove_headers entries of a HeaderMutation that remove the
// client's copies of partroute's three headers.
func appendRemovals(b []byte, names *config.Headers) []byte {
	for _, name := range [3]string{names.Partition, names.Role, names.Key} {
		b = appendRemoveHeader(b, name)
	}
	return b
}

// appendRemoveHeader appends the remove_headers entry of a HeaderMutation that removes every
// copy of header name.
func appendRemoveHeader(b []byte, name string) []byte {
	b = protowire.AppendTag(b, fieldRemoveHeaders, protowire.BytesType)
	return protowire.AppendString(b, name)
}

// removalsSize is the size of appendRemovals' entries.
func removalsSize(names *config.Headers) int {
	return removalSize(names.Partition) + removalSize(names.Role) + removalSize(names.Key)
}

// removalSize is the size of appendRemoveHeader's entry for header name.
func removalSize(name string) int {
	return protowire.SizeTag(fieldRemoveHeaders) + protowire.SizeBytes(len(name))
}

// appendLen appends the length of a field, a size computed from lengths of slices and strings
// and so never negative.
func appendLen(b []byte, n int) []byte {
	return protowire.AppendVarint(b, uint64(n)) //nolint:gosec // a sum of lengths, never negative
}

// stringValueSize is the size of a Value holding a string of n bytes.
func stringValueSize(n int) int { return protowire.SizeTag(fieldStringValue) + protowire.SizeBytes(n) }

// structValueSize is the size of a Value holding a Struct of n bytes.
func structValueSize(n int) int { return protowire.SizeTag(fieldStructValue) + protowire.SizeBytes(n) }

// structFieldSize is the size of one field of a Struct, named name, of a Value of valueSize
// bytes.
func structFieldSize(name string, valueSize int) int {
	return protowire.SizeTag(fieldStructFields) + protowire.SizeBytes(entrySize(name, valueSize))
}

// entrySize is the size of the map entry of a Struct's field named name, of a Value of
// valueSize bytes.
func entrySize(name string, valueSize int) int {
	return protowire.SizeTag(fieldEntryKey) + protowire.SizeBytes(len(name)) +
		protowire.SizeTag(fieldEntryValue) + protowire.SizeBytes(valueSize)
}

// appendStructFieldHead appends one field of a Struct up to its Value's bytes, which the
// caller appends next: valueSize of them.
func appendStructFieldHead(b []byte, name string, valueSize int) []byte {
	b = protowire.AppendTag(b, fieldStructFields, protowire.BytesType)
	b = appendLen(b, entrySize(name, valueSize))
	b = protowire.AppendTag(b, fieldEntryKey, protowire.BytesType)
	b = protowire.AppendString(b, name)
	b = protowire.AppendTag(b, fieldEntryValue, protowire.BytesType)
	return appendLen(b, valueSize)
}

// appendStringField appends one field of a Struct, named name, holding the string s.
func appendStringField(b []byte, name string, s []byte) []byte {
	b = appendStructFieldHead(b, name, stringValueSize(len(s)))
	b = protowire.AppendTag(b, fieldStringValue, protowire.BytesType)
	return protowire.AppendBytes(b, s)
}

// appendNamespace appends the field name of a Struct, holding a Struct of the string fields
// keys[i] = values[i] for every value that is not empty.
func appendNamespace(b []byte, name string, keys [2]string, values [2][]byte) []byte {
	inner := 0
	for i, v := range values {
		if len(v) > 0 {
			inner += structFieldSize(keys[i], stringValueSize(len(v)))
		}
	}
	b = appendStructFieldHead(b, name, structValueSize(inner))
	b = protowire.AppendTag(b, fieldStructValue, protowire.BytesType)
	b = appendLen(b, inner)
	for i, v := range values {
		if len(v) > 0 {
			b = appendStringField(b, keys[i], v)
		}
	}
	return b
}

// encodedResponse carries an encoded answer as the unknown fields of the response it returns.
func encodedResponse(resp *extprocv3.ProcessingResponse, b []byte) *extprocv3.ProcessingResponse {
	resp.ProtoReflect().SetUnknown(protoreflect.RawFields(b))
	return resp
}
