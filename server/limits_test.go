package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
)

// limitedServer is partroute on the example files with limits, a limits section in YAML, and
// the registry its metrics are in.
type limitedServer struct {
	*testServer
	reg *prometheus.Registry
}

func startLimited(t testing.TB, limits string) *limitedServer {
	t.Helper()
	return startLimitedIn(t, testkit.CopyExamples(t), limits)
}

// startLimitedIn is startLimited on the files in dir.
func startLimitedIn(t testing.TB, dir, limits string) *limitedServer {
	t.Helper()
	if limits != "" {
		path := filepath.Join(dir, "partroute.yaml")
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, append(data, []byte("\nlimits:\n"+limits)...), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var reg *prometheus.Registry
	s := startServerIn(t, dir, func(o *Options) { reg = o.Registry })
	return &limitedServer{testServer: s, reg: reg}
}

// metric returns the value of the series name with the given label pairs, or -1 when there is
// none.
func (s *limitedServer) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := s.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			matches := true
			for i := 0; i+1 < len(labels); i += 2 {
				matches = matches && have[labels[i]] == labels[i+1]
			}
			if !matches {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// extProcClient connects to partroute's ext_proc listener over a connection of its own, closed
// when the test ends or when the caller closes it.
func extProcClient(t testing.TB, addr string) (extprocv3.ExternalProcessorClient, *grpc.ClientConn) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return extprocv3.NewExternalProcessorClient(conn), conn
}

// usersHeaders is the request_headers message of a routable request of the example
// configuration.
func usersHeaders() *extprocv3.ProcessingRequest {
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
		Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: ":method", RawValue: []byte("GET")},
			{Key: ":path", RawValue: []byte("/api/users/12")},
			{Key: ":authority", RawValue: []byte("api.example.com")},
		}},
		EndOfStream: true,
	}}}
}

// route asks partroute over client to route one request, as Envoy does: one stream, one
// message, one answer, a half-close. It returns the error of the first step that failed.
func route(ctx context.Context, client extprocv3.ExternalProcessorClient) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		return err
	}
	if err := stream.Send(usersHeaders()); err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if resp.GetRequestHeaders() == nil {
		return fmt.Errorf("answer %v, want a request_headers answer", resp)
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return fmt.Errorf("end of stream: %w, want EOF", err)
	}
	return nil
}

func mustRoute(t testing.TB, client extprocv3.ExternalProcessorClient, what string) {
	t.Helper()
	if err := route(context.Background(), client); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// closedAtOnce reports whether the server closes conn without a byte, within the wait.
func closedAtOnce(t *testing.T, conn net.Conn, wait time.Duration) bool {
	t.Helper()
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	n, err := conn.Read(make([]byte, 1))
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return false
	}
	return n == 0 && err != nil
}

// Over limits.extproc.maxConnections, a new connection is closed as soon as it is accepted and
// counted; the connections open keep being served, and a place freed is taken by the next one.
func TestExtProcConnectionLimit(t *testing.T) {
	s := startLimited(t, "  extproc: {maxConnections: 2}\n")
	a, _ := extProcClient(t, s.extproc)
	b, connB := extProcClient(t, s.extproc)
	mustRoute(t, a, "first connection")
	mustRoute(t, b, "second connection")
	if got := s.metric(t, "partroute_listener_connections", "listener", "extproc"); got != 2 {
		t.Errorf("partroute_listener_connections{listener=extproc} = %v, want 2", got)
	}

	over, err := net.Dial("tcp", s.extproc)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if !closedAtOnce(t, over, 5*time.Second) {
		t.Fatal("a third connection with maxConnections 2 was kept open")
	}
	// A gRPC client over the limit learns it at once, as UNAVAILABLE.
	refused, refusedConn := extProcClient(t, s.extproc)
	if err := route(context.Background(), refused); status.Code(err) != codes.Unavailable {
		t.Errorf("a gRPC client over the limit: %v, want UNAVAILABLE", err)
	}
	refusedConn.Close()
	if got := s.metric(t, "partroute_listener_connections_refused_total", "listener", "extproc"); got < 2 {
		t.Errorf("partroute_listener_connections_refused_total{listener=extproc} = %v, want at least 2", got)
	}
	mustRoute(t, a, "the first connection while others are refused")
	mustRoute(t, b, "the second connection while others are refused")

	// A connection that ends frees its place for the next one.
	connB.Close()
	testkit.WaitFor(t, "the closed connection to free its place", 10*time.Second, func() bool {
		return s.metric(t, "partroute_listener_connections", "listener", "extproc") == 1
	})
	c, _ := extProcClient(t, s.extproc)
	mustRoute(t, c, "a new connection once a place is free")
}

