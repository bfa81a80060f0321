package extproc

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/encoding/protowire"
)

// The handler receives each ext_proc request as a message, decoded by partroute itself, rather
// than as a ProcessingRequest decoded by the generated code: the decision reads a message's
// kind, its headers, its body and its end_of_stream, and nothing else. Decoding the whole
// ProcessingRequest (by reflection: no decoding code is generated for the ext_proc messages)
// allocated a HeaderValue, its key, its value and its raw value for every header, and was the
// largest single part of partroute's server work per request (docs/benchmarks.md, "Decoding
// only what the decision reads"). A message keeps its own copy of the bytes gRPC hands the
// codec (gRPC reuses them once the codec returns), and its headers and body are views into it.
//
// The fields the decision reads are decoded as the generated code decodes them: of a scalar
// field sent more than once the last wins, an embedded message sent more than once is merged
// (its repeated fields appended), a oneof member replaces another one, and a field sent with a
// wire type other than its own is an unknown field. The differential fuzz test
// FuzzDecodeMessage holds the decoder to that: whatever the generated code decodes, the decoder
// decodes to the same headers, body, end of stream and kind. Two things are left out on
// purpose. Fields the decision does not read (attributes, the metadata context, the protocol
// configuration, the content of trailers) are skipped, not validated. And header names and
// values are not checked for valid UTF-8, which the generated code requires of the proto3
// string fields: to partroute a header is bytes, and the keying compares them as bytes.

// Field numbers of the request messages the handler decodes. TestMessageFieldNumbers checks
// them against the messages' descriptors.
const (
	fieldProcessingRequestHeaders   protowire.Number = 2 // ProcessingRequest.request_headers
	fieldProcessingResponseHeaders  protowire.Number = 3 // ProcessingRequest.response_headers
	fieldProcessingRequestBody      protowire.Number = 4 // ProcessingRequest.request_body
	fieldProcessingResponseBody     protowire.Number = 5 // ProcessingRequest.response_body
	fieldProcessingRequestTrailers  protowire.Number = 6 // ProcessingRequest.request_trailers
	fieldProcessingResponseTrailers protowire.Number = 7 // ProcessingRequest.response_trailers
	fieldHTTPHeadersHeaders         protowire.Number = 1 // HttpHeaders.headers
	fieldHTTPHeadersEndOfStream     protowire.Number = 3 // HttpHeaders.end_of_stream
	fieldHTTPBodyBody               protowire.Number = 1 // HttpBody.body
	fieldHTTPBodyEndOfStream        protowire.Number = 2 // HttpBody.end_of_stream
	fieldHeaderMapHeaders           protowire.Number = 1 // HeaderMap.headers
	fieldHeaderValue                protowire.Number = 2 // HeaderValue.value
)

// messageKind is the member of a ProcessingRequest's request oneof that a message holds.
type messageKind uint8

const (
	// kindNone is a message that holds no member partroute knows: none at all, or one of a
	// later version of the protocol.
	kindNone messageKind = iota
	kindRequestHeaders
	kindResponseHeaders
	kindRequestBody
	kindResponseBody
	kindRequestTrailers
	kindResponseTrailers
)

// kindOf returns the kind of the ProcessingRequest field numbered n, kindNone for a field
// outside the request oneof.
func kindOf(n protowire.Number) messageKind {
	switch n {
	case fieldProcessingRequestHeaders:
		return kindRequestHeaders
	case fieldProcessingResponseHeaders:
		return kindResponseHeaders
	case fieldProcessingRequestBody:
		return kindRequestBody
	case fieldProcessingResponseBody:
		return kindResponseBody
	case fieldProcessingRequestTrailers:
		return kindRequestTrailers
	case fieldProcessingResponseTrailers:
		return kindResponseTrailers
	}
	return kindNone
}

// message is one ext_proc request message, decoded for the decision. The codec decodes into it
// (Codec.Unmarshal); a message is filled once, and read by the one goroutine that serves its
// stream until the stream reuses it for its next message (stream.message).
type message struct {
	kind messageKind
	// endOfStream is the end_of_stream of the headers or the body.
	endOfStream bool
	// headers are the headers of a headers message, views into the message's bytes.
	headers messageHeaders
	// body is the body of a body message, a view into the message's bytes; nil when the
	// message has none.
	body []byte
}

// messageHeaders is the header list of a message, as keying reads it. It is used through a
// pointer, so that storing it in the keying.Headers interface does not allocate.
type messageHeaders struct {
	list []messageHeader
	// inline holds the list of a message of up to inlineHeaders headers, so that a usual
	// request's list is no allocation of its own.
	inline [inlineHeaders]messageHeader
}

// inlineHeaders is the number of headers a message holds without allocating: what a browser's
// request carries through Envoy, with room to spare.
const inlineHeaders = 24

// messageHeader is one HeaderValue as the handler reads it: its key, and its raw_value, or its
// value when raw_value is empty (older peers send value). Both alias the message's bytes.
type messageHeader struct{ key, value string }

func (h *messageHeaders) Len() int { return len(h.list) }

