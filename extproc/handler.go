package extproc

import (
	"context"
	"errors"
	"hash/maphash"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/internal/loglimit"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/readyourwrites"
	"github.com/partroute/partroute/resolver"
)

// Decider decides where a request goes. *resolver.Resolver is the implementation.
type Decider interface {
	Resolve(ctx context.Context, req *keying.Request) resolver.Decision
	// Await holds a request whose decision has Wait set (a failover wait) and returns the
	// decision to answer with; hold is called once if the request is held, before it waits.
	Await(ctx context.Context, req *keying.Request, d resolver.Decision, hold func()) resolver.Decision
}

// ErrorHeader carries the outcome code on every rejection partroute sends.
const ErrorHeader = "x-partroute-error"

// Handler serves envoy.service.ext_proc.v3.ExternalProcessor.
type Handler struct {
	extprocv3.UnimplementedExternalProcessorServer
	decider Decider
	metrics *Metrics
	log     *slog.Logger
	// parts holds the prebuilt parts of routed responses; see routeParts.
	parts *partsCache
	// hosts holds the prebuilt metadata of ordered selection; see hostsCache.
	hosts *hostsCache
	// causes limits the warnings about naming source failures behind rejections, and unknown
	// those about messages of unknown kind: a client can cause either at will.
	causes, unknown loglimit.Limiter
	// now is the clock of the limiters.
	now func() time.Time
}

// NewHandler returns a handler deciding with d. metrics and log must not be nil; pass
// NewMetrics(nil) and a discarding logger where they are not wanted. The gRPC server must use
// Codec (grpc.ForceServerCodecV2(NewCodec())), which decodes the handler's requests.
func NewHandler(d Decider, metrics *Metrics, log *slog.Logger) *Handler {
	return &Handler{decider: d, metrics: metrics, log: log, parts: new(partsCache), hosts: &hostsCache{seed: maphash.MakeSeed()}, now: time.Now}
}

// stream is the state of one HTTP request across its messages.
type stream struct {
	// own is the stream's message, which each message of the stream is received into unless
	// it is pending.
	own message
	// pending holds the request headers of a service that keys on the body, until the body
	// arrives.
	pending *message
	// upstream reports a routed request's upstream answer to the naming source that resolved
	// it, in the response phase.
	upstream resolver.Feedback
	// srv is the stream itself, for the message that extends Envoy's timeout before a held
	// request's answer.
	srv extprocv3.ExternalProcessor_ProcessServer
	// spare is the scratch the stream was allocated with, for its first decision: a stream of
	// one request then costs one allocation.
	spare *scratch
}

// message returns the message to receive the stream's next message into: the stream's own,
// once the decision that read the one before is done, or a new one while the own holds a
// body-keyed request's headers.
func (st *stream) message() *message {
	if st.pending == &st.own {
		return new(message)
	}
	st.own.reset()
	return &st.own
}

// scratch returns a scratch for one decision's request and response, which it must not share.
func (st *stream) scratch() *scratch {
	if sc := st.spare; sc != nil {
		st.spare = nil
		return sc
	}
	return new(scratch)
}

// Process handles one stream: one HTTP request. Envoy ends a stream by half-closing it or by
// resetting it; both end the loop quietly.
func (h *Handler) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	h.metrics.streams.Inc()
	h.metrics.activeStreams.Inc()
	defer h.metrics.activeStreams.Dec()
	ctx := srv.Context()
	first := new(streamScratch)
	st := &first.st
	st.srv, st.spare = srv, &first.sc
	for {
		// Messages are decoded by the codec into a message (message.go), not into a
		// ProcessingRequest: the server must use Codec.
		m := st.message()
		if err := srv.RecvMsg(m); err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp := h.handle(ctx, m, st)
		if resp == nil {
			continue
		}
		if err := srv.Send(resp); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
}