// A reload that changes limits.extproc.maxConnections applies to the next connection, without
// a restart; the connections open stay open.
func TestExtProcConnectionLimitFollowsAReload(t *testing.T) {
	s := startLimited(t, "  extproc: {maxConnections: 1}\n")
	a, _ := extProcClient(t, s.extproc)
	mustRoute(t, a, "the first connection")
	over, err := net.Dial("tcp", s.extproc)
	if err != nil {
		t.Fatal(err)
	}
	if !closedAtOnce(t, over, 5*time.Second) {
		t.Fatal("a second connection with maxConnections 1 was kept open")
	}
	over.Close()
	editFile(t, filepath.Join(s.dir, "partroute.yaml"), "maxConnections: 1", "maxConnections: 2")
	s.reload <- struct{}{}
	testkit.WaitFor(t, "the reload to be served", 10*time.Second, func() bool {
		return strings.Count(s.logs.String(), "naming view served") >= 2
	})
	b, _ := extProcClient(t, s.extproc)
	mustRoute(t, b, "a second connection after the reload raised maxConnections to 2")
	mustRoute(t, a, "the first connection after the reload")
	if strings.Contains(s.logs.String(), "takes effect on restart") {
		t.Errorf("the reload warned of a restart-only setting:\n%s", s.logs)
	}
}

// The xDS listener announces limits.xds.maxConcurrentStreams and closes connections over
// limits.xds.maxConnections at once.
func TestXDSLimits(t *testing.T) {
	dir := testkit.CopyExamples(t)
	editFile(t, filepath.Join(dir, "partroute.yaml"), "listen:\n", "listen:\n  xds: 127.0.0.1:0\n")
	s := startLimitedIn(t, dir, "  xds: {maxConnections: 1, maxConcurrentStreams: 3}\n")
	m := regexp.MustCompile(`"xds serving" address=(127\.0\.0\.1:\d+)`).FindStringSubmatch(s.logs.String())
	if m == nil {
		t.Fatalf("no xds address in the log:\n%s", s.logs)
	}
	c := dialH2(t, m[1])
	select {
	case all := <-c.settings:
		if !slices.Contains(all, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 3}) {
			t.Errorf("xds SETTINGS %v, want MAX_CONCURRENT_STREAMS 3", all)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no SETTINGS from the xds server")
	}
	over, err := net.Dial("tcp", m[1])
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if !closedAtOnce(t, over, 5*time.Second) {
		t.Error("a second xds connection with maxConnections 1 was kept open")
	}
	if got := s.metric(t, "partroute_listener_connections_refused_total", "listener", "xds"); got != 1 {
		t.Errorf("partroute_listener_connections_refused_total{listener=xds} = %v, want 1", got)
	}
}

// h2Conn is a raw HTTP/2 client connection, to do what a gRPC client never does: open more
// streams than the server allows, or open and reset them as fast as it can write.
type h2Conn struct {
	conn net.Conn
	mu   sync.Mutex // serialises writes
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32
	// What the server sent: its SETTINGS, and how many streams it refused.
	settings chan []http2.Setting
	refused  atomic.Int64
	goAway   atomic.Bool
	done     chan struct{}
}

func dialH2(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c, err := newH2Conn(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.close)
	return c
}

// newH2Conn connects to addr and starts HTTP/2 on the connection.
func newH2Conn(addr string) (*h2Conn, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	c := &h2Conn{conn: conn, fr: http2.NewFramer(conn, conn), next: 1, settings: make(chan []http2.Setting, 1), done: make(chan struct{})}
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.fr.WriteSettings(); err != nil {
		conn.Close()
		return nil, err
	}
	go c.read()
	return c, nil
}

// close closes the connection and waits for its reader to end.
func (c *h2Conn) close() {
	c.conn.Close()
	<-c.done
}

// read reads every frame the server sends, so that it never waits on a client that does not
// read, and answers what HTTP/2 requires an answer to.
func (c *h2Conn) read() {
	defer close(c.done)
	first := true
	for {
		f, err := c.fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if f.IsAck() {
				continue
			}
			if first {
				var all []http2.Setting
				_ = f.ForeachSetting(func(s http2.Setting) error { all = append(all, s); return nil })
				c.settings <- all
				first = false
			}
			_ = c.write(func() error { return c.fr.WriteSettingsAck() })
		case *http2.PingFrame:
			if !f.IsAck() {
				_ = c.write(func() error { return c.fr.WritePing(true, f.Data) })
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream {
				c.refused.Add(1)
			}
		case *http2.GoAwayFrame:
			c.goAway.Store(true)
		}
	}
}

func (c *h2Conn) write(f func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return f()
}

// open starts an ext_proc stream and returns its id; the stream sends nothing more.
func (c *h2Conn) open() (uint32, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	id := c.next
	c.next += 2
	c.hbuf.Reset()
	for _, h := range [][2]string{
		{":method", "POST"}, {":scheme", "http"}, {":path", extprocv3.ExternalProcessor_Process_FullMethodName},
		{":authority", "partroute"}, {"content-type", "application/grpc"}, {"te", "trailers"},
	} {
		_ = c.enc.WriteField(hpack.HeaderField{Name: h[0], Value: h[1]})
	}
	return id, c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.hbuf.Bytes(), EndHeaders: true})
}

// openAndReset starts an ext_proc stream and resets it at once, as a rapid-reset attack does.
func (c *h2Conn) openAndReset() error {
	id, err := c.open()
	if err != nil {
		return err
	}
	return c.write(func() error { return c.fr.WriteRSTStream(id, http2.ErrCodeCancel) })
}