// At returns header i. Both strings alias the message, which outlives the decision.
func (h *messageHeaders) At(i int) (string, string) {
	e := &h.list[i]
	return e.key, e.value
}

// reset empties m for the next message of its stream. The inline header list is not cleared:
// it is read only up to the length of the list, which starts empty, and what it still holds of
// the message before is overwritten before it is read.
func (m *message) reset() {
	m.kind, m.endOfStream, m.body = kindNone, false, nil
	m.headers.list = nil
}

// errMessageMalformed is the error of a request message that is not valid protobuf.
var errMessageMalformed = errors.New("malformed ext_proc request message")

// unmarshal decodes b into m, which must be empty. m keeps b, which must be its own: its
// headers and body are views into it.
func (m *message) unmarshal(b []byte) error {
	m.headers.list = m.headers.inline[:0]
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		kind := kindOf(f.n)
		if kind == kindNone || f.typ != protowire.BytesType {
			continue
		}
		if kind != m.kind {
			// Another member of the oneof replaces the one before it.
			m.kind, m.endOfStream, m.body = kind, false, nil
			m.headers.list = m.headers.list[:0]
		}
		switch kind {
		case kindRequestHeaders, kindResponseHeaders:
			err = m.decodeHTTPHeaders(f.bytes)
		case kindRequestBody, kindResponseBody:
			err = m.decodeHTTPBody(f.bytes)
		}
		// Trailers are answered without being read.
		if err != nil {
			return err
		}
	}
	return nil
}

// decodeHTTPHeaders decodes an HttpHeaders into m, merging it with what m holds.
func (m *message) decodeHTTPHeaders(b []byte) error {
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		switch {
		case f.n == fieldHTTPHeadersHeaders && f.typ == protowire.BytesType:
			if err := m.decodeHeaderMap(f.bytes); err != nil {
				return err
			}
		case f.n == fieldHTTPHeadersEndOfStream && f.typ == protowire.VarintType:
			m.endOfStream = f.varint != 0
		}
	}
	return nil
}

// decodeHeaderMap appends the headers of a HeaderMap to m's.
func (m *message) decodeHeaderMap(b []byte) error {
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		if f.n != fieldHeaderMapHeaders || f.typ != protowire.BytesType {
			continue
		}
		h, err := decodeHeaderValue(f.bytes)
		if err != nil {
			return err
		}
		m.headers.list = append(m.headers.list, h)
	}
	return nil
}

// decodeHeaderValue decodes a HeaderValue: its key, and its raw_value, or its value when
// raw_value is empty.
func decodeHeaderValue(b []byte) (messageHeader, error) {
	var key, value, raw []byte
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return messageHeader{}, err
		}
		b = rest
		if f.typ != protowire.BytesType {
			continue
		}
		switch f.n {
		case fieldHeaderKey:
			key = f.bytes
		case fieldHeaderValue:
			value = f.bytes
		case fieldHeaderRawValue:
			raw = f.bytes
		}
	}
	if len(raw) > 0 {
		value = raw
	}
	return messageHeader{key: bytesToString(key), value: bytesToString(value)}, nil
}

// decodeHTTPBody decodes an HttpBody into m, merging it with what m holds.
func (m *message) decodeHTTPBody(b []byte) error {
	for len(b) > 0 {
		f, rest, err := nextField(b)
		if err != nil {
			return err
		}
		b = rest
		switch {
		case f.n == fieldHTTPBodyBody && f.typ == protowire.BytesType:
			// A body present but empty is an empty body, not none.
			m.body = f.bytes[:len(f.bytes):len(f.bytes)]
		case f.n == fieldHTTPBodyEndOfStream && f.typ == protowire.VarintType:
			m.endOfStream = f.varint != 0
		}
	}
	return nil
}

// wireField is one field of an encoded message: its number and wire type and, for a
// length-delimited field, its bytes (a subslice of the message), or for a varint its value.
// Groups and fixed-size fields carry neither.
type wireField struct {
	n      protowire.Number
	typ    protowire.Type
	bytes  []byte
	varint uint64
}

// nextField decodes the field at the start of b, and returns it and the rest of b. Each level
// of the decoder loops over its fields itself: the same loop as a range-over-func iterator
// measured 7% slower (BenchmarkDecodeRequest).
func nextField(b []byte) (wireField, []byte, error) {
	var f wireField
	var l int
	f.n, f.typ, l = protowire.ConsumeTag(b)
	if l < 0 {
		return f, nil, fmt.Errorf("%w: %w", errMessageMalformed, protowire.ParseError(l))
	}
	b = b[l:]
	switch f.typ {
	case protowire.BytesType:
		f.bytes, l = protowire.ConsumeBytes(b)
	case protowire.VarintType:
		f.varint, l = protowire.ConsumeVarint(b)
	default:
		l = protowire.ConsumeFieldValue(f.n, f.typ, b)
	}
	if l < 0 {
		return f, nil, fmt.Errorf("%w: field %d: %w", errMessageMalformed, f.n, protowire.ParseError(l))
	}
	return f, b[l:], nil
}
