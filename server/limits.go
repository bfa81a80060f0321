package server

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/loglimit"
)

// The listener label values of the connection series.
const (
	listenerExtProc = "extproc"
	listenerXDS     = "xds"
	listenerAdmin   = "admin"
)

// listenerMetrics are the connection series of every listener, labelled by listener.
type listenerMetrics struct {
	open    *prometheus.GaugeVec
	refused *prometheus.CounterVec
}

func newListenerMetrics(reg prometheus.Registerer) *listenerMetrics {
	m := &listenerMetrics{
		open: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "partroute_listener_connections",
			Help: "Connections open now, by listener (extproc, xds, admin).",
		}, []string{"listener"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_listener_connections_refused_total",
			Help: "Connections closed as soon as they were accepted because the listener had its limit of connections open, by listener.",
		}, []string{"listener"}),
	}
	reg.MustRegister(m.open, m.refused)
	return m
}

// limitListener bounds the connections a listener holds open at once. A connection accepted
// over the bound is closed at once and counted, before a byte of it is read: a client cannot
// make partroute hold more connections, or their buffers and goroutines, than the limit. The
// bound is read at every accept, so that a reload changes it for the next connection; the
// connections already open stay open.
//
// It also keeps its open connections by remote address, so that a stream can find its
// connection from the peer address gRPC gives it, and have it closed.
type limitListener struct {
	net.Listener
	max     func() int
	n       atomic.Int64
	open    prometheus.Gauge
	refused prometheus.Counter

	mu    sync.Mutex
	conns map[string]*limitConn
	// seq numbers the connections of a unix socket (see Accept).
	seq atomic.Uint64
}

// limitConnections wraps l with the bound limit, counted under the listener label name. It wraps
// the TCP listener itself, beneath any TLS, so that a connection over the bound costs no
// handshake.
func limitConnections(l net.Listener, name string, limit func() int, m *listenerMetrics) *limitListener {
	return &limitListener{
		Listener: l, max: limit, open: m.open.WithLabelValues(name), refused: m.refused.WithLabelValues(name),
		conns: make(map[string]*limitConn),
	}
}

// Accept returns the next connection within the bound, closing those over it.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.n.Add(1) > int64(l.max()) {
			l.n.Add(-1)
			// Counted before the close, so that whoever sees the connection closed sees it
			// counted too.
			l.refused.Inc()
			_ = c.Close()
			continue
		}
		l.open.Inc()
		lc := &limitConn{Conn: c, l: l, remote: c.RemoteAddr()}
		if lc.remote.Network() == "unix" {
			// Every client of a unix socket has the same, empty, address: each connection is
			// given one of its own, which gRPC then reports as the stream's peer, so that the
			// connection of a stream can still be found.
			lc.remote = &net.UnixAddr{Net: "unix", Name: "@" + strconv.FormatUint(l.seq.Add(1), 10)}
		}
		lc.addr = lc.remote.String()
		l.mu.Lock()
		l.conns[lc.addr] = lc
		l.mu.Unlock()
		return lc, nil
	}
}

// conn returns the open connection whose remote address is addr, or nil.
func (l *limitListener) conn(addr net.Addr) *limitConn {
	if addr == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns[addr.String()]
}

// limitConn gives its place back to its listener when it is closed, once however many times
// Close is called.
type limitConn struct {
	net.Conn
	l *limitListener
	// remote is the connection's remote address, unique among the listener's connections,
	// and addr its text.
	remote net.Addr
	addr   string
	once   sync.Once
	// resets counts the streams the client reset before sending them a message.
	resets resetWindow
}

// RemoteAddr is the connection's address, unique among its listener's connections.
func (c *limitConn) RemoteAddr() net.Addr { return c.remote }

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.mu.Lock()
		if c.l.conns[c.addr] == c {
			delete(c.l.conns, c.addr)
		}
		c.l.mu.Unlock()
		c.l.n.Add(-1)
		c.l.open.Dec()
	})
	return err
}

// resetWindow counts events in windows of one second, and reports the first time a window
// holds more than the limit.
type resetWindow struct {
	mu    sync.Mutex
	start time.Time
	n     int
	over  bool
}

// resetWindowLength is the window of limits.extproc.maxEmptyResets.
const resetWindowLength = time.Second

// add counts an event at now and returns the count of its window and whether it took the
// window over limit; it reports that once per connection.
func (w *resetWindow) add(now time.Time, limit int) (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.start.IsZero() || now.Sub(w.start) >= resetWindowLength {
		w.start, w.n = now, 0
	}
	w.n++
	if w.n <= limit || w.over {
		return w.n, false
	}
	w.over = true
	return w.n, true
}