// limits.extproc.maxConcurrentStreams is announced in the SETTINGS of every connection and
// enforced: a client that opens more streams than that on one connection has the ones over it
// refused (RST_STREAM REFUSED_STREAM), and never more than that many handlers run for it,
// however many streams it opens and leaves stalled. Other connections are served meanwhile.
func TestExtProcMaxConcurrentStreams(t *testing.T) {
	const limit, opened = 10, 500
	s := startLimited(t, fmt.Sprintf("  extproc: {maxConcurrentStreams: %d}\n", limit))
	c := dialH2(t, s.extproc)
	select {
	case all := <-c.settings:
		if !slices.Contains(all, http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: limit}) {
			t.Errorf("server SETTINGS %v, want MAX_CONCURRENT_STREAMS %d", all, limit)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no SETTINGS from the server")
	}
	for range opened {
		if _, err := c.open(); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "the streams over the limit to be refused", 10*time.Second, func() bool { return c.refused.Load() == opened-limit })
	if got := s.metric(t, "partroute_extproc_active_streams"); got != limit {
		t.Errorf("partroute_extproc_active_streams = %v with %d streams opened, want the limit, %d", got, opened, limit)
	}
	client, _ := extProcClient(t, s.extproc)
	mustRoute(t, client, "a request on another connection while one holds its limit of stalled streams")
}

// A stream on which the client sends no message for limits.extproc.streamIdleTimeout is ended
// alone with DEADLINE_EXCEEDED and counted; a stream whose messages come more often than that
// on the same connection is not, however long it lasts; and the connection goes on serving new
// streams. The idle streams, ended without a message, are not taken for a reset flood, even
// with maxEmptyResets below their number.
func TestExtProcStreamIdleTimeout(t *testing.T) {
	const timeout, idleStreams = time.Second, 3
	s := startLimited(t, "  extproc: {streamIdleTimeout: 1s, maxEmptyResets: 1}\n")
	client, _ := extProcClient(t, s.extproc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	start := time.Now()
	ended := make(chan error, idleStreams)
	for range idleStreams {
		idle, err := client.Process(ctx)
		if err != nil {
			t.Fatal(err)
		}
		go func() { _, err := idle.Recv(); ended <- err }()
	}

	// A stream that sends a message every half timeout for three timeouts stays open.
	busy, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	msgs := []*extprocv3.ProcessingRequest{usersHeaders()}
	for range 5 {
		msgs = append(msgs, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}})
	}
	// The client's pace is what the test is about: a message every half timeout.
	pace := time.NewTicker(timeout / 2)
	defer pace.Stop()
	for i, m := range msgs {
		if i > 0 {
			<-pace.C
		}
		if err := busy.Send(m); err != nil {
			t.Fatalf("message %d of a busy stream: %v", i, err)
		}
		if _, err := busy.Recv(); err != nil {
			t.Fatalf("answer %d of a busy stream, %v after it opened: %v", i, time.Since(start).Round(time.Millisecond), err)
		}
	}
	if err := busy.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := busy.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("end of the busy stream: %v, want EOF", err)
	}

	for range idleStreams {
		select {
		case err := <-ended:
			elapsed := time.Since(start)
			st := status.Convert(err)
			if st.Code() != codes.DeadlineExceeded || !strings.Contains(st.Message(), "limits.extproc.streamIdleTimeout") {
				t.Errorf("an idle stream ended with %v, want DEADLINE_EXCEEDED naming limits.extproc.streamIdleTimeout", err)
			}
			if elapsed < timeout {
				t.Errorf("an idle stream ended after %v, before the timeout of %v", elapsed, timeout)
			}
		case <-ctx.Done():
			t.Fatal("a stream idle for far longer than limits.extproc.streamIdleTimeout is still open")
		}
	}
	testkit.WaitFor(t, "the idle streams to be counted", 10*time.Second, func() bool {
		return s.metric(t, "partroute_extproc_stream_idle_timeouts_total") == idleStreams
	})
	mustRoute(t, client, "a new stream on the connection of the idle ones")
	if got := s.metric(t, "partroute_extproc_reset_flood_connections_closed_total"); got != 0 {
		t.Errorf("partroute_extproc_reset_flood_connections_closed_total = %v after idle streams were ended, want 0", got)
	}
}

// A reload that shortens limits.extproc.streamIdleTimeout applies to the streams already open.
func TestExtProcStreamIdleTimeoutFollowsAReload(t *testing.T) {
	s := startLimited(t, "  extproc: {streamIdleTimeout: 1h}\n")
	client, _ := extProcClient(t, s.extproc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	idle, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ended := make(chan error, 1)
	go func() { _, err := idle.Recv(); ended <- err }()
	mustRoute(t, client, "a request while a stream is open")
	editFile(t, filepath.Join(s.dir, "partroute.yaml"), "streamIdleTimeout: 1h", "streamIdleTimeout: 1s")
	s.reload <- struct{}{}
	select {
	case err := <-ended:
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("the idle stream ended with %v, want DEADLINE_EXCEEDED", err)
		}
	case <-ctx.Done():
		t.Fatal("a stream opened before a reload to a 1s idle timeout is still open")
	}
}

