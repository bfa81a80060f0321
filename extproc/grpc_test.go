package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/keying"
)

// grpcServer is an ext_proc server on loopback and a client connection to it, set up as
// Envoy's side would use it.
type grpcServer struct {
	client extprocv3.ExternalProcessorClient
	conn   *grpc.ClientConn
	health healthpb.HealthClient

	mu sync.Mutex
	// errs are the errors Process returned to gRPC, which would fail Envoy's request.
	errs []error
}

// startGRPC serves srv and the health service on 127.0.0.1:0 until the test ends.
func startGRPC(tb testing.TB, srv extprocv3.ExternalProcessorServer) *grpcServer {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	g := &grpcServer{}
	gs := grpc.NewServer(grpc.ForceServerCodecV2(NewCodec()), grpc.ChainStreamInterceptor(func(s any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(s, ss)
		if err != nil {
			g.mu.Lock()
			g.errs = append(g.errs, err)
			g.mu.Unlock()
		}
		return err
	}))
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(gs, healthSrv)
	healthSrv.SetServingStatus("envoy.service.ext_proc.v3.ExternalProcessor", healthpb.HealthCheckResponse_SERVING)
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()

	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	g.conn = conn
	g.client = extprocv3.NewExternalProcessorClient(conn)
	g.health = healthpb.NewHealthClient(conn)
	tb.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return g
}

func (g *grpcServer) handlerErrors() []error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]error(nil), g.errs...)
}

// roundTrip opens one stream for one request, as Envoy does: it sends the request headers,
// reads the answer, half-closes and reads the end of the stream.
func roundTrip(ctx context.Context, client extprocv3.ExternalProcessorClient, msg *extprocv3.ProcessingRequest) (*extprocv3.ProcessingResponse, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		return nil, err
	}
	if err := stream.Send(msg); err != nil {
		return nil, err
	}
	resp, err := stream.Recv()
	if err != nil {
		return nil, err
	}
	if err := stream.CloseSend(); err != nil {
		return nil, err
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("stream did not end cleanly after the half-close: %w", err)
	}
	return resp, nil
}

func TestGRPCHealth(t *testing.T) {
	g := startGRPC(t, newFixture(t).handler)
	resp, err := g.health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "envoy.service.ext_proc.v3.ExternalProcessor"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health check: %v, %v", resp, err)
	}
}

// refPartition maps a key of [low, high] split into count partitions to its partition index
// with Service Fabric's formula, computed here independently of the keying package.
func refPartition(low, high, key int64, count int) int {
	span := uint64(high) - uint64(low)
	n := uint64(count)
	rpp, rem := span/n, span%n+1
	if rem == n {
		rpp, rem = rpp+1, 0
	}
	off := uint64(key) - uint64(low)
	// The first rem partitions hold rpp+1 keys each, the rest rpp.
	if big := rem * (rpp + 1); off < big {
		return int(off / (rpp + 1))
	}
	return int(rem + (off-rem*(rpp+1))/rpp)
}

func TestRefPartitionMatchesTheDesign(t *testing.T) {
	// The examples the design gives for the split.
	for _, c := range []struct {
		low, high, key int64
		count, want    int
	}{
		{0, 33, 0, 4, 0}, {0, 33, 8, 4, 0}, {0, 33, 9, 4, 1}, {0, 33, 17, 4, 1},
		{0, 33, 18, 4, 2}, {0, 33, 25, 4, 2}, {0, 33, 26, 4, 3}, {0, 33, 33, 4, 3},
		{math.MinInt64, math.MaxInt64, -1, 2, 0}, {math.MinInt64, math.MaxInt64, 0, 2, 1},
		{math.MinInt64, math.MaxInt64, -5534023222112865485, 5, 0},
		{math.MinInt64, math.MaxInt64, -5534023222112865484, 5, 1},
	} {
		if got := refPartition(c.low, c.high, c.key, c.count); got != c.want {
			t.Errorf("refPartition(%d, %d, %d, %d) = %d, want %d", c.low, c.high, c.key, c.count, got, c.want)
		}
	}
}

// concurrentCase is one simulated request and the decision it must get.
type concurrentCase struct {
	msg  *extprocv3.ProcessingRequest
	want routed
}

