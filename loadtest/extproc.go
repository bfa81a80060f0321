package loadtest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/partroute/partroute/config"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// ExtProcTarget speaks to an ext_proc server exactly as Envoy's ext_proc filter does: one
// bidirectional stream per HTTP request, a request_headers message, the server's answer, then a
// half-close, reading the stream to its end.
type ExtProcTarget struct {
	conns   []*grpc.ClientConn
	clients []extprocv3.ExternalProcessorClient
	next    atomic.Uint32
	// Authority and PathPrefix shape the requests' :authority and :path, which decide the
	// service they match; the key follows the prefix.
	Authority  string
	PathPrefix string
	// ExpectRouted, when set, counts any answer that does not route as an error ("unrouted"):
	// a partroute that passed the requests through would otherwise look fast. What routes
	// depends on SetBy (checkAnswer).
	ExpectRouted bool
	// SetBy is the headers.setBy of the server's configuration, the shape of the answers
	// ExpectRouted expects; the zero SetBy is the default's.
	SetBy config.SetBy
}

// DialExtProc connects to the ext_proc server at addr over conns HTTP/2 connections (Envoy
// holds one per worker thread and cluster host). Streams of a worker's requests go round the
// connections.
func DialExtProc(addr string, conns int) (*ExtProcTarget, error) {
	t := &ExtProcTarget{Authority: ScenarioAuthority, PathPrefix: ScenarioPathPrefix}
	codec := newAnswerCodec()
	for i := 0; i < max(conns, 1); i++ {
		// Each connection is its own: gRPC would otherwise share one transport between
		// ClientConns to the same address only if told to, and it is not.
		cc, err := grpc.NewClient(addr,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			// Envoy's HTTP/2 client windows are large (a 256 KiB stream window and 1 MiB
			// connection window by default); gRPC's defaults would make small messages wait for
			// window updates that Envoy never needs.
			grpc.WithInitialWindowSize(256<<10),
			grpc.WithInitialConnWindowSize(1<<20),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(codec)),
		)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("dial ext_proc %s: %w", addr, err)
		}
		cc.Connect()
		t.conns = append(t.conns, cc)
		t.clients = append(t.clients, extprocv3.NewExternalProcessorClient(cc))
	}
	return t, nil
}

// Close closes the connections.
func (t *ExtProcTarget) Close() error {
	var errs []error
	for _, cc := range t.conns {
		errs = append(errs, cc.Close())
	}
	return errors.Join(errs...)
}

// NewWorker returns a worker with its own request message, reused from request to request.
func (t *ExtProcTarget) NewWorker() (Worker, error) {
	i := t.next.Add(1) - 1
	w := &extProcWorker{client: t.clients[int(i)%len(t.clients)], expectRouted: t.ExpectRouted, setBy: t.SetBy.OrDefault(), prefix: t.PathPrefix,
		get: []byte("GET"), put: []byte("PUT")}
	w.msg, w.method, w.path, w.requestID = envoyHeaders(t.Authority)
	return w, nil
}

// envoyHeaders builds a request_headers message as Envoy sends it for a browser or SDK
// request: the pseudo-headers as ordinary entries, the client's headers, and the ones Envoy's
// connection manager adds (x-forwarded-proto, x-request-id) before its filters run. Values are
// in raw_value only. It returns the message and the headers that change per request.
func envoyHeaders(authority string) (msg *extprocv3.ProcessingRequest, method, path, requestID *corev3.HeaderValue) {
	method = &corev3.HeaderValue{Key: ":method"}
	path = &corev3.HeaderValue{Key: ":path"}
	requestID = &corev3.HeaderValue{Key: "x-request-id"}
	hs := []*corev3.HeaderValue{
		method,
		path,
		{Key: ":authority", RawValue: []byte(authority)},
		{Key: ":scheme", RawValue: []byte("http")},
		{Key: "user-agent", RawValue: []byte("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36")},
		{Key: "accept", RawValue: []byte("application/json, text/plain, */*")},
		{Key: "accept-encoding", RawValue: []byte("gzip, deflate, br")},
		{Key: "accept-language", RawValue: []byte("en-GB,en;q=0.9")},
		{Key: "content-type", RawValue: []byte("application/json")},
		{Key: "x-forwarded-for", RawValue: []byte("203.0.113.7")},
		{Key: "x-forwarded-proto", RawValue: []byte("http")},
		requestID,
	}
	msg = &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers:     &corev3.HeaderMap{Headers: hs},
		EndOfStream: true,
	}}}
	return msg, method, path, requestID
}