// peerConn is one connection accepted by a limitListener, and the client's end of it.
func peerConn(t *testing.T) (*limitListener, *limitConn, net.Conn) {
	t.Helper()
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := limitConnections(raw, listenerExtProc, func() int { return 10 }, newListenerMetrics(prometheus.NewRegistry()))
	t.Cleanup(func() { l.Close() })
	client, err := net.Dial("tcp", raw.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return l, c.(*limitConn), client
}

// The listener finds an open connection by the remote address gRPC gives a stream, and forgets
// it once it is closed.
func TestLimitListenerFindsConnections(t *testing.T) {
	l, c, client := peerConn(t)
	if got := l.conn(client.LocalAddr()); got != c {
		t.Fatalf("conn(%v) = %v, want the connection accepted", client.LocalAddr(), got)
	}
	if got := l.conn(nil); got != nil {
		t.Errorf("conn(nil) = %v, want nil", got)
	}
	c.Close()
	if got := l.conn(client.LocalAddr()); got != nil {
		t.Errorf("conn(%v) after Close = %v, want nil", client.LocalAddr(), got)
	}
}

// Where the transport stream in a stream's context cannot end the stream alone, an idle stream
// has its connection closed, so that the idle timeout holds whatever gRPC gives.
func TestIdleStreamWithoutTransportStatusClosesItsConnection(t *testing.T) {
	l, _, client := peerConn(t)
	g := newStreamGuard(func() *config.ExtProcLimits { l := config.DefaultLimits().ExtProc; return &l }, l, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	ctx := peer.NewContext(context.Background(), &peer.Peer{Addr: client.LocalAddr()})
	g.end(ctx, status.New(codes.DeadlineExceeded, "idle"))
	if !closedAtOnce(t, client, 5*time.Second) {
		t.Fatal("the connection of an idle stream without a transport stream was kept open")
	}
}

func TestResetWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	type event struct {
		at   time.Time
		n    int
		over bool
	}
	for _, c := range []struct {
		name   string
		max    int
		events []event
	}{
		{"at the limit", 2, []event{{ms(0), 1, false}, {ms(10), 2, false}}},
		{"over the limit within a second", 2, []event{{ms(0), 1, false}, {ms(10), 2, false}, {ms(999), 3, true}}},
		{"reported once", 1, []event{{ms(0), 1, false}, {ms(1), 2, true}, {ms(2), 3, false}}},
		{"a new second starts a new count", 2, []event{{ms(0), 1, false}, {ms(10), 2, false}, {ms(1000), 1, false}, {ms(1500), 2, false}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var w resetWindow
			for i, e := range c.events {
				if n, over := w.add(e.at, c.max); n != e.n || over != e.over {
					t.Errorf("event %d: add = %d %v, want %d %v", i, n, over, e.n, e.over)
				}
			}
		})
	}
}

// cancelledStreams opens n streams over client and resets each (the client cancels it); with
// answered, each first sends the request headers and reads partroute's answer, as a request of
// Envoy's whose client went away; without, each is reset before any message, which Envoy never
// does. It returns the first error other than the cancellation.
func cancelledStreams(client extprocv3.ExternalProcessorClient, n int, answered bool) error {
	for range n {
		ctx, cancel := context.WithCancel(context.Background())
		stream, err := client.Process(ctx)
		if err == nil && answered {
			if err = stream.Send(usersHeaders()); err == nil {
				_, err = stream.Recv()
			}
		}
		cancel()
		if err != nil {
			return err
		}
	}
	return nil
}

// A connection on which the client resets more than limits.extproc.maxEmptyResets streams in a
// second before sending them a message is closed, counted and logged once; a connection that
// resets no more than that stays open, and everyone else is served.
func TestExtProcResetFloodClosesTheConnection(t *testing.T) {
	const limit = 20
	s := startLimited(t, fmt.Sprintf("  extproc: {maxEmptyResets: %d}\n", limit))
	other, _ := extProcClient(t, s.extproc)
	mustRoute(t, other, "a request before the flood")

	// As many as the limit, from a gRPC client, leave its connection open.
	quiet, _ := extProcClient(t, s.extproc)
	mustRoute(t, quiet, "the quiet connection's first request")
	if err := cancelledStreams(quiet, limit, false); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the reset streams to be counted", 10*time.Second, func() bool {
		return s.metric(t, "partroute_extproc_empty_resets_total") == limit
	})
	mustRoute(t, quiet, "a request on the connection that reset as many streams as the limit")

	// Many more on a raw connection close it.
	c := dialH2(t, s.extproc)
	for range 10 * limit {
		if err := c.openAndReset(); err != nil {
			break
		}
	}
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("a connection that reset %d streams before a message, with maxEmptyResets %d, is still open", 10*limit, limit)
	}
	testkit.WaitFor(t, "the closed connection to be counted", 10*time.Second, func() bool {
		return s.metric(t, "partroute_extproc_reset_flood_connections_closed_total") == 1
	})
	mustRoute(t, other, "a request on another connection after the flood")
	if got := s.metric(t, "partroute_extproc_reset_flood_connections_closed_total"); got != 1 {
		t.Errorf("partroute_extproc_reset_flood_connections_closed_total = %v, want 1: only the flooding connection", got)
	}
	if n := strings.Count(s.logs.String(), "reset streams before sending them a message"); n != 1 {
		t.Errorf("%d log lines of the closed connection, want 1:\n%s", n, s.logs)
	}
}

