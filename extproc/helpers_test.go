package extproc

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
)

// examplesDir holds the example configuration and naming view that the tests route with.
const examplesDir = "../envoy-config/examples"

// fixture is a handler over a resolver, with the registry its metrics live in.
type fixture struct {
	cfg      *config.Config
	view     *resolver.View
	resolver *resolver.Resolver
	reg      *prometheus.Registry
	metrics  *Metrics
	handler  *Handler
	logs     *testkit.LogBuffer
}

// loadExampleConfig loads the example partroute.yaml, optionally edited by replacing old with
// new (pairs), from the examples directory so that naming.file resolves next to it.
func loadExampleConfig(tb testing.TB, edits ...string) *config.Config {
	tb.Helper()
	path, err := filepath.Abs(filepath.Join(examplesDir, "partroute.yaml"))
	if err != nil {
		tb.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	text := applyEdits(tb, string(data), edits...)
	cfg, err := config.Parse([]byte(text), path)
	if err != nil {
		tb.Fatalf("example configuration: %v", err)
	}
	return cfg
}

// loadExampleView loads the example naming view for cfg, optionally edited like
// loadExampleConfig.
func loadExampleView(tb testing.TB, cfg *config.Config, edits ...string) *resolver.View {
	tb.Helper()
	if len(edits) == 0 {
		view, err := resolver.LoadViewFile(cfg.Naming.File, cfg)
		if err != nil {
			tb.Fatalf("example naming view: %v", err)
		}
		return view
	}
	data, err := os.ReadFile(cfg.Naming.File)
	if err != nil {
		tb.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(applyEdits(tb, string(data), edits...)), cfg.Naming.File, cfg)
	if err != nil {
		tb.Fatalf("edited naming view: %v", err)
	}
	return view
}

func applyEdits(tb testing.TB, text string, edits ...string) string {
	tb.Helper()
	if len(edits)%2 != 0 {
		tb.Fatal("edits come in old, new pairs")
	}
	for i := 0; i < len(edits); i += 2 {
		if !strings.Contains(text, edits[i]) {
			tb.Fatalf("edit: %q is not in the file", edits[i])
		}
		text = strings.Replace(text, edits[i], edits[i+1], 1)
	}
	return text
}

// newFixture builds a handler that decides with the example configuration and naming view.
func newFixture(tb testing.TB) *fixture {
	tb.Helper()
	cfg := loadExampleConfig(tb)
	return newFixtureWith(tb, cfg, loadExampleView(tb, cfg))
}

// newFixtureWith builds a handler over cfg and naming, with a fresh registry and a debug
// logger writing into a buffer.
func newFixtureWith(tb testing.TB, cfg *config.Config, naming resolver.Naming) *fixture {
	tb.Helper()
	f := &fixture{cfg: cfg, reg: prometheus.NewRegistry(), logs: &testkit.LogBuffer{}}
	f.view, _ = naming.(*resolver.View)
	st := &resolver.State{Config: cfg, Naming: naming}
	// A naming source that learns from upstream responses is its state's listener, as the
	// Service Fabric source is.
	st.Upstream, _ = naming.(resolver.UpstreamListener)
	f.resolver = resolver.New(st)
	f.metrics = NewMetrics(f.reg)
	log := slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.handler = NewHandler(f.resolver, f.metrics, log)
	return f
}

// fakeStream is one ext_proc stream as the handler sees it: Recv hands out the queued
// messages and then recvErr (io.EOF unless set), Send records the responses.
type fakeStream struct {
	ctx     context.Context
	in      []*extprocv3.ProcessingRequest
	next    int
	recvErr error
	// recv, when set, is read after in is exhausted: each value is handed out in turn, and a
	// closed channel ends the stream with recvErr.
	recv    chan *extprocv3.ProcessingRequest
	sendErr error
	out     []*extprocv3.ProcessingResponse
	// raw keeps the responses as the handler sent them; otherwise an encoded answer is decoded
	// into the message Envoy reads, and a failure to decode it is kept in badAnswer.
	raw       bool
	badAnswer error
	// encoded holds each message handed out, encoded.
	encoded map[*extprocv3.ProcessingRequest][]byte
}

var _ extprocv3.ExternalProcessor_ProcessServer = (*fakeStream)(nil)

func newFakeStream(msgs ...*extprocv3.ProcessingRequest) *fakeStream {
	return &fakeStream{ctx: context.Background(), in: msgs}
}

func (s *fakeStream) Recv() (*extprocv3.ProcessingRequest, error) {
	if s.next < len(s.in) {
		m := s.in[s.next]
		s.next++
		return m, nil
	}
	if s.recv != nil {
		select {
		case m, ok := <-s.recv:
			if ok {
				return m, nil
			}
		case <-s.ctx.Done():
			return nil, s.ctx.Err()
		}
	}
	if s.recvErr != nil {
		return nil, s.recvErr
	}
	return nil, io.EOF
}

func (s *fakeStream) Send(m *extprocv3.ProcessingResponse) error {
	if s.sendErr != nil {
		return s.sendErr
	}
	if !s.raw {
		decoded, err := decodeAnswer(m)
		if err != nil && s.badAnswer == nil {
			s.badAnswer = err
		}
		m = decoded
	}
	s.out = append(s.out, m)
	return nil
}

// decodeAnswer returns the message an encoded answer holds in its unknown fields, as Envoy
// reads it; any other response as it is.
func decodeAnswer(m *extprocv3.ProcessingResponse) (*extprocv3.ProcessingResponse, error) {
	if len(m.ProtoReflect().GetUnknown()) == 0 {
		return m, nil
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return m, err
	}
	out := new(extprocv3.ProcessingResponse)
	if err := (proto.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(b, out); err != nil {
		return m, err
	}
	if len(out.ProtoReflect().GetUnknown()) != 0 {
		return out, fmt.Errorf("the answer holds fields Envoy does not know: %x", out.ProtoReflect().GetUnknown())
	}
	return out, nil
}

// reset makes the stream ready to replay its queued messages without allocating.
func (s *fakeStream) reset() {
	s.next = 0
	s.out = s.out[:0]
}

func (s *fakeStream) SetHeader(metadata.MD) error  { return nil }
func (s *fakeStream) SendHeader(metadata.MD) error { return nil }
func (s *fakeStream) SetTrailer(metadata.MD)       {}
func (s *fakeStream) Context() context.Context     { return s.ctx }
func (s *fakeStream) SendMsg(m any) error          { return s.Send(m.(*extprocv3.ProcessingResponse)) }

// RecvMsg hands out the next message as gRPC with Codec would: encoded, and decoded into the
// handler's message by the decoder. Each message is encoded once, so that replaying a stream
// (reset) measures the decoder and not the encoding.
func (s *fakeStream) RecvMsg(m any) error {
	r, err := s.Recv()
	if err != nil {
		return err
	}
	if s.encoded == nil {
		s.encoded = map[*extprocv3.ProcessingRequest][]byte{}
	}
	b, ok := s.encoded[r]
	if !ok {
		if b, err = proto.Marshal(r); err != nil {
			return err
		}
		s.encoded[r] = b
	}
	switch m := m.(type) {
	case *message:
		return m.unmarshal(bytes.Clone(b))
	case *extprocv3.ProcessingRequest:
		return proto.Unmarshal(b, m)
	}
	return fmt.Errorf("fakeStream: cannot receive a %T", m)
}

// decodeRequest returns r as the handler receives it.
func decodeRequest(tb testing.TB, r *extprocv3.ProcessingRequest) *message {
	tb.Helper()
	b, err := proto.Marshal(r)
	if err != nil {
		tb.Fatal(err)
	}
	m := new(message)
	if err := m.unmarshal(b); err != nil {
		tb.Fatalf("decoding %v: %v", r, err)
	}
	return m
}

// process runs one stream of msgs through the handler and returns its responses.
func (f *fixture) process(tb testing.TB, msgs ...*extprocv3.ProcessingRequest) []*extprocv3.ProcessingResponse {
	tb.Helper()
	s := newFakeStream(msgs...)
	if err := f.handler.Process(s); err != nil {
		tb.Fatalf("Process: %v", err)
	}
	if s.badAnswer != nil {
		tb.Fatalf("Process: %v", s.badAnswer)
	}
	return s.out
}

// decide sends one request_headers message and returns the single response.
func (f *fixture) decide(tb testing.TB, msg *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	tb.Helper()
	out := f.process(tb, msg)
	if len(out) != 1 {
		tb.Fatalf("got %d responses to one message, want 1", len(out))
	}
	return out[0]
}

// requestHeaders builds a request_headers message the way Envoy sends it: the pseudo-headers
// as ordinary entries and every value in raw_value. extra holds name, value pairs.
func requestHeaders(method, authority, path string, extra ...string) *extprocv3.ProcessingRequest {
	return headersMessage(false, false, method, authority, path, extra...)
}

// headersMessage builds a request_headers message; valueOnly puts values in the deprecated
// value field instead of raw_value, as older peers do.
func headersMessage(endOfStream, valueOnly bool, method, authority, path string, extra ...string) *extprocv3.ProcessingRequest {
	pairs := append([]string{":method", method, ":path", path, ":authority", authority, ":scheme", "http"}, extra...)
	hs := make([]*corev3.HeaderValue, 0, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		hv := &corev3.HeaderValue{Key: pairs[i]}
		if valueOnly {
			hv.Value = pairs[i+1]
		} else {
			hv.RawValue = []byte(pairs[i+1])
		}
		hs = append(hs, hv)
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers:     &corev3.HeaderMap{Headers: hs},
		EndOfStream: endOfStream,
	}}}
}

