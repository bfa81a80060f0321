package loadtest

import (
	"errors"
	"fmt"
	"io"
	"net"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
)

// NoopProcessor is the baseline ext_proc server: it answers every message with the empty
// response of the matching kind and decides nothing, so what it costs is what gRPC, protobuf and
// a stream per request cost on their own. partroute is measured against it.
type NoopProcessor struct {
	extprocv3.UnimplementedExternalProcessorServer
}

// Process answers each message of one stream until Envoy half-closes or resets it.
func (NoopProcessor) Process(srv extprocv3.ExternalProcessor_ProcessServer) error {
	ctx := srv.Context()
	for {
		req, err := srv.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled || ctx.Err() != nil {
				return nil
			}
			return err
		}
		resp := NoopResponse(req)
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

// NoopResponse is the empty response that matches req's kind, nil for a kind it does not know.
func NoopResponse(req *extprocv3.ProcessingRequest) *extprocv3.ProcessingResponse {
	switch req.GetRequest().(type) {
	case *extprocv3.ProcessingRequest_RequestHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseHeaders:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}
	case *extprocv3.ProcessingRequest_RequestBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseBody:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}
	case *extprocv3.ProcessingRequest_RequestTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}
	case *extprocv3.ProcessingRequest_ResponseTrailers:
		return &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}
	}
	return nil
}

// GRPCServer is an ext_proc server on a loopback listener, with the gRPC health service Envoy
// checks it with.
type GRPCServer struct {
	// Addr is the address it listens on.
	Addr   string
	srv    *grpc.Server
	served chan error
}

// StartExtProcServer serves ep on addr (host:port on loopback, port 0 picking one, or
// unix:/path) with the given server options, reporting SERVING for every service.
func StartExtProcServer(addr string, ep extprocv3.ExternalProcessorServer, opts ...grpc.ServerOption) (*GRPCServer, error) {
	network, address := "tcp", addr
	if path, ok := config.UnixSocketPath(addr); ok {
		network, address = "unix", path
	}
	lis, err := net.Listen(network, address)
	if err != nil {
		return nil, fmt.Errorf("ext_proc server: %w", err)
	}
	s := &GRPCServer{Addr: lis.Addr().String(), srv: grpc.NewServer(opts...), served: make(chan error, 1)}
	extprocv3.RegisterExternalProcessorServer(s.srv, ep)
	hs := health.NewServer()
	hs.SetServingStatus(contract.ExtProcService(), healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s.srv, hs)
	go func() { s.served <- s.srv.Serve(lis) }()
	return s, nil
}

// Done reports the error Serve ended with, once it has.
func (s *GRPCServer) Done() <-chan error { return s.served }

// Close stops the server, cutting streams in flight.
func (s *GRPCServer) Close() {
	s.srv.Stop()
	<-s.served //nolint:errcheck // after Stop, Serve's error says only that the server stopped
}