// Streams reset after their first message, as Envoy resets the ext_proc stream of a request
// whose client went away, never close a connection, however many and however fast: here 50
// times the limit on one connection, one after another. The client waits for partroute's
// answer before it resets, as Envoy does: partroute has read the message then.
func TestExtProcResetAfterAMessageIsNotAFlood(t *testing.T) {
	const limit, streams = 10, 500
	s := startLimited(t, fmt.Sprintf("  extproc: {maxEmptyResets: %d}\n", limit))
	client, _ := extProcClient(t, s.extproc)
	mustRoute(t, client, "the first request")
	before := s.metric(t, "partroute_extproc_streams_total")
	start := time.Now()
	if err := cancelledStreams(client, streams, true); err != nil {
		t.Fatalf("a stream reset after its answer: %v", err)
	}
	took := time.Since(start)
	testkit.WaitFor(t, "the streams to end", 10*time.Second, func() bool {
		return s.metric(t, "partroute_extproc_streams_total")-before >= streams && s.metric(t, "partroute_extproc_active_streams") == 0
	})
	t.Logf("%d streams reset after their answer in %v", streams, took.Round(time.Millisecond))
	if got := s.metric(t, "partroute_extproc_empty_resets_total"); got != 0 {
		t.Errorf("partroute_extproc_empty_resets_total = %v after streams reset after their first message, want 0", got)
	}
	if got := s.metric(t, "partroute_extproc_reset_flood_connections_closed_total"); got != 0 {
		t.Errorf("partroute_extproc_reset_flood_connections_closed_total = %v after streams reset after their first message, want 0", got)
	}
	if got := s.metric(t, "partroute_listener_connections", "listener", "extproc"); got != 1 {
		t.Errorf("partroute_listener_connections{listener=extproc} = %v, want the one connection, never closed", got)
	}
	mustRoute(t, client, "a request after the resets")
}

// percentile returns the p-th percentile of ds.
func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// heapAfterGC is the live heap, after two collections: the second empties the pools of
// buffers the first left for reuse.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// routeUntil routes requests over client one after another until stop is closed, and returns
// their latencies.
func routeUntil(t testing.TB, client extprocv3.ExternalProcessorClient, stop <-chan struct{}) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for {
		select {
		case <-stop:
			return lat
		default:
		}
		start := time.Now()
		mustRoute(t, client, "a fresh request")
		lat = append(lat, time.Since(start))
	}
}

// closeAfter returns a channel closed after d.
func closeAfter(d time.Duration) <-chan struct{} {
	c := make(chan struct{})
	time.AfterFunc(d, func() { close(c) })
	return c
}

// closed reports whether the server has closed the connection.
func (c *h2Conn) closed() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// floodResult is what a flood wrote: streams opened and reset, over how many connections, and
// how many of them partroute closed.
type floodResult struct{ streams, conns, closed int }

// floodSpec is a flood: perAttacker streams opened and reset by each of attackers clients, in
// batches of batch every 10 ms (0: as fast as the client can write). A client whose connection
// partroute closes stops, or, with reconnect, opens a new one and goes on.
type floodSpec struct {
	attackers, perAttacker, batch int
	reconnect                     bool
}

// flood runs spec against addr. When every client has written its streams or stopped, it
// calls written; then it waits a second at most for partroute to close the connections still
// open, as an attacker keeps them open, and returns.
func flood(addr string, spec floodSpec, written func()) (floodResult, error) {
	var writing, waiting sync.WaitGroup
	var streams, conns, closed atomic.Int64
	errs := make(chan error, spec.attackers)
	writing.Add(spec.attackers)
	for range spec.attackers {
		waiting.Go(func() {
			c, err := newH2Conn(addr)
			if err != nil {
				errs <- err
				writing.Done()
				return
			}
			conns.Add(1)
			defer func() { c.close() }()
			pace := time.NewTicker(10 * time.Millisecond)
			defer pace.Stop()
			for i := 0; i < spec.perAttacker; {
				if spec.batch > 0 && i%spec.batch == 0 && i > 0 {
					<-pace.C
				}
				if c.closed() || c.openAndReset() != nil {
					<-c.done
					closed.Add(1)
					if !spec.reconnect {
						writing.Done()
						return
					}
					c.close()
					if c, err = newH2Conn(addr); err != nil {
						errs <- err
						writing.Done()
						return
					}
					conns.Add(1)
					continue
				}
				streams.Add(1)
				i++
			}
			writing.Done()
			writing.Wait()
			select {
			case <-c.done:
				closed.Add(1)
			case <-time.After(time.Second):
			}
		})
	}
	writing.Wait()
	written()
	waiting.Wait()
	close(errs)
	return floodResult{streams: int(streams.Load()), conns: int(conns.Load()), closed: int(closed.Load())}, <-errs
}

// floodEnv names the flood a test binary started by floodProcess runs instead of its tests.
const floodEnv = "PARTROUTE_TEST_FLOOD"

// TestMain runs the flood of floodEnv when it is set, and the tests otherwise.
func TestMain(m *testing.M) {
	if arg := os.Getenv(floodEnv); arg != "" {
		os.Exit(floodMain(arg))
	}
	os.Exit(m.Run())
}