func requestBody(body string) *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}
}

// routed is what a routable decision must carry.
type routed struct {
	partition string
	// role is the role in the metadata; empty when the metadata must leave it out.
	role string
	// roleHeader is the value of x-partition-role; it is role unless role is empty.
	roleHeader string
	// key is the value of x-partition-key; empty when no key header may be set.
	key string
}

// checkRouted checks a routable answer to request headers (or to the body, when body is
// set): a header mutation that removes partroute's headers and sets them with raw_value
// only, and envoy.lb metadata holding exactly partition and role as strings.
func checkRouted(tb testing.TB, resp *extprocv3.ProcessingResponse, body bool, want routed) {
	tb.Helper()
	var common *extprocv3.CommonResponse
	if body {
		rb, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_RequestBody)
		if !ok {
			tb.Fatalf("response is %T, want a request_body response", resp.GetResponse())
		}
		common = rb.RequestBody.GetResponse()
	} else {
		rh, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_RequestHeaders)
		if !ok {
			tb.Fatalf("response is %T, want a request_headers response: %v", resp.GetResponse(), resp)
		}
		common = rh.RequestHeaders.GetResponse()
	}
	if common == nil {
		tb.Fatal("response carries no CommonResponse")
	}
	if common.GetStatus() != extprocv3.CommonResponse_CONTINUE {
		tb.Errorf("status %v, want CONTINUE", common.GetStatus())
	}
	if common.GetClearRouteCache() || common.GetBodyMutation() != nil || common.GetTrailers() != nil {
		tb.Errorf("response changes more than headers: %v", common)
	}
	hm := common.GetHeaderMutation()
	if hm == nil {
		tb.Fatal("routable request got no header mutation")
	}
	// Every header set replaces the client's copies (OVERWRITE_IF_EXISTS_OR_ADD); the key
	// header of a request without a key must be removed.
	removed := append([]string(nil), hm.GetRemoveHeaders()...)
	sort.Strings(removed)
	var wantRemoved []string
	if want.key == "" {
		wantRemoved = []string{"x-partition-key"}
	}
	if !equalStrings(removed, wantRemoved) {
		tb.Errorf("remove_headers %q, want %q", removed, wantRemoved)
	}
	for _, h := range hm.GetSetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			tb.Errorf("header %s set with %v, want OVERWRITE_IF_EXISTS_OR_ADD, which replaces the client's copies", h.GetHeader().GetKey(), h.GetAppendAction())
		}
	}
	wantSet := map[string]string{"x-partition-id": want.partition, "x-partition-role": want.roleHeader}
	if wantSet["x-partition-role"] == "" {
		wantSet["x-partition-role"] = want.role
	}
	if want.key != "" {
		wantSet["x-partition-key"] = want.key
	}
	got := setHeaders(tb, hm)
	if !equalMaps(got, wantSet) {
		tb.Errorf("set headers %v, want %v", got, wantSet)
	}

	fields := map[string]*structpb.Value{"partition": structpb.NewStringValue(want.partition)}
	if want.role != "" {
		fields["role"] = structpb.NewStringValue(want.role)
	}
	wantMD := &structpb.Struct{Fields: map[string]*structpb.Value{
		"envoy.lb": structpb.NewStructValue(&structpb.Struct{Fields: fields}),
	}}
	if !proto.Equal(resp.GetDynamicMetadata(), wantMD) {
		tb.Errorf("dynamic metadata %v, want %v", resp.GetDynamicMetadata(), wantMD)
	}
}

