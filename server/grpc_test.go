package server

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
)

// bodyKeyedConfig has one service that reads its key from the JSON body, with a body limit of
// 8 MiB: above gRPC's default receive limit of 4 MiB.
const bodyKeyedConfig = `naming: {file: naming.yaml}
maxBodyBytes: 8388608
services:
  - name: orders
    match: {pathPrefix: /orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{jsonBody: /id}]}
`

const bodyKeyedNaming = `services:
  orders:
    partitions:
      - {lowKey: 0, highKey: 4, id: orders-0, replicas: [{address: 10.0.0.1:80, role: primary}]}
      - {lowKey: 5, highKey: 9, id: orders-1, replicas: [{address: 10.0.0.2:80, role: primary}]}
`

// serveExtProc serves the ext_proc handler over cfg and naming with the server options Run
// uses, on 127.0.0.1:0, and returns a client connected to it.
func serveExtProc(t *testing.T, cfgYAML, namingYAML string) extprocv3.ExternalProcessorClient {
	t.Helper()
	cfg, err := config.Parse([]byte(cfgYAML), "/p/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(namingYAML), "/p/naming.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := resolver.New(&resolver.State{Config: cfg, Naming: view})
	gs := grpc.NewServer(ExtProcServerOptions(time.Hour, 0)...)
	extprocv3.RegisterExternalProcessorServer(gs, extproc.NewHandler(res, extproc.NewMetrics(nil), slog.New(slog.DiscardHandler)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

// A body above gRPC's default receive limit but within maxBodyBytes is routed like any other:
// the server's receive limit follows the largest maxBodyBytes, not gRPC's default.
func TestExtProcRoutesABodyAboveFourMiB(t *testing.T) {
	client := serveExtProc(t, bodyKeyedConfig, bodyKeyedNaming)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := client.Process(ctx)
	if err != nil {
		t.Fatal(err)
	}
	headers := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: ":method", RawValue: []byte("POST")},
		{Key: ":path", RawValue: []byte("/orders")},
		{Key: ":authority", RawValue: []byte("orders.test")},
	}}
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: headers}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("answer to the request headers: %v", err)
	}
	body := `{"id": 7, "pad": "` + strings.Repeat("x", 6<<20) + `"}`
	if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(body), EndOfStream: true}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatalf("a %d-byte body with maxBodyBytes 8 MiB: %v", len(body), err)
	}
	var partition string
	for _, h := range resp.GetRequestBody().GetResponse().GetHeaderMutation().GetSetHeaders() {
		if h.GetHeader().GetKey() == "x-partition-id" {
			partition = string(h.GetHeader().GetRawValue())
		}
	}
	if partition != "orders-1" {
		t.Errorf("response %v: want the body's request routed to orders-1", resp)
	}
}