// floodMain runs the flood "addr attackers perAttacker batch reconnect": it prints a line as
// it starts, one when its streams are written, and one of what it wrote when it is done.
func floodMain(arg string) int {
	var addr string
	var spec floodSpec
	if _, err := fmt.Sscan(arg, &addr, &spec.attackers, &spec.perAttacker, &spec.batch, &spec.reconnect); err != nil {
		fmt.Fprintf(os.Stderr, "%s=%q: %v\n", floodEnv, arg, err)
		return 2
	}
	fmt.Println("flooding")
	r, err := flood(addr, spec, func() { fmt.Println("written") })
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(r.streams, r.conns, r.closed)
	return 0
}

// floodClient is a flood running in a process of its own.
type floodClient struct {
	t      testing.TB
	cmd    *exec.Cmd
	out    *bufio.Scanner
	stderr bytes.Buffer
}

// floodProcess starts spec against addr from a process of its own, as an attacker's client
// is: the test binary again, with floodEnv set, on one of the machine's two cores
// (GOMAXPROCS=1), where in the same process its goroutines would be partroute's to schedule
// and could take both cores. It returns once the flood has begun.
func floodProcess(t testing.TB, addr string, spec floodSpec) *floodClient {
	t.Helper()
	f := &floodClient{t: t, cmd: exec.Command(os.Args[0], "-test.run=^$")}
	f.cmd.Env = append(os.Environ(), "GOMAXPROCS=1",
		fmt.Sprintf("%s=%s %d %d %d %v", floodEnv, addr, spec.attackers, spec.perAttacker, spec.batch, spec.reconnect))
	f.cmd.Stderr = &f.stderr
	stdout, err := f.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.out = bufio.NewScanner(stdout)
	f.expect("flooding")
	return f
}

// expect waits for the client's next line, which must be line.
func (f *floodClient) expect(line string) {
	f.t.Helper()
	if !f.out.Scan() || f.out.Text() != line {
		_ = f.cmd.Wait()
		f.t.Fatalf("flooding client printed %q, want %q\n%s", f.out.Text(), line, f.stderr.String())
	}
}

// wait waits for the client's end and returns what it wrote.
func (f *floodClient) wait() floodResult {
	f.t.Helper()
	var r floodResult
	if !f.out.Scan() {
		_ = f.cmd.Wait()
		f.t.Fatalf("flooding client ended without its figures\n%s", f.stderr.String())
	}
	if _, err := fmt.Sscan(f.out.Text(), &r.streams, &r.conns, &r.closed); err != nil {
		f.t.Fatalf("flooding client printed %q: %v", f.out.Text(), err)
	}
	if err := f.cmd.Wait(); err != nil {
		f.t.Fatalf("flooding client: %v\n%s", err, f.stderr.String())
	}
	return r
}

// floodRun is a flood and the fresh requests routed meanwhile.
type floodRun struct {
	floodResult
	took      time.Duration // from the first stream to the last written
	handled   float64       // streams that reached the ext_proc handler
	empty     float64       // streams partroute went through reset before a message
	guard     float64       // connections closed as reset floods
	fresh     []time.Duration
	heapAfter uint64
}

// runFlood routes fresh requests over client while a flood runs, from its first stream to its
// last.
func (s *limitedServer) runFlood(t testing.TB, client extprocv3.ExternalProcessorClient, spec floodSpec) floodRun {
	t.Helper()
	handled := s.metric(t, "partroute_extproc_streams_total")
	guard := s.metric(t, "partroute_extproc_reset_flood_connections_closed_total")
	empty := s.metric(t, "partroute_extproc_empty_resets_total")
	f := floodProcess(t, s.extproc, spec)
	start := time.Now()
	stop := make(chan struct{})
	measured := make(chan []time.Duration)
	go func() { measured <- routeUntil(t, client, stop) }()
	f.expect("written")
	var r floodRun
	r.took = time.Since(start)
	close(stop)
	r.fresh = <-measured
	r.floodResult = f.wait()
	testkit.WaitFor(t, "the streams of the flood to end", 30*time.Second, func() bool { return s.metric(t, "partroute_extproc_active_streams") == 0 })
	r.handled = s.metric(t, "partroute_extproc_streams_total") - handled - float64(len(r.fresh))
	r.guard = s.metric(t, "partroute_extproc_reset_flood_connections_closed_total") - guard
	r.empty = s.metric(t, "partroute_extproc_empty_resets_total") - empty
	r.heapAfter = heapAfterGC()
	if len(r.fresh) == 0 {
		t.Fatal("no fresh request was answered during the flood")
	}
	return r
}

// rapidResetFloods are the two floods of TestExtProcRapidResetFlood and
// BenchmarkExtProcRapidResetFlood, each from a process of its own: 20,000 streams opened and
// reset, paced over 2 s by 4 clients that open a new connection whenever partroute closes
// theirs, and a burst of 4 connections on which the client means to open and reset 100,000
// streams each as fast as it can write. Fresh requests are routed one after another on a
// connection of their own before the floods (idle) and during each.
type rapidResetFloods struct {
	idle         []time.Duration
	heapBefore   uint64
	paced, burst floodRun
}

const floodAttackers = 4

