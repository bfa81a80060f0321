package certreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
)

// TestCredentials serves gRPC with the Reloader's credentials: a client with a valid
// certificate is served, the others are refused at the handshake and counted.
func TestCredentials(t *testing.T) {
	m := certs.NewMutual(t, t.TempDir())
	log := &testkit.LogBuffer{}
	r, err := New("xds", Files{Cert: m.ServerCert, Key: m.ServerKey, ClientCA: m.CAFile, RequireClientCert: true},
		nil, NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(grpc.Creds(r.Credentials()))
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()

	check := func(creds credentials.TransportCredentials) error {
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	}
	withCert := func(leaf *certs.Leaf) credentials.TransportCredentials {
		cfg := &tls.Config{RootCAs: m.CA.Pool(), ServerName: "localhost"}
		if leaf != nil {
			c := leaf.TLS(t)
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		}
		return credentials.NewTLS(cfg)
	}
	failures := func(reason string) float64 {
		return testutil.ToFloat64(r.metrics.failures.WithLabelValues("xds", reason))
	}

	if err := check(withCert(m.Client)); err != nil {
		t.Fatalf("a client with a valid certificate was refused: %v", err)
	}
	for _, c := range []struct {
		name, reason string
		creds        credentials.TransportCredentials
	}{
		{"no certificate", ReasonNoClientCertificate, withCert(nil)},
		{"another CA's certificate", ReasonUnknownAuthority, withCert(certs.NewCA(t, "untrusted").Client(t, "intruder"))},
		{"plaintext", ReasonNotTLS, insecure.NewCredentials()},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := failures(c.reason)
			if err := check(c.creds); err == nil {
				t.Fatal("the call succeeded")
			}
			testkit.WaitFor(t, c.reason+" counted", 5*time.Second, func() bool { return failures(c.reason) > before })
		})
	}
	// The clone gRPC may take of the credentials counts too.
	if _, ok := r.Credentials().Clone().(*countingCreds); !ok {
		t.Error("a clone of the credentials does not count handshake failures")
	}
	if log.String() != "" {
		t.Errorf("handshake failures were logged:\n%s", log.String())
	}
}

func TestHandshakeReason(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		want string
	}{
		{"no client certificate", fmt.Errorf("handshake: %w", errNoClientCertificate), ReasonNoClientCertificate},
		{"unknown authority", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}, ReasonUnknownAuthority},
		{"expired", &tls.CertificateVerificationError{Err: x509.CertificateInvalidError{Reason: x509.Expired}}, ReasonBadCertificate},
		{"not TLS", tls.RecordHeaderError{Msg: "first record does not look like a TLS handshake"}, ReasonNotTLS},
		{"end of file", io.EOF, ReasonOther},
		{"a message that only reads like a reason", errors.New("unknown authority: no client certificate"), ReasonOther},
	} {
		if got := handshakeReason(c.err); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
