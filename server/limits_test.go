package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
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

func startLimited(t *testing.T, limits string) *limitedServer {
	t.Helper()
	return startLimitedIn(t, testkit.CopyExamples(t), limits)
}

// startLimitedIn is startLimited on the files in dir.
func startLimitedIn(t *testing.T, dir, limits string) *limitedServer {
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
func (s *limitedServer) metric(t *testing.T, name string, labels ...string) float64 {
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
func extProcClient(t *testing.T, addr string) (extprocv3.ExternalProcessorClient, *grpc.ClientConn) {
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

func mustRoute(t *testing.T, client extprocv3.ExternalProcessorClient, what string) {
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
	t    *testing.T
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
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := &h2Conn{t: t, conn: conn, fr: http2.NewFramer(conn, conn), next: 1, settings: make(chan []http2.Setting, 1), done: make(chan struct{})}
	c.enc = hpack.NewEncoder(&c.hbuf)
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	if err := c.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	go c.read()
	t.Cleanup(func() { conn.Close(); <-c.done })
	return c
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
// with DEADLINE_EXCEEDED and counted; a stream whose messages come more often than that is
// not, however long it lasts; and the connection goes on serving new streams.
func TestExtProcStreamIdleTimeout(t *testing.T) {
	const timeout = time.Second
	s := startLimited(t, "  extproc: {streamIdleTimeout: 1s}\n")
	client, _ := extProcClient(t, s.extproc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	idle, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ended := make(chan error, 1)
	go func() { _, err := idle.Recv(); ended <- err }()

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

	select {
	case err := <-ended:
		elapsed := time.Since(start)
		st := status.Convert(err)
		if st.Code() != codes.DeadlineExceeded {
			t.Errorf("the idle stream ended with %v, want DEADLINE_EXCEEDED", err)
		}
		if elapsed < timeout {
			t.Errorf("the idle stream ended after %v, before the timeout of %v", elapsed, timeout)
		}
	case <-ctx.Done():
		t.Fatal("a stream idle for far longer than limits.extproc.streamIdleTimeout is still open")
	}
	if got := s.metric(t, "partroute_extproc_stream_idle_timeouts_total"); got != 1 {
		t.Errorf("partroute_extproc_stream_idle_timeouts_total = %v, want 1", got)
	}
	mustRoute(t, client, "a new stream on the connection of the idle one")
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
func routeUntil(t *testing.T, client extprocv3.ExternalProcessorClient, stop <-chan struct{}) []time.Duration {
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

// flood opens and resets perConn streams on each of conns new connections, in batches of
// batch every 10 ms (0: as fast as it can write), and returns when every stream was sent,
// with the connections.
func flood(t *testing.T, addr string, conns, perConn, batch int) []*h2Conn {
	t.Helper()
	var wg sync.WaitGroup
	all := make([]*h2Conn, conns)
	for i := range all {
		c := dialH2(t, addr)
		all[i] = c
		wg.Go(func() {
			pace := time.NewTicker(10 * time.Millisecond)
			defer pace.Stop()
			for i := range perConn {
				if batch > 0 && i%batch == 0 && i > 0 {
					<-pace.C
				}
				if err := c.openAndReset(); err != nil {
					t.Errorf("flood: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return all
}

// served waits until partroute has gone through n streams since it had started before
// streams: each has reached the handler or was refused.
func (s *limitedServer) served(t *testing.T, before float64, n int, conns []*h2Conn) {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("partroute to go through %d streams", n), 60*time.Second, func() bool {
		refused := int64(0)
		for _, c := range conns {
			refused += c.refused.Load()
		}
		return int(s.metric(t, "partroute_extproc_streams_total")-before)+int(refused) >= n
	})
	testkit.WaitFor(t, "the streams to end", 30*time.Second, func() bool { return s.metric(t, "partroute_extproc_active_streams") == 0 })
}

// A rapid-reset flood (streams opened and reset at once) on a few connections neither starves
// fresh requests on another connection nor leaves memory behind. What bounds it is gRPC's own:
// it runs at most MaxConcurrentStreams handlers of a connection at once and reads no more of
// the connection until one ends, so each stream costs only the time to start and end it.
func TestExtProcRapidResetFlood(t *testing.T) {
	const conns, perConn = 4, 5000
	s := startLimited(t, "")
	client, _ := extProcClient(t, s.extproc)
	for range 200 {
		mustRoute(t, client, "warm-up")
	}
	idle := routeUntil(t, client, closeAfter(time.Second))
	idle99 := percentile(idle, 0.99)
	heapBefore := heapAfterGC()

	// A flood bounded in time: 20,000 streams in 2 s.
	stop := make(chan struct{})
	measured := make(chan []time.Duration)
	go func() { measured <- routeUntil(t, client, stop) }()
	start := time.Now()
	before := s.metric(t, "partroute_extproc_streams_total")
	s.served(t, before, conns*perConn, flood(t, s.extproc, conns, perConn, perConn/200))
	took := time.Since(start)
	close(stop)
	during := <-measured
	flood99 := percentile(during, 0.99)
	heapAfter := heapAfterGC()

	// A burst: the same 20,000 streams as fast as the client can write them.
	stop = make(chan struct{})
	go func() { measured <- routeUntil(t, client, stop) }()
	burstStart := time.Now()
	before = s.metric(t, "partroute_extproc_streams_total")
	s.served(t, before, conns*perConn, flood(t, s.extproc, conns, perConn, 0))
	burstTook := time.Since(burstStart)
	close(stop)
	burst := <-measured
	burstMax := slices.Max(burst)
	heapAfterBurst := heapAfterGC()

	mib := func(b uint64) float64 { return float64(b) / (1 << 20) }
	t.Logf("fresh requests, one after another on their own connection: idle p50 %v p99 %v (%d requests)",
		percentile(idle, 0.5), idle99, len(idle))
	t.Logf("flood of %d streams opened and reset on %d connections in %v: fresh p50 %v p99 %v (%d requests), p99 %.1f× idle",
		conns*perConn, conns, took.Round(time.Millisecond), percentile(during, 0.5), flood99, len(during), float64(flood99)/float64(idle99))
	t.Logf("burst of %d streams at full speed, gone through in %v: fresh p50 %v, slowest %v (%d requests)",
		conns*perConn, burstTook.Round(time.Millisecond), percentile(burst, 0.5), burstMax, len(burst))
	t.Logf("heap after GC: %.1f MiB before, %.1f MiB after the flood, %.1f MiB after the burst", mib(heapBefore), mib(heapAfter), mib(heapAfterBurst))

	if len(during) == 0 || len(burst) == 0 {
		t.Fatalf("%d fresh requests answered during the flood, %d during the burst: want some", len(during), len(burst))
	}
	// The race detector slows partroute several times over, and the clients share its cores:
	// latency is checked only without it, and with room for this machine's noise.
	if bound := 4*idle99 + 2*time.Millisecond; !raceEnabled && flood99 > bound {
		t.Errorf("p99 of fresh requests during the flood %v, above %v (4× idle p99 + 2 ms)", flood99, bound)
	}
	if !raceEnabled && burstMax > 2*time.Second {
		t.Errorf("a fresh request waited %v during the burst, want it served within 2 s", burstMax)
	}
	for _, h := range []uint64{heapAfter, heapAfterBurst} {
		if h > heapBefore+16<<20 {
			t.Errorf("the heap grew from %.1f MiB to %.1f MiB, want at most 16 MiB more", mib(heapBefore), mib(h))
		}
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
		lis = limitConnections(lis, listenerExtProc, func() int { return limits.ExtProc.MaxConnections }, newListenerMetrics(reg))
		idle := newIdleStreams(extprocv3.ExternalProcessor_Process_FullMethodName, func() time.Duration { return limits.ExtProc.StreamIdleTimeout }, reg)
		opts = append(opts, extProcLimitOptions(limits.ExtProc, idle)...)
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
// over loopback, as Envoy opens them, to a no-op handler served without and with the limits.
// Allocations and CPU (cpu-ns/op, from getrusage) are client and server together: the
// difference between the two is the limits'.
func BenchmarkExtProcLimits(b *testing.B) {
	for _, c := range []struct {
		name    string
		limited bool
	}{{"bare", false}, {"limits", true}} {
		b.Run(c.name, func(b *testing.B) {
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
	}
}