func runRapidResetFloods(tb testing.TB) rapidResetFloods {
	tb.Helper()
	const perAttacker, burstPerConn = 5000, 100000
	s := startLimited(tb, "")
	client, _ := extProcClient(tb, s.extproc)
	for range 200 {
		mustRoute(tb, client, "warm-up")
	}
	var f rapidResetFloods
	f.idle = routeUntil(tb, client, closeAfter(2*time.Second))
	f.heapBefore = heapAfterGC()
	f.paced = s.runFlood(tb, client, floodSpec{attackers: floodAttackers, perAttacker: perAttacker, batch: perAttacker / 200, reconnect: true})
	f.burst = s.runFlood(tb, client, floodSpec{attackers: floodAttackers, perAttacker: burstPerConn})
	return f
}

func mib(b uint64) float64 { return float64(b) / (1 << 20) }

// log writes what the floods did and what the fresh requests waited.
func (f rapidResetFloods) log(tb testing.TB) {
	tb.Helper()
	idle99 := percentile(f.idle, 0.99)
	tb.Logf("fresh requests, one after another on their own connection: idle p50 %v p99 %v (%d requests); heap after GC %.1f MiB",
		percentile(f.idle, 0.5), idle99, len(f.idle), mib(f.heapBefore))
	for _, c := range []struct {
		name string
		r    floodRun
	}{{"paced flood, reconnecting", f.paced}, {"burst", f.burst}} {
		r := c.r
		p99 := percentile(r.fresh, 0.99)
		tb.Logf("%s: %d streams opened and reset in %v on %d connections, %d closed by partroute (%.0f counted); partroute went through %.0f, %.0f reached the ext_proc handler; "+
			"fresh p50 %v p99 %v (%.1f× idle), slowest %v (%d requests); heap after GC %.1f MiB",
			c.name, r.streams, r.took.Round(time.Millisecond), r.conns, r.closed, r.guard, r.empty, r.handled,
			percentile(r.fresh, 0.5), p99, float64(p99)/float64(idle99), slices.Max(r.fresh), len(r.fresh), mib(r.heapAfter))
	}
}

// A rapid-reset flood (streams opened and reset before a message) neither starves fresh
// requests on another connection nor leaves memory behind: partroute closes each flooding
// connection once it resets more than limits.extproc.maxEmptyResets streams in a second, and
// until then gRPC runs at most MaxConcurrentStreams handlers of a connection at once. Every
// fresh request sent during the floods is answered (runFlood fails the test otherwise); how
// long they wait is measured by BenchmarkExtProcRapidResetFlood, not asserted here, as a
// shared machine's pauses would make any bound flaky (docs/benchmarks.md).
func TestExtProcRapidResetFlood(t *testing.T) {
	f := runRapidResetFloods(t)
	f.log(t)
	paced, burst := f.paced, f.burst
	// Every flooding connection is closed by partroute: the burst's as soon as they are over
	// the limit, the paced flood's each time, but for the last of a client when it took no
	// more than the limit's worth of streams.
	if burst.guard != floodAttackers || burst.closed != floodAttackers {
		t.Errorf("the burst had %d of its %d connections closed, %.0f counted as reset floods; want every one", burst.closed, burst.conns, burst.guard)
	}
	if paced.guard < float64(paced.conns-floodAttackers) {
		t.Errorf("the paced flood had %.0f of its %d connections closed as reset floods, want all but the last of each client at most", paced.guard, paced.conns)
	}
	for _, h := range []uint64{paced.heapAfter, burst.heapAfter} {
		if h > f.heapBefore+16<<20 {
			t.Errorf("the heap grew from %.1f MiB to %.1f MiB, want at most 16 MiB more", mib(f.heapBefore), mib(h))
		}
	}
}

// BenchmarkExtProcRapidResetFlood measures what the floods of TestExtProcRapidResetFlood make
// fresh requests wait: their p99 during the paced flood and the slowest during the burst, each
// as a multiple of the idle p99. One iteration is the whole run (about 7 s); run it with
// -benchtime 1x -count N on a quiet machine (docs/benchmarks.md).
func BenchmarkExtProcRapidResetFlood(b *testing.B) {
	for b.Loop() {
		f := runRapidResetFloods(b)
		f.log(b)
		idle99 := float64(percentile(f.idle, 0.99))
		b.ReportMetric(idle99/float64(time.Microsecond), "idle-p99-µs")
		b.ReportMetric(float64(percentile(f.paced.fresh, 0.99))/idle99, "paced-p99/idle-p99")
		b.ReportMetric(float64(slices.Max(f.burst.fresh))/idle99, "burst-slowest/idle-p99")
		b.ReportMetric(float64(slices.Max(f.burst.fresh))/float64(time.Millisecond), "burst-slowest-ms")
	}
}

// adminConn is a keep-alive HTTP/1.1 connection to the admin listener.
type adminConn struct {
	conn net.Conn
	r    *bufio.Reader
}

func dialAdmin(t *testing.T, addr string) *adminConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &adminConn{conn: conn, r: bufio.NewReader(conn)}
}