type extProcWorker struct {
	client                  extprocv3.ExternalProcessorClient
	expectRouted            bool
	setBy                   config.SetBy
	prefix                  string
	msg                     *extprocv3.ProcessingRequest
	method, path, requestID *corev3.HeaderValue
	pathBuf, idBuf          []byte
	get, put                []byte
	ans, drain              answer
}

// Do runs one stream. The message is reused: gRPC has marshalled it by the time Send returns,
// and the worker sends one request at a time.
func (w *extProcWorker) Do(ctx context.Context, r *Request) error {
	w.method.RawValue = w.get
	if r.Write {
		w.method.RawValue = w.put
	}
	w.pathBuf = strconv.AppendUint(append(w.pathBuf[:0], w.prefix...), r.Key, 10)
	w.path.RawValue = w.pathBuf
	w.idBuf = appendRequestID(w.idBuf[:0], r.Seq)
	w.requestID.RawValue = w.idBuf

	stream, err := w.client.Process(ctx)
	if err != nil {
		return grpcError(err)
	}
	if err := stream.Send(w.msg); err != nil {
		// A failed Send reports io.EOF; the stream's status is read by Recv.
		_, err = stream.Recv()
		return grpcError(err)
	}
	if err := stream.RecvMsg(&w.ans); err != nil {
		return grpcError(err)
	}
	if err := checkAnswer(&w.ans, w.expectRouted, w.setBy); err != nil {
		return err
	}
	if err := stream.CloseSend(); err != nil {
		return grpcError(err)
	}
	// Envoy half-closes and waits for the server to end the stream; reading to io.EOF is what
	// tells a clean end from a reset.
	for {
		if err := stream.RecvMsg(&w.drain); err != nil {
			if !errors.Is(err, io.EOF) {
				return grpcError(err)
			}
			return nil
		}
	}
}

// checkAnswer accepts the answer to request_headers: a HeadersResponse, routed when that is
// expected. An ImmediateResponse counts as an error under its HTTP status. Whether an answer
// routes depends on its shape, setBy: with extproc it sets the headers by mutation and carries
// the metadata; with envoy and none it carries the metadata alone. The metadata is what tells
// a routed answer from a passthrough in every shape, since a passthrough removes the client's
// headers by mutation too.
func checkAnswer(a *answer, expectRouted bool, setBy config.SetBy) error {
	switch a.kind {
	case fieldRequestHeaders:
		routed := a.metadata
		if setBy.OrDefault() == config.SetByExtProc {
			routed = a.mutation && a.metadata
		}
		if expectRouted && !routed {
			return &RequestError{Code: "unrouted"}
		}
		return nil
	case fieldImmediateResponse:
		return &RequestError{Code: "immediate_" + strconv.Itoa(a.status)}
	}
	return &RequestError{Code: "wrong_kind", Err: fmt.Errorf("answer to request_headers has field %d", a.kind)}
}

// grpcError names a stream failure by its gRPC code.
func grpcError(err error) error {
	if err == nil || errors.Is(err, io.EOF) {
		return &RequestError{Code: "closed_early", Err: err}
	}
	st, _ := status.FromError(err)
	return &RequestError{Code: "grpc_" + st.Code().String(), Err: err}
}

// appendRequestID appends a UUID-shaped id derived from seq, as unique within a run as Envoy's
// random ones and as long.
func appendRequestID(dst []byte, seq uint64) []byte {
	const hex = "0123456789abcdef"
	x := seq*0x9e3779b97f4a7c15 + 0x6a09e667f3bcc909
	for i := 0; i < 32; i++ {
		if i == 8 || i == 12 || i == 16 || i == 20 {
			dst = append(dst, '-')
		}
		dst = append(dst, hex[x>>60])
		x = x<<4 | x>>60
		if i == 15 {
			x ^= seq
		}
	}
	return dst
}
