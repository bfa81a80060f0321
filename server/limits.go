package server

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
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
type limitListener struct {
	net.Listener
	max     func() int
	n       atomic.Int64
	open    prometheus.Gauge
	refused prometheus.Counter
}

// limitConnections wraps l with the bound limit, counted under the listener label name. It wraps
// the TCP listener itself, beneath any TLS, so that a connection over the bound costs no
// handshake.
func limitConnections(l net.Listener, name string, limit func() int, m *listenerMetrics) *limitListener {
	return &limitListener{Listener: l, max: limit, open: m.open.WithLabelValues(name), refused: m.refused.WithLabelValues(name)}
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
			_ = c.Close()
			l.refused.Inc()
			continue
		}
		l.open.Inc()
		return &limitConn{Conn: c, l: l}, nil
	}
}

// limitConn gives its place back to its listener when it is closed, once however many times
// Close is called.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.n.Add(-1)
		c.l.open.Dec()
	})
	return err
}

// idleStreams ends a stream of one method on which the client sent no message for the idle
// timeout, with DEADLINE_EXCEEDED: without it, a client could open streams and never send on
// them, each holding its buffers and a goroutine until the connection ends.
//
// gRPC gives a server no way to end a stream from outside its handler, and the handler waits
// in Recv. The tap handle, which gRPC runs before the stream starts, gives each stream a
// context that the idle timer can end; gRPC's own Recv waits on that context, so it returns,
// gRPC sends the client the status of the context's error, and the handler ends as on any
// cancellation. The ext_proc handler is left to the protocol.
type idleStreams struct {
	method  string
	timeout func() time.Duration
	ended   prometheus.Counter
}

func newIdleStreams(method string, timeout func() time.Duration, reg prometheus.Registerer) *idleStreams {
	s := &idleStreams{method: method, timeout: timeout, ended: prometheus.NewCounter(prometheus.CounterOpts{
		Name: "partroute_extproc_stream_idle_timeouts_total",
		Help: "ext_proc streams ended because the client sent no message for limits.extproc.streamIdleTimeout.",
	})}
	reg.MustRegister(s.ended)
	return s
}

// options are the server options that install the idle timeout.
func (s *idleStreams) options() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.InTapHandle(s.tap), grpc.ChainStreamInterceptor(s.intercept)}
}

// errStreamIdle is the cause an idle stream's context is cancelled with.
var errStreamIdle = errors.New("no message for limits.extproc.streamIdleTimeout")

// idleContext is a stream's context, which its idle timer can end. Ended by the timer, its
// error is context.DeadlineExceeded, which gRPC sends the client as DEADLINE_EXCEEDED; ended
// by gRPC (the client reset the stream, the connection closed), it is the parent's.
type idleContext struct {
	context.Context
	cancel context.CancelCauseFunc
}

// idleContextKey finds a stream's idleContext among the values of the contexts gRPC derives
// from it.
type idleContextKey struct{}

func (c *idleContext) Value(key any) any {
	if key == (idleContextKey{}) {
		return c
	}
	return c.Context.Value(key)
}

func (c *idleContext) Err() error {
	err := c.Context.Err()
	if err != nil && c.idle() {
		return context.DeadlineExceeded
	}
	return err
}

// idle reports whether the idle timer ended the context.
func (c *idleContext) idle() bool { return errors.Is(context.Cause(c.Context), errStreamIdle) }

func (s *idleStreams) tap(ctx context.Context, info *tap.Info) (context.Context, error) {
	if info.FullMethodName != s.method {
		return ctx, nil
	}
	inner, cancel := context.WithCancelCause(ctx)
	return &idleContext{Context: inner, cancel: cancel}, nil
}

func (s *idleStreams) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ic, ok := ss.Context().Value(idleContextKey{}).(*idleContext)
	if info.FullMethod != s.method || !ok {
		return handler(srv, ss)
	}
	d := s.timeout()
	w := &idleStream{ServerStream: ss, timeout: d, timer: time.AfterFunc(d, func() { ic.cancel(errStreamIdle) })}
	defer w.timer.Stop()
	err := handler(srv, w)
	if ic.idle() {
		// gRPC sent the client DEADLINE_EXCEEDED when Recv returned; the handler's end says
		// so too, for gRPC's own accounting.
		s.ended.Inc()
		return status.Errorf(codes.DeadlineExceeded, "ext_proc stream idle: no message for %v (limits.extproc.streamIdleTimeout)", d)
	}
	return err
}

// idleStream restarts its idle timer at every message received.
type idleStream struct {
	grpc.ServerStream
	timeout time.Duration
	timer   *time.Timer
}

func (w *idleStream) RecvMsg(m any) error {
	err := w.ServerStream.RecvMsg(m)
	if err == nil {
		w.timer.Reset(w.timeout)
	}
	return err
}