// get asks for path on the connection and returns the status and body.
func (c *adminConn) get(path string) (int, string, error) {
	_ = c.conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := fmt.Fprintf(c.conn, "GET %s HTTP/1.1\r\nHost: partroute\r\n\r\n", path); err != nil {
		return 0, "", err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// The admin listener closes a keep-alive connection that asks nothing for
// limits.admin.idleTimeout: a hundred idle connections are all closed.
func TestAdminIdleConnectionsAreClosed(t *testing.T) {
	const idle = time.Second
	s := startLimited(t, "  admin: {idleTimeout: 1s, maxConnections: 200}\n")
	conns := make([]*adminConn, 100)
	for i := range conns {
		conns[i] = dialAdmin(t, s.admin)
		if code, _, err := conns[i].get("/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: /healthz %d %v", i, code, err)
		}
	}
	start := time.Now()
	if got := s.metric(t, "partroute_listener_connections", "listener", "admin"); got != 100 {
		t.Errorf("partroute_listener_connections{listener=admin} = %v, want 100", got)
	}
	for i, c := range conns {
		// The connection is closed by the server when a read ends in EOF, not at the deadline.
		_ = c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := c.r.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection %d, %v after its last request: %v, want closed by the server", i, time.Since(start).Round(time.Millisecond), err)
		}
	}
	took := time.Since(start)
	t.Logf("100 idle admin connections closed within %v of their last request (idleTimeout %v)", took.Round(time.Millisecond), idle)
	if took < idle {
		t.Errorf("idle connections closed after %v, before the idle timeout of %v", took, idle)
	}
	testkit.WaitFor(t, "the closed connections to leave the gauge", 10*time.Second, func() bool {
		return s.metric(t, "partroute_listener_connections", "listener", "admin") == 0
	})
}

// Over limits.admin.maxConnections, a new admin connection is closed as soon as it is accepted
// and counted, while the connections open still answer, /healthz and /metrics included.
func TestAdminConnectionLimit(t *testing.T) {
	const limit = 4
	s := startLimited(t, fmt.Sprintf("  admin: {maxConnections: %d}\n", limit))
	conns := make([]*adminConn, limit)
	for i := range conns {
		conns[i] = dialAdmin(t, s.admin)
		if code, _, err := conns[i].get("/healthz"); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: /healthz %d %v", i, code, err)
		}
	}
	for i := range 3 {
		over := dialAdmin(t, s.admin)
		if !closedAtOnce(t, over.conn, 5*time.Second) {
			t.Fatalf("connection %d over maxConnections %d was kept open", limit+i+1, limit)
		}
	}
	if code, body, err := conns[0].get("/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
		t.Errorf("/healthz on an open connection while others are refused: %d %q %v", code, body, err)
	}
	code, body, err := conns[1].get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("/metrics on an open connection: %d %v", code, err)
	}
	if want := `partroute_listener_connections_refused_total{listener="admin"} 3`; !strings.Contains(body, want) {
		t.Errorf("/metrics lacks %s", want)
	}
}

// noopProcessor answers every request_headers message with an empty answer and decides
// nothing: the benchmark of the limits measures what they add to gRPC alone.
type noopProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noopProcessor) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	for {
		req, err := srv.Recv()
		if err != nil {
			return nil
		}
		if req.GetRequestHeaders() == nil {
			continue
		}
		if err := srv.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
			return err
		}
	}
}

// processCPU returns the CPU time the process has used so far, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// startBenchServer serves a no-op ext_proc handler on loopback with the ext_proc server's
// options and, when limited, with its limits wired as Run wires them, and returns a client.
func startBenchServer(b *testing.B, limited bool) extprocv3.ExternalProcessorClient {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	opts := ExtProcServerOptions(DefaultMaxConnectionAge, 0)
	var srv extprocv3.ExternalProcessorServer = noopProcessor{}
	if limited {
		reg := prometheus.NewRegistry()
		limits := config.DefaultLimits()
		limited := limitConnections(lis, listenerExtProc, func() int { return limits.ExtProc.MaxConnections }, newListenerMetrics(reg))
		lis = limited
		guard := newStreamGuard(func() *config.ExtProcLimits { return &limits.ExtProc }, limited, reg, slog.New(slog.DiscardHandler))
		srv = guard.wrap(srv)
		opts = append(opts, extProcLimitOptions(limits.ExtProc)...)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { guard.sweep(ctx); close(done) }()
		b.Cleanup(func() { cancel(); <-done })
	}
	gs := grpc.NewServer(opts...)
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-served; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

// BenchmarkExtProcLimits is what the ext_proc limits cost per request: one stream per request
// over loopback, as Envoy opens them, to a no-op handler served without and with the limits;
// serial is one request at a time, parallel keeps 16 in flight. Allocations and CPU
// (cpu-ns/op, from getrusage) are client and server together: the difference between the two
// is the limits'.
func BenchmarkExtProcLimits(b *testing.B) {
	for _, c := range []struct {
		name    string
		limited bool
	}{{"bare", false}, {"limits", true}} {
		b.Run(c.name+"/serial", func(b *testing.B) {
			client := startBenchServer(b, c.limited)
			ctx := context.Background()
			if err := route(ctx, client); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			cpu := processCPU(b)
			for b.Loop() {
				if err := route(ctx, client); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
		})
		b.Run(c.name+"/parallel", func(b *testing.B) {
			client := startBenchServer(b, c.limited)
			ctx := context.Background()
			b.ReportAllocs()
			b.SetParallelism(8)
			b.ResetTimer()
			cpu := processCPU(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := route(ctx, client); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