// concurrentCases spreads n requests over the int64, hash and named services of the example,
// with writes and reads.
func concurrentCases(f *fixture, n int) []concurrentCase {
	users := f.view.Services["users"].Partitions
	sessions := f.view.Services["sessions"].Partitions
	cases := make([]concurrentCase, 0, n)
	for i := 0; i < n; i++ {
		var c concurrentCase
		switch i % 4 {
		case 0: // A write keyed by path.
			k := int64(i % 34)
			c.msg = requestHeaders("PUT", "u.example.com", "/api/users/"+strconv.FormatInt(k, 10))
			c.want = routed{partition: users[refPartition(0, 33, k, 4)].ID, role: "primary", key: strconv.FormatInt(k, 10)}
		case 1: // A read keyed by header, on a reads:any service.
			k := int64((i * 7) % 34)
			c.msg = requestHeaders("GET", "u.example.com", "/api/users", "x-user-id", strconv.FormatInt(k, 10))
			c.want = routed{partition: users[refPartition(0, 33, k, 4)].ID, roleHeader: "any", key: strconv.FormatInt(k, 10)}
		case 2: // A read keyed by a hashed cookie, on a reads:secondary service.
			session := fmt.Sprintf("session-%d", i)
			k := keying.ReduceHash(keying.XXHash64.Sum64(session), math.MinInt64, math.MaxInt64)
			c.msg = requestHeaders("GET", "a.test", "/api/sessions/me", "cookie", "session="+session)
			c.want = routed{partition: sessions[refPartition(math.MinInt64, math.MaxInt64, k, 2)].ID, role: "secondary", key: strconv.FormatInt(k, 10)}
		case 3: // A write to a named partition.
			name := []string{"eu", "us", "apac"}[i%3]
			c.msg = requestHeaders("POST", "a.test", "/api/regions/"+name)
			c.want = routed{partition: "regions/" + name, role: "primary", key: name}
		}
		cases = append(cases, c)
	}
	return cases
}

func TestGRPCConcurrentRequests(t *testing.T) {
	f := newFixture(t)
	g := startGRPC(t, f.handler)
	const requests, workers = 200, 16
	cases := concurrentCases(f, requests)
	results := make([]*extprocv3.ProcessingResponse, requests)
	errs := make([]error, requests)
	next := make(chan int)
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				results[i], errs[i] = roundTrip(ctx, g.client, cases[i].msg)
			}
		}()
	}
	for i := range cases {
		next <- i
	}
	close(next)
	wg.Wait()

	for i, c := range cases {
		if errs[i] != nil {
			t.Fatalf("request %d: %v", i, errs[i])
		}
		checkRouted(t, results[i], false, c.want)
	}
	if got := testutil.ToFloat64(f.metrics.streams); got != requests {
		t.Errorf("streams_total = %v, want %d", got, requests)
	}
	var ok float64
	for _, svc := range []string{"users", "sessions", "regions"} {
		ok += testutil.ToFloat64(f.metrics.requests.WithLabelValues(svc, "ok"))
	}
	if ok != requests {
		t.Errorf("requests_total{code=\"ok\"} sums to %v, want %d", ok, requests)
	}
	testkit.WaitFor(t, "no active streams", 10*time.Second, func() bool { return testutil.ToFloat64(f.metrics.activeStreams) == 0 })
	if errs := g.handlerErrors(); len(errs) != 0 {
		t.Errorf("Process returned errors: %v", errs)
	}
}

func TestGRPCRejectionOverTheWire(t *testing.T) {
	f := newFixture(t)
	g := startGRPC(t, f.handler)
	resp, err := roundTrip(context.Background(), g.client, requestHeaders("PUT", "a.example.com", "/api/users/99"))
	if err != nil {
		t.Fatal(err)
	}
	checkRejection(t, resp, 400, "partition_key_out_of_range")
}

func TestGRPCClientCancelsMidStream(t *testing.T) {
	f := newFixture(t)
	g := startGRPC(t, f.handler)
	active := func() float64 { return testutil.ToFloat64(f.metrics.activeStreams) }

	// Envoy resets the stream after the decision, before half-closing it.
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := g.client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(requestHeaders("PUT", "a.example.com", "/api/users/12")); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	checkRouted(t, resp, false, routed{partition: "users-1", role: "primary", key: "12"})
	if got := active(); got != 1 {
		t.Errorf("active streams = %v with the stream open, want 1", got)
	}
	cancel()
	testkit.WaitFor(t, "the reset stream to end", 10*time.Second, func() bool { return active() == 0 })

	// Envoy resets a stream before sending anything, as when the client goes away at once.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	if _, err := g.client.Process(ctx); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the stream to open on the server", 10*time.Second, func() bool { return active() == 1 })
	cancel()
	testkit.WaitFor(t, "the reset stream to end", 10*time.Second, func() bool { return active() == 0 })

	if got := testutil.ToFloat64(f.metrics.streams); got != 2 {
		t.Errorf("streams_total = %v, want 2", got)
	}
	// A reset is how Envoy ends streams: it is not an error.
	if errs := g.handlerErrors(); len(errs) != 0 {
		t.Errorf("Process returned errors on reset streams: %v", errs)
	}
}