// setHeaders returns the headers a mutation sets, failing on any that does not use raw_value
// only with OVERWRITE_IF_EXISTS_OR_ADD, or that is set twice.
func setHeaders(tb testing.TB, hm *extprocv3.HeaderMutation) map[string]string {
	tb.Helper()
	got := map[string]string{}
	for _, o := range hm.GetSetHeaders() {
		h := o.GetHeader()
		if h.GetValue() != "" {
			tb.Errorf("header %s sets value %q: Envoy rejects a header that sets value and raw_value", h.GetKey(), h.GetValue())
		}
		if len(h.GetRawValue()) == 0 {
			tb.Errorf("header %s has an empty raw_value", h.GetKey())
		}
		if o.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			tb.Errorf("header %s has append action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetKey(), o.GetAppendAction())
		}
		// The deprecated append field is read on purpose: partroute must never set it.
		if o.GetAppend() != nil || o.GetKeepEmptyValue() { //nolint:staticcheck // checking that the deprecated field stays unset
			tb.Errorf("header %s sets the deprecated append or keep_empty_value", h.GetKey())
		}
		if _, dup := got[h.GetKey()]; dup {
			tb.Errorf("header %s is set twice", h.GetKey())
		}
		got[h.GetKey()] = string(h.GetRawValue())
	}
	return got
}