// streamGuard bounds what a client can make one ext_proc stream cost, beyond the stream limit
// of its connection. It ends a stream on which the client sent no message for
// limits.extproc.streamIdleTimeout, with DEADLINE_EXCEEDED: without it, a client could open
// streams and never send on them, each holding its buffers and a handler until the connection
// ends. And it closes a connection on which the client resets more than
// limits.extproc.maxEmptyResets streams in a second before sending them a message (rapid
// reset): Envoy opens a stream with its first message, the request headers, and never resets
// one before it, while each such stream costs partroute a handler started and ended and the
// client nothing.
//
// It wraps the ext_proc handler rather than installing gRPC interceptors or a tap handle, so
// that a request pays no allocation for it: a stream borrows its record from a pool, links it
// into one of a few lists while it runs, and stamps it with the time of each message it
// receives. One goroutine sweeps the lists every quarter of the idle timeout, or every second
// when that is shorter. Only a stream that ends abnormally looks up its connection, by the
// peer address gRPC gives it.
type streamGuard struct {
	limits func() *config.ExtProcLimits
	conns  *limitListener
	log    *slog.Logger

	epoch  time.Time
	pool   sync.Pool
	next   atomic.Uint32
	shards [guardShards]guardShard

	idleEnded, emptyResets, floodClosed prometheus.Counter
	floodLog                            loglimit.Limiter
}

// guardShards spreads the streams over lists of their own, so that streams starting and
// ending on many cores at once seldom wait for the same lock.
const guardShards = 16

// guardShard is a list of the running streams, padded to a cache line of its own.
type guardShard struct {
	mu   sync.Mutex
	head *guardedStream
	_    [40]byte
}

func newStreamGuard(limits func() *config.ExtProcLimits, conns *limitListener, reg prometheus.Registerer, log *slog.Logger) *streamGuard {
	g := &streamGuard{
		limits: limits, conns: conns, log: log, epoch: time.Now(),
		idleEnded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_extproc_stream_idle_timeouts_total",
			Help: "ext_proc streams ended because the client sent no message for limits.extproc.streamIdleTimeout.",
		}),
		emptyResets: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_extproc_empty_resets_total",
			Help: "ext_proc streams the client reset before sending them a message.",
		}),
		floodClosed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_extproc_reset_flood_connections_closed_total",
			Help: "ext_proc connections closed because the client reset more than limits.extproc.maxEmptyResets streams in a second before sending them a message.",
		}),
	}
	g.pool.New = func() any { return new(guardedStream) }
	reg.MustRegister(g.idleEnded, g.emptyResets, g.floodClosed)
	return g
}

// now is the time since the guard started, on the monotonic clock.
func (g *streamGuard) now() int64 { return int64(time.Since(g.epoch)) }

// wrap returns h with the guard around each of its streams.
func (g *streamGuard) wrap(h extprocv3.ExternalProcessorServer) extprocv3.ExternalProcessorServer {
	return guardedProcessor{h: h, g: g}
}

type guardedProcessor struct {
	h extprocv3.ExternalProcessorServer
	g *streamGuard
}

func (p guardedProcessor) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	return p.g.serve(p.h, srv)
}

// guardedStream is a running stream's record: the stream itself, whose Recv it stamps, and
// its place in a list. Its fields other than last are guarded by its shard's lock while it is
// linked, and belong to the stream's handler otherwise.
type guardedStream struct {
	extprocv3.ExternalProcessor_ProcessServer
	g          *streamGuard
	prev, next *guardedStream
	// last is the guard's time of the stream's last message, or of its start.
	last atomic.Int64
	// received is whether the stream had a message; the handler's goroutine alone uses it.
	received bool
	// idle is set by the sweeper when it ends the stream.
	idle bool
}

func (s *guardedStream) Recv() (*extprocv3.ProcessingRequest, error) {
	m, err := s.ExternalProcessor_ProcessServer.Recv()
	if err == nil {
		s.received = true
		s.last.Store(s.g.now())
	}
	return m, err
}

func (s *guardedStream) RecvMsg(m any) error {
	err := s.ExternalProcessor_ProcessServer.RecvMsg(m)
	if err == nil {
		s.received = true
		s.last.Store(s.g.now())
	}
	return err
}