// handle answers one message with the response of its kind.
func (h *Handler) handle(ctx context.Context, m *message, st *stream) *extprocv3.ProcessingResponse {
	switch m.kind {
	case kindRequestHeaders:
		return h.requestHeaders(ctx, m, st)
	case kindRequestBody:
		return h.requestBody(ctx, m, st)
	case kindResponseHeaders:
		h.responseHeaders(m, st)
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	case kindResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case kindRequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case kindResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	// A message kind this version does not know has no matching response to give (a response
	// of no kind is no answer either); Envoy never sends one without being configured to, so it
	// is logged and left unanswered. Any client can send them by the thousand: the warning is
	// rate-limited.
	if suppressed, ok := h.unknown.Allow(h.now()); ok {
		h.log.Warn("ext_proc message of unknown kind ignored", "suppressed_since_last", suppressed)
	}
	return nil
}

func (h *Handler) requestHeaders(ctx context.Context, m *message, st *stream) *extprocv3.ProcessingResponse {
	start := time.Now()
	sc := st.scratch()
	req := &sc.req
	buildRequest(req, &m.headers)
	if m.endOfStream {
		// A request without a body: a body-keyed service reads an empty one rather than
		// waiting for a message that never comes.
		req.Body = []byte{}
	}
	d := h.decider.Resolve(ctx, req)
	if d.Wait > 0 {
		d = h.hold(ctx, req, d, st)
		start = time.Now()
	}
	if d.NeedBody {
		st.pending = m
		// The client's partroute headers go now already: if Envoy were set up not to send
		// the body, the request would otherwise reach the upstream with the headers the
		// client chose.
		return sc.removal(d, false)
	}
	st.remember(d)
	return h.respond(d, start, false, sc)
}

// hold has the decider hold a request for a failover. Before the request waits, Envoy is sent
// a response of override_message_timeout alone, which restarts its message timer with room
// for the wait and the answer after it (Envoy takes one per processing phase, up to the
// filter's max_message_timeout). The decision time measured afterwards leaves the wait out:
// partroute_failover_hold_duration_seconds has it.
func (h *Handler) hold(ctx context.Context, req *keying.Request, d resolver.Decision, st *stream) resolver.Decision {
	return h.decider.Await(ctx, req, d, func() {
		// A stream that cannot take the message is gone, and its context ends the wait.
		_ = st.srv.Send(extendTimeout(d.Wait))
	})
}

// extendTimeout is the response that gives Envoy's message timer room for a failover wait.
func extendTimeout(wait time.Duration) *extprocv3.ProcessingResponse {
	return &extprocv3.ProcessingResponse{OverrideMessageTimeout: durationpb.New(contract.HeldMessageTimeout(wait))}
}

// remember keeps, for the response phase, how to report the upstream's answer to a routed
// request to the naming source that resolved it.
func (st *stream) remember(d resolver.Decision) {
	if d.Err == nil && d.Partition != nil {
		st.upstream = d.Upstream
	}
}

// responseHeaders passes the upstream status of a routed request to the naming source that
// resolved it, when that source wants it. Envoy sends response headers only when the filter is
// configured to (envoy-bootstrap -response-headers), since every phase sent costs a round
// trip. The response itself is never changed.
func (h *Handler) responseHeaders(m *message, st *stream) {
	if !st.upstream.Wanted() {
		return
	}
	headers := &m.headers
	v, ok := keying.Get(headers, ":status")
	if !ok {
		return
	}
	httpStatus, err := strconv.Atoi(v)
	if err != nil {
		return
	}
	st.upstream.Report(httpStatus, headers)
}

func (h *Handler) requestBody(ctx context.Context, m *message, st *stream) *extprocv3.ProcessingResponse {
	start := time.Now()
	if st.pending == nil {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	}
	sc := st.scratch()
	req := &sc.req
	buildRequest(req, &st.pending.headers)
	st.pending = nil
	req.Body = m.body
	if req.Body == nil {
		req.Body = []byte{}
	}
	d := h.decider.Resolve(ctx, req)
	if d.Wait > 0 {
		d = h.hold(ctx, req, d, st)
		start = time.Now()
	}
	st.remember(d)
	return h.respond(d, start, true, sc)
}

// respond turns a decision into the response to the message that asked for it: the request
// headers, or the request body of a body-keyed service. The response is built in sc.
func (h *Handler) respond(d resolver.Decision, start time.Time, body bool, sc *scratch) *extprocv3.ProcessingResponse {
	var resp *extprocv3.ProcessingResponse
	switch {
	case d.Err != nil:
		resp = rejection(d.Err)
		h.logRejection(d)
	case d.Service == nil:
		// An unmatched request passes through, but never with partition headers a client
		// chose: an upstream that trusts them must be able to.
		resp = sc.removal(d, body)
	default:
		resp = h.routed(d, body, sc)
	}
	h.metrics.decision.Observe(time.Since(start).Seconds())
	switch {
	case d.Service != nil:
		code := resolver.OK
		if d.Err != nil {
			code = d.Err.Code
		}
		h.metrics.countRequest(d.Service.Name, code)
		if d.TokenOutcome != readyourwrites.None {
			h.metrics.countToken(d.Service.Name, d.TokenOutcome)
		}
	case d.Err != nil:
		h.metrics.countRequest(unmatchedService, d.Err.Code)
	default:
		h.metrics.countPassthrough()
	}
	return resp
}

// scratch is everything one request needs on the heap, in one allocation: the keying request,
// which escapes into the Decider interface, the response, and the buffers its encoded answer is
// written in; the first scratch of a stream is allocated with the stream's state
// (streamScratch). A scratch is never reused: gRPC may read a message after Send returns (stats
// handlers do), so each response owns its memory.
type scratch struct {
	req  keying.Request
	resp extprocv3.ProcessingResponse
	// keyBuf holds the key's text: 20 bytes fit every int64 in decimal.
	keyBuf [20]byte
	// answerBuf holds the encoded answer: partroute's shape with the default header names and
	// a partition id of a couple of dozen bytes fits; a longer one grows out of it.
	answerBuf [256]byte
}

// streamScratch is a stream's state and its first scratch, in one allocation: a stream of one
// request then allocates once, and a later scratch (the body of a body-keyed request) does not
// carry a stream's room for a message.
type streamScratch struct {
	st stream
	sc scratch
}

// removal returns the scratch's response to request headers (or to the request body) with a
// header mutation that removes partroute's headers, so that a client can never choose its own
// partition or role.
func (sc *scratch) removal(d resolver.Decision, body bool) *extprocv3.ProcessingResponse {
	return encodedResponse(&sc.resp, appendRemoval(sc.answerBuf[:0], &d.Config.Headers, body))
}

// routed is the answer that routes a request: its partition and role in the envoy.lb metadata,
// and partroute's headers as headers.setBy has them sent, encoded from the parts cached for
// the partition and role with the key, the host list and the read-your-writes token added.
func (h *Handler) routed(d resolver.Decision, body bool, sc *scratch) *extprocv3.ProcessingResponse {
	a := answer{parts: &h.parts.get(d).answer, body: body, keyHeader: d.Config.Headers.Key}
	if kind := d.Service.Scheme().Kind(); kind != keying.Singleton {
		a.key = d.Key.AppendText(sc.keyBuf[:0], kind)
	}
	if d.Service.Selection == config.SelectOrdered {
		a.hosts = h.hostList(sc, d)
	}
	if d.TokenOutcome == readyourwrites.Minted {
		if token := d.Token(); token != "" {
			a.ryw = tokenNamespace(d, token)
		} else {
			d.TokenOutcome = readyourwrites.None
		}
	}
	return encodedResponse(&sc.resp, a.appendTo(sc.answerBuf[:0]))
}

// hostList returns the encoded partroute.hosts namespace of a request of a service with
// replicas.selection: ordered: the ordered host list that Envoy's override_host policy walks
// before it falls back to the subset of the envoy.lb criteria. The list starts at a random
// secondary, so that reads spread over them as round robin would spread them. A partition with
// no replica to list gets none. The list is written into the scratch, and its encoding is
// built once per list (hostsCache), so that ordered selection allocates nothing more per
// request than the subset mode.
func (h *Handler) hostList(sc *scratch, d resolver.Decision) []byte {
	// The list is written where the answer will be: it is done with, found in the cache or
	// copied into it, before the answer is written.
	list := resolver.AppendHostList(sc.answerBuf[:0], d.Partition, d.Role, rand.Uint32()) //nolint:gosec // spreads reads; nothing depends on it being unpredictable
	if len(list) == 0 {
		return nil
	}
	return h.hosts.get(list)
}

// hostsSlots is the size of the host list cache: a few lists (one per secondary a read may
// start at, one for writes) for each partition of the hot set.
const hostsSlots = 4096

// hostsCache is a direct-mapped cache, without locks, of the encoded partroute.hosts namespace
// of ordered selection, by host list, as partsCache is of routeParts: a slot holds the last
// list that mapped to it, and a collision rebuilds it. An entry is found by the list's text,
// so that a list of a changed naming view is never served from it.
type hostsCache struct {
	seed  maphash.Seed
	slots [hostsSlots]atomic.Pointer[hostsEntry]
}

type hostsEntry struct {
	list    string
	encoded []byte
}

func (c *hostsCache) get(list []byte) []byte {
	slot := &c.slots[maphash.Bytes(c.seed, list)%hostsSlots]
	if e := slot.Load(); e != nil && e.list == string(list) {
		return e.encoded
	}
	e := &hostsEntry{list: string(list)}
	e.encoded = appendNamespace(nil, contract.HostsNamespace, [2]string{contract.KeyHosts}, [2][]byte{list})
	slot.Store(e)
	return e.encoded
}

// routeParts are the parts of a routed answer that depend only on the partition, the role and
// the configuration's headers block, encoded. They are built once and shared by every answer
// that routes there, and nothing modifies them after they are built, so any number of streams
// may read them at once.
type routeParts struct {
	id     string
	role   resolver.Role
	names  config.Headers
	answer answerParts
}

// partsSlots is the size of the parts cache: enough for the hot partitions of any deployment,
// and at most a few MiB however many partitions the naming view holds.
const partsSlots = 4096

// partsCache is a direct-mapped cache of routeParts, without locks: a slot holds the parts of
// the last (partition, role) that mapped to it, and a collision rebuilds them. Entries are found
// by value (partition id, role, headers block), not by pointer, so that a cached entry never
// keeps a replaced naming view or configuration alive, and a reload needs no invalidation.
type partsCache struct {
	slots [partsSlots]atomic.Pointer[routeParts]
}

func (c *partsCache) get(d resolver.Decision) *routeParts {
	i := (uint(d.Service.Index)*0x9e3779b1 + uint(d.Partition.Index)*4 + uint(d.Role)) % partsSlots
	slot := &c.slots[i]
	if p := slot.Load(); p != nil && p.id == d.Partition.ID && p.role == d.Role && p.names == d.Config.Headers {
		return p
	}
	p := &routeParts{id: d.Partition.ID, role: d.Role, names: d.Config.Headers, answer: newAnswerParts(d)}
	slot.Store(p)
	return p
}

func setHeader(name string, value []byte) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, RawValue: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// tokenNamespace is the encoded partroute.ryw namespace of a routed write that minted a
// read-your-writes token: what the route's response_headers_to_add give the client, the whole
// Set-Cookie value and the bare token, for the carriers configured. Only such writes pay for it.
func tokenNamespace(d resolver.Decision, minted string) []byte {
	r := &d.Config.ReadYourWrites
	var values [2][]byte
	token := []byte(minted)
	if r.Cookie != "" {
		// The cookie's text is built on the stack when it fits, which a token of a usual
		// partition id does; the token is a part of it.
		var buf [256]byte
		cookie := readyourwrites.SetCookie(buf[:0], r.Cookie, minted, d.Service.ReadYourWrites, r.CookieSecure)
		values[0] = cookie
		token = cookie[len(r.Cookie)+1 : len(r.Cookie)+1+len(minted)]
	}
	if r.Header != "" {
		values[1] = token
	}
	return appendNamespace(make([]byte, 0, 64+len(values[0])+len(values[1])), contract.RYWNamespace, [2]string{contract.RYWKeyCookie, contract.RYWKeyToken}, values)
}

// rejection answers the request itself with the status and JSON body of the error table.
func rejection(e *resolver.Error) *extprocv3.ProcessingResponse {
	set := []*corev3.HeaderValueOption{
		setHeader("content-type", []byte("application/json")),
		setHeader(ErrorHeader, []byte(e.Code.String())),
	}
	if e.Code.RetryAfter() {
		set = append(set, setHeader("retry-after", []byte(resolver.RetryAfterSeconds)))
	}
	return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ImmediateResponse{ImmediateResponse: &extprocv3.ImmediateResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode(e.Code.Status())}, //nolint:gosec // an HTTP status of the error table, three digits
		Headers: &extprocv3.HeaderMutation{SetHeaders: set},
		Body:    resolver.ErrorBody(e),
		Details: "partroute_" + e.Code.String(),
	}}}
}

// logRejection logs each rejected request once, at debug level, with its code. The check
// first keeps the attributes from being built when debug logging is off. A rejection caused by
// the naming source is also a warning, at most one per loglimit.Interval: an outage rejects
// every request, the client was told only that naming is unavailable, and the operator needs
// the source's own error once, not thousands of times.
func (h *Handler) logRejection(d resolver.Decision) {
	service := unmatchedService
	if d.Service != nil {
		service = d.Service.Name
	}
	if d.Err.Cause != nil {
		if suppressed, ok := h.causes.Allow(h.now()); ok {
			h.log.Warn("request rejected: the naming source failed", "service", service, "code", d.Err.Code.String(),
				"cause", d.Err.Cause.Error(), "suppressed_since_last", suppressed)
		}
	}
	if !h.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	h.log.Debug("request rejected", "service", service, "code", d.Err.Code.String(), "message", d.Err.Message)
}
