package server

import (
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/internal/certreload"
)

// extProcMessageOverhead is what an ext_proc message holds besides a request body: the
// protobuf framing of the body and Envoy's attributes and metadata, which are small. It is
// generous, so that a body of the largest maxBodyBytes always fits.
const extProcMessageOverhead = 1 << 20

// ExtProcMaxRecvBytes is the largest message the ext_proc server accepts. It follows the
// largest maxBodyBytes the configuration allows, not the one configured, so that a reload
// raising maxBodyBytes needs no restart; gRPC's own default (4 MiB) would end the stream of
// any larger body with ResourceExhausted, which Envoy, failing closed, turns into a 500.
const ExtProcMaxRecvBytes = config.MaxBodyBytesLimit + extProcMessageOverhead

// ExtProcServerOptions are the ext_proc gRPC server's options. The load test's no-op baseline
// is served with the same ones, so that a comparison differs in the handler alone.
func ExtProcServerOptions(maxConnAge time.Duration, streamWorkers int) []grpc.ServerOption {
	if streamWorkers <= 0 {
		streamWorkers = DefaultStreamWorkers
	}
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      maxConnAge,
			MaxConnectionAgeGrace: 30 * time.Second,
			Time:                  30 * time.Second,
			Timeout:               10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Responses are marshalled with go-control-plane's generated code when the binary has
		// it (build tag vtprotobuf), which is faster (docs/benchmarks.md).
		grpc.ForceServerCodecV2(extproc.NewCodec()),
		// Envoy opens a stream per HTTP request, so there are as many streams in flight as
		// requests. A stream served by a long-lived worker runs on a stack that has already grown
		// to fit the handler; a stream without a free worker gets a new goroutine, whose stack
		// is grown (copied) again for every request. Workers for every stream in flight cut the
		// server's CPU per request (docs/benchmarks.md).
		grpc.NumStreamWorkers(uint32(streamWorkers)),
		grpc.MaxRecvMsgSize(ExtProcMaxRecvBytes),
	}
}

// extProcLimitOptions bound what a client can make the ext_proc server hold, beyond
// ExtProcServerOptions: the streams of a connection, announced in its SETTINGS. gRPC also runs
// at most MaxConcurrentStreams handlers of a connection at once, and reads no more of the
// connection until one ends, which is what keeps a flood of opened-and-reset streams (rapid
// reset) from running a handler for each at once. The rest of the ext_proc limits wrap the
// handler (streamGuard).
func extProcLimitOptions(l config.ExtProcLimits) []grpc.ServerOption {
	return []grpc.ServerOption{grpc.MaxConcurrentStreams(l.MaxConcurrentStreams)}
}

// xdsServerOptions are the xDS gRPC server's. Its streams live as long as Envoy does and must
// not be cut by the ext_proc server's connection age, nor by an idle timeout: an ADS stream is
// quiet between naming changes.
func xdsServerOptions(l config.XDSLimits) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxConcurrentStreams(l.MaxConcurrentStreams),
	}
}

// withTLS adds a listener's TLS credentials to its server options; a nil Reloader leaves the
// listener plaintext.
func withTLS(opts []grpc.ServerOption, r *certreload.Reloader) []grpc.ServerOption {
	if r == nil {
		return opts
	}
	return append(opts, grpc.Creds(r.Credentials()))
}
