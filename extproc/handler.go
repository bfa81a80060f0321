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
	"google.golang.org/protobuf/types/known/structpb"

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
// NewMetrics(nil) and a discarding logger where they are not wanted.
func NewHandler(d Decider, metrics *Metrics, log *slog.Logger) *Handler {
	return &Handler{decider: d, metrics: metrics, log: log, parts: new(partsCache), hosts: &hostsCache{seed: maphash.MakeSeed()}, now: time.Now}
}

// stream is the state of one HTTP request across its messages.
type stream struct {
	// pending holds the request headers of a service that keys on the body, until the body
	// arrives.
	pending *extprocv3.HttpHeaders
	// upstream reports a routed request's upstream answer to the naming source that resolved
	// it, in the response phase.
	upstream resolver.Feedback
	// srv is the stream itself, for the message that extends Envoy's timeout before a held
	// request's answer.
	srv extprocv3.ExternalProcessor_ProcessServer
}

// Process handles one stream: one HTTP request. Envoy ends a stream by half-closing it or by
// resetting it; both end the loop quietly.
func (h *Handler) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	h.metrics.streams.Inc()
	h.metrics.activeStreams.Inc()
	defer h.metrics.activeStreams.Dec()
	ctx := srv.Context()
	st := stream{srv: srv}
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp := h.handle(ctx, req, &st)
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
func (h *Handler) handle(ctx context.Context, req *extprocv3.ProcessingRequest, st *stream) *extprocv3.ProcessingResponse {
	switch m := req.Request.(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return h.requestHeaders(ctx, m.RequestHeaders, st)
	case *extprocv3.ProcessingRequest_RequestBody:
		return h.requestBody(ctx, m.RequestBody, st)
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		h.responseHeaders(m.ResponseHeaders, st)
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
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

func (h *Handler) requestHeaders(ctx context.Context, m *extprocv3.HttpHeaders, st *stream) *extprocv3.ProcessingResponse {
	start := time.Now()
	sc := new(scratch)
	req := &sc.req
	buildRequest(req, m.GetHeaders())
	if m.GetEndOfStream() {
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
		return sc.response(d, false)
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
func (h *Handler) responseHeaders(m *extprocv3.HttpHeaders, st *stream) {
	if !st.upstream.Wanted() || m.GetHeaders() == nil {
		return
	}
	headers := (*protoHeaders)(&m.GetHeaders().Headers)
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

func (h *Handler) requestBody(ctx context.Context, m *extprocv3.HttpBody, st *stream) *extprocv3.ProcessingResponse {
	start := time.Now()
	if st.pending == nil {
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	}
	sc := new(scratch)
	req := &sc.req
	buildRequest(req, st.pending.GetHeaders())
	st.pending = nil
	req.Body = m.GetBody()
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
		resp = sc.response(d, body)
	default:
		resp = sc.response(d, body)
		parts := h.parts.get(d)
		resp.DynamicMetadata = parts.metadata
		if d.Service.Selection == config.SelectOrdered {
			resp.DynamicMetadata = h.withHostList(sc, d, parts)
		}
		if d.TokenOutcome == readyourwrites.Minted {
			if token := d.Token(); token != "" {
				resp.DynamicMetadata = withToken(resp.DynamicMetadata, d, token)
			} else {
				d.TokenOutcome = readyourwrites.None
			}
		}
		sc.setHeaders(d, parts)
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
// which escapes into the Decider interface, and every message of a routed or passed-through
// response that changes from request to request. A response is otherwise ten small objects;
// allocating them together is what keeps the handler's cost per request near the no-op
// server's (docs/benchmarks.md). A scratch is never reused: gRPC may read a message after Send
// returns (stats handlers do), so each response owns its memory.
type scratch struct {
	req    keying.Request
	resp   extprocv3.ProcessingResponse
	rh     extprocv3.ProcessingResponse_RequestHeaders
	rb     extprocv3.ProcessingResponse_RequestBody
	hr     extprocv3.HeadersResponse
	br     extprocv3.BodyResponse
	common extprocv3.CommonResponse
	hm     extprocv3.HeaderMutation
	remove [3]string
	set    [3]*corev3.HeaderValueOption
	key    corev3.HeaderValueOption
	keyHV  corev3.HeaderValue
	// keyBuf holds the key header's value: 20 bytes fit every int64 in decimal.
	keyBuf [20]byte
	// hostBuf holds the host list of replicas.selection: ordered, three IPv4 replicas and more.
	hostBuf [96]byte
}

// response returns the scratch's response to request headers (or to the request body) with a
// header mutation that removes partroute's headers, so that a client can never choose its own
// partition or role.
func (sc *scratch) response(d resolver.Decision, body bool) *extprocv3.ProcessingResponse {
	names := &d.Config.Headers
	sc.remove = [3]string{names.Partition, names.Role, names.Key}
	sc.hm.RemoveHeaders = sc.remove[:]
	sc.common.HeaderMutation = &sc.hm
	if body {
		sc.br.Response = &sc.common
		sc.rb.RequestBody = &sc.br
		sc.resp.Response = &sc.rb
	} else {
		sc.hr.Response = &sc.common
		sc.rh.RequestHeaders = &sc.hr
		sc.resp.Response = &sc.rh
	}
	return &sc.resp
}

// setHeaders sets partroute's headers from the decision, after the removal. Values go in
// raw_value only: Envoy rejects a header that sets both.
func (sc *scratch) setHeaders(d resolver.Decision, parts *routeParts) {
	set := append(sc.set[:0], parts.partition, parts.roleHdr)
	if kind := d.Service.Scheme().Kind(); kind != keying.Singleton {
		sc.keyHV = corev3.HeaderValue{Key: d.Config.Headers.Key, RawValue: d.Key.AppendText(sc.keyBuf[:0], kind)}
		sc.key.Header = &sc.keyHV
		sc.key.AppendAction = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
		set = append(set, &sc.key)
	}
	sc.hm.SetHeaders = set
}

// withHostList returns the dynamic metadata of a request of a service with
// replicas.selection: ordered: the route's envoy.lb criteria, which the subset load balancer
// falls back to, and the ordered host list that Envoy's override_host policy walks first. The
// list starts at a random secondary, so that reads spread over them as round robin would
// spread them. A partition with no replica to list gets the criteria alone. The list is
// written into the scratch, and the metadata holding it is built once per list and criteria
// (hostsCache), so that ordered selection allocates nothing more per request than the subset
// mode.
func (h *Handler) withHostList(sc *scratch, d resolver.Decision, parts *routeParts) *structpb.Struct {
	list := resolver.AppendHostList(sc.hostBuf[:0], d.Partition, d.Role, rand.Uint32()) //nolint:gosec // spreads reads; nothing depends on it being unpredictable
	if len(list) == 0 {
		return parts.metadata
	}
	return h.hosts.get(list, parts)
}

// hostsSlots is the size of the host list cache: a few lists (one per secondary a read may
// start at, one for writes) for each partition of the hot set.
const hostsSlots = 4096

// hostsCache is a direct-mapped cache, without locks, of the dynamic metadata of ordered
// selection, by host list and envoy.lb criteria, as partsCache is of routeParts: a slot holds
// the last metadata that mapped to it, and a collision rebuilds it. An entry is found by the
// list's text and by the criteria's identity, so that a list of a changed naming view, or the
// same list with other criteria, is never served from it.
type hostsCache struct {
	seed  maphash.Seed
	slots [hostsSlots]atomic.Pointer[hostsEntry]
}

type hostsEntry struct {
	list     string
	criteria *structpb.Value
	metadata *structpb.Struct
}

func (c *hostsCache) get(list []byte, parts *routeParts) *structpb.Struct {
	criteria := parts.metadata.Fields[contract.LBNamespace]
	slot := &c.slots[maphash.Bytes(c.seed, list)%hostsSlots]
	if e := slot.Load(); e != nil && e.criteria == criteria && e.list == string(list) {
		return e.metadata
	}
	e := &hostsEntry{list: string(list), criteria: criteria}
	hosts := &structpb.Struct{Fields: map[string]*structpb.Value{contract.KeyHosts: structpb.NewStringValue(e.list)}}
	e.metadata = &structpb.Struct{Fields: map[string]*structpb.Value{
		contract.LBNamespace:    criteria,
		contract.HostsNamespace: structpb.NewStructValue(hosts),
	}}
	slot.Store(e)
	return e.metadata
}

// routeParts are the parts of a routed response that depend only on the partition, the role and
// the configured header names: the envoy.lb metadata and the partition and role headers. They
// are built once and shared by every response that routes there. Nothing modifies them after
// they are built, and marshalling only reads a message, so any number of streams may send them
// at once.
type routeParts struct {
	id        string
	role      resolver.Role
	names     config.Headers
	metadata  *structpb.Struct
	partition *corev3.HeaderValueOption
	roleHdr   *corev3.HeaderValueOption
}

// partsSlots is the size of the parts cache: enough for the hot partitions of any deployment,
// and at most a few MiB however many partitions the naming view holds.
const partsSlots = 4096

// partsCache is a direct-mapped cache of routeParts, without locks: a slot holds the parts of
// the last (partition, role) that mapped to it, and a collision rebuilds them. Entries are found
// by value (partition id, role, header names), not by pointer, so that a cached entry never
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
	p := &routeParts{
		id:        d.Partition.ID,
		role:      d.Role,
		names:     d.Config.Headers,
		metadata:  lbMetadata(d),
		partition: setHeader(d.Config.Headers.Partition, []byte(d.Partition.ID)),
		roleHdr:   setHeader(d.Config.Headers.Role, []byte(d.Role.String())),
	}
	slot.Store(p)
	return p
}

func setHeader(name string, value []byte) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, RawValue: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// lbMetadata is the request's envoy.lb criteria, role left out for "any" so that the
// [partition] subset selector applies.
func lbMetadata(d resolver.Decision) *structpb.Struct {
	role := ""
	if d.Role != resolver.RoleAny {
		role = d.Role.String()
	}
	return &structpb.Struct{Fields: map[string]*structpb.Value{
		contract.LBNamespace: structpb.NewStructValue(contract.LBFields(d.Partition.ID, role)),
	}}
}

// withToken is the dynamic metadata of a routed write that minted a read-your-writes token:
// the namespaces of base, and in a namespace of its own what the route's
// response_headers_to_add give the client: the whole Set-Cookie value and the bare token, for
// the carriers configured. Only such writes pay for it: the messages in one allocation, the
// two maps, and the cookie's text, of which the token is a part.
func withToken(base *structpb.Struct, d resolver.Decision, minted string) *structpb.Struct {
	r := &d.Config.ReadYourWrites
	m := new(tokenMetadata)
	fields := make(map[string]*structpb.Value, 2)
	token := minted
	if r.Cookie != "" {
		// The text is built on the stack when it fits, which a token of a usual partition id
		// does, and copied once into the string.
		var buf [256]byte
		cookie := string(readyourwrites.SetCookie(buf[:0], r.Cookie, minted, d.Service.ReadYourWrites, r.CookieSecure))
		token = cookie[len(r.Cookie)+1 : len(r.Cookie)+1+len(minted)]
		m.cookieKind.StringValue = cookie
		m.cookie.Kind = &m.cookieKind
		fields[contract.RYWKeyCookie] = &m.cookie
	}
	if r.Header != "" {
		m.tokenKind.StringValue = token
		m.token.Kind = &m.tokenKind
		fields[contract.RYWKeyToken] = &m.token
	}
	m.ns.Fields = fields
	m.nsKind.StructValue = &m.ns
	m.nsValue.Kind = &m.nsKind
	// The namespaces of the answer (envoy.lb, and the host list of ordered selection) stay.
	m.top.Fields = make(map[string]*structpb.Value, len(base.Fields)+1)
	for k, v := range base.Fields {
		m.top.Fields[k] = v
	}
	m.top.Fields[contract.RYWNamespace] = &m.nsValue
	return &m.top
}

// tokenMetadata is every message of withToken's metadata, allocated at once.
type tokenMetadata struct {
	top, ns               structpb.Struct
	nsValue               structpb.Value
	nsKind                structpb.Value_StructValue
	cookie, token         structpb.Value
	cookieKind, tokenKind structpb.Value_StringValue
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