// serve runs h on srv inside a record of the guard.
func (g *streamGuard) serve(h extprocv3.ExternalProcessorServer, srv extprocv3.ExternalProcessor_ProcessServer) error {
	if srv.Context().Err() != nil {
		// The client reset the stream before its handler started: there is nothing to
		// answer. In a flood most streams are past when their handler starts, and counting
		// them here rather than after the handler closes the connection sooner.
		g.emptyReset(srv.Context())
		return nil
	}
	s := g.pool.Get().(*guardedStream)
	s.ExternalProcessor_ProcessServer, s.g = srv, g
	s.received, s.idle = false, false
	s.last.Store(g.now())
	sh := &g.shards[g.next.Add(1)%guardShards]
	sh.mu.Lock()
	s.prev, s.next = nil, sh.head
	if sh.head != nil {
		sh.head.prev = s
	}
	sh.head = s
	sh.mu.Unlock()

	err := h.Process(s)

	sh.mu.Lock()
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		sh.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	idle := s.idle
	sh.mu.Unlock()
	received := s.received
	// The record goes back to the pool once the handler has returned, which keeps no stream
	// after it; the sweeper, which may still act on the stream, holds its context, not the
	// record.
	s.ExternalProcessor_ProcessServer, s.prev, s.next = nil, nil, nil
	g.pool.Put(s)

	switch {
	case idle:
		// The client was sent DEADLINE_EXCEEDED when the sweeper ended the stream; the
		// handler's end says so too, for gRPC's own accounting.
		g.idleEnded.Inc()
		return status.Error(codes.DeadlineExceeded, "ext_proc stream idle (limits.extproc.streamIdleTimeout)")
	case !received && srv.Context().Err() != nil:
		g.emptyReset(srv.Context())
	}
	return err
}

// emptyReset counts a stream that ended cancelled without a message against its connection,
// and closes the connection when it is over the limit. A stream of a connection that is
// closing, which ends cancelled too, counts against a connection that is already gone.
func (g *streamGuard) emptyReset(ctx context.Context) {
	g.emptyResets.Inc()
	p, ok := peer.FromContext(ctx)
	if !ok {
		return
	}
	c := g.conns.conn(p.Addr)
	if c == nil {
		return
	}
	limit := g.limits().MaxEmptyResets
	n, over := c.resets.add(time.Now(), limit)
	if !over {
		return
	}
	_ = c.Close()
	g.floodClosed.Inc()
	if suppressed, ok := g.floodLog.Allow(time.Now()); ok {
		g.log.Warn("ext_proc connection closed: its client reset streams before sending them a message",
			"remote", c.addr, "resets", n, "within", resetWindowLength, "limit", limit, "suppressed_since_last", suppressed)
	}
}

// sweep ends idle streams until ctx ends, every quarter of the idle timeout and at least every
// second: a stream is ended between one and one and a quarter timeouts after its last message,
// and a reload that changes the timeout applies to every stream within a second.
func (g *streamGuard) sweep(ctx context.Context) {
	for {
		timeout := g.limits().StreamIdleTimeout
		t := time.NewTimer(min(timeout/4, maxSweepPeriod))
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		g.endIdle(g.limits().StreamIdleTimeout)
	}
}

// maxSweepPeriod is the longest time between two sweeps of the idle streams.
const maxSweepPeriod = time.Second

// endIdle ends the streams whose last message is timeout or more ago.
func (g *streamGuard) endIdle(timeout time.Duration) {
	now := g.now()
	var idle []context.Context
	for i := range g.shards {
		sh := &g.shards[i]
		sh.mu.Lock()
		for s := sh.head; s != nil; s = s.next {
			if !s.idle && now-s.last.Load() >= int64(timeout) {
				s.idle = true
				idle = append(idle, s.Context())
			}
		}
		sh.mu.Unlock()
	}
	if len(idle) == 0 {
		return
	}
	st := status.Newf(codes.DeadlineExceeded, "ext_proc stream idle: no message for %v (limits.extproc.streamIdleTimeout)", timeout)
	for _, ctx := range idle {
		g.end(ctx, st)
	}
}

// transportStatus is what gRPC's own transport stream does when a handler returns: it sends
// the client the stream's status and ends the stream, cancelling its context.
type transportStatus interface {
	WriteStatus(*status.Status) error
}

// end ends the stream of ctx with st, DEADLINE_EXCEEDED. gRPC has no call that ends a stream
// from outside its handler, which waits in Recv; the transport stream that gRPC puts in the
// stream's context ends it with a status, as gRPC does once a handler returns, and cancels the
// stream's context, which returns Recv; the handler then ends as on any cancellation, and
// gRPC's own status after it is not sent again. This costs a stream nothing until it is idle,
// where a context of the guard's for each stream would cost allocations on every request, and
// ends the idle stream alone: an Envoy stream waiting on a slow upstream can be idle, and the
// other requests of its connection go on. A transport stream without that call has its whole
// connection closed instead, so that the bound holds whatever the gRPC version.
func (g *streamGuard) end(ctx context.Context, st *status.Status) {
	if ts, ok := grpc.ServerTransportStreamFromContext(ctx).(transportStatus); ok {
		_ = ts.WriteStatus(st)
		return
	}
	if p, ok := peer.FromContext(ctx); ok {
		if c := g.conns.conn(p.Addr); c != nil {
			_ = c.Close()
		}
	}
}