// checkRejection checks an ImmediateResponse of the error table: status, JSON body with code
// and message only, x-partroute-error, content-type, and retry-after exactly for 503s.
func checkRejection(tb testing.TB, resp *extprocv3.ProcessingResponse, status int, code string) {
	tb.Helper()
	ir, ok := resp.GetResponse().(*extprocv3.ProcessingResponse_ImmediateResponse)
	if !ok {
		tb.Fatalf("response is %T, want an immediate response (%s): %v", resp.GetResponse(), code, resp)
	}
	r := ir.ImmediateResponse
	if got := int(r.GetStatus().GetCode()); got != status {
		tb.Errorf("status %d, want %d", got, status)
	}
	if resp.GetDynamicMetadata() != nil {
		tb.Errorf("a rejection carries dynamic metadata %v", resp.GetDynamicMetadata())
	}
	var outer map[string]json.RawMessage
	if err := json.Unmarshal(r.GetBody(), &outer); err != nil || len(outer) != 1 || outer["error"] == nil {
		tb.Fatalf("body %s is not {\"error\":{...}} (%v)", r.GetBody(), err)
	}
	var inner map[string]any
	if err := json.Unmarshal(outer["error"], &inner); err != nil {
		tb.Fatalf("error object %s: %v", outer["error"], err)
	}
	if len(inner) != 2 || inner["code"] != code {
		tb.Errorf("error object %v, want exactly code %q and a message", inner, code)
	}
	if msg, _ := inner["message"].(string); msg == "" {
		tb.Errorf("error object %v has no message", inner)
	}
	want := map[string]string{"content-type": "application/json", "x-partroute-error": code}
	if status == 503 {
		want["retry-after"] = "1"
	}
	if got := setHeaders(tb, r.GetHeaders()); !equalMaps(got, want) {
		tb.Errorf("rejection headers %v, want %v", got, want)
	}
	if len(r.GetHeaders().GetRemoveHeaders()) != 0 {
		tb.Errorf("rejection removes headers %q", r.GetHeaders().GetRemoveHeaders())
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// discardLogger is a logger at info level that writes nothing, as a production logger costs
// on the request path.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }
