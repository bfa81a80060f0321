package server

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
)

var xdsAddr = regexp.MustCompile(`xds serving" address=(127\.0\.0\.1:\d+)`)

// withListenTLS writes the example configuration in dir with an xDS listener and the given
// listen.tls block, indented under listen.
func withListenTLS(t *testing.T, dir, tlsBlock string) string {
	t.Helper()
	path := filepath.Join(dir, "partroute.yaml")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "listen:\n", "listen:\n  xds: 127.0.0.1:0\n  tls:\n"+tlsBlock, 1)
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRunServesTLS runs partroute with every listener on TLS: mutual TLS on the ext_proc and
// xDS listeners, server TLS on the admin one. Clients without a valid certificate are refused
// and counted, never logged; a rotated certificate reaches new handshakes on every listener.
func TestRunServesTLS(t *testing.T) {
	dir := testkit.CopyExamples(t)
	m := certs.NewMutual(t, dir)
	cfgPath := withListenTLS(t, dir, `    extproc: {cert: server.pem, key: server.key, clientCA: ca.pem, requireClientCert: true}
    xds: {cert: server.pem, key: server.key, clientCA: ca.pem, requireClientCert: true}
    admin: {cert: server.pem, key: server.key}
`)
	logs := &testkit.LogBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Run(ctx, testOptions(cfgPath, 20*time.Millisecond, slog.New(slog.NewTextHandler(logs, nil))))
	}()
	defer func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Run: %v", err)
		}
		if t.Failed() {
			t.Logf("log:\n%s", logs)
		}
	}()
	var extprocAddr, adminAddr, xdsListen string
	testkit.WaitFor(t, "serve to report its addresses", 10*time.Second, func() bool {
		select {
		case err := <-served:
			served <- err
			t.Fatalf("serve returned %v before serving", err)
		default:
		}
		a, x := serveAddrs.FindStringSubmatch(logs.String()), xdsAddr.FindStringSubmatch(logs.String())
		if a == nil || x == nil {
			return false
		}
		extprocAddr, adminAddr, xdsListen = a[1], a[2], x[1]
		return true
	})

	clientCert := m.Client.TLS(t)
	// handshake connects to addr with the client certificate (none when nil), reads the first
	// bytes the server sends (a gRPC server's settings; for the admin listener, the answer to
	// a request) and returns the serial of the server's certificate. In TLS 1.3 a refused
	// client certificate shows on that read.
	handshake := func(addr string, cert *tls.Certificate, alpn string) (*big.Int, error) {
		cfg := &tls.Config{RootCAs: m.CA.Pool(), ServerName: "localhost", NextProtos: []string{alpn}}
		if cert != nil {
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		c, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if alpn == "http/1.1" {
			if _, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"); err != nil {
				return nil, err
			}
		}
		if _, err := bufio.NewReader(c).ReadByte(); err != nil {
			return nil, err
		}
		return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	for _, l := range []struct{ name, addr, alpn string }{{"extproc", extprocAddr, "h2"}, {"xds", xdsListen, "h2"}} {
		if _, err := handshake(l.addr, &clientCert, l.alpn); err != nil {
			t.Errorf("%s: a client with a valid certificate was refused: %v", l.name, err)
		}
		if _, err := handshake(l.addr, nil, l.alpn); err == nil {
			t.Errorf("%s: a client without a certificate was served", l.name)
		}
	}

	// The gRPC health service over mutual TLS, as Envoy's health check reaches it.
	conn, err := grpc.NewClient(extprocAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: m.CA.Pool(), ServerName: "localhost", Certificates: []tls.Certificate{clientCert},
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if resp, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health over mutual TLS: %v %v", resp.GetStatus(), err)
	}

	// The admin listener serves TLS without asking for a client certificate.
	httpsc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.CA.Pool(), ServerName: "localhost"}}}
	get := func(path string) string {
		resp, err := httpsc.Get("https://" + adminAddr + path)
		if err != nil {
			t.Fatalf("GET %s over TLS: %v", path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := get("/readyz"); got != "ready\n" {
		t.Errorf("/readyz over TLS: %q", got)
	}
	if resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + adminAddr + "/readyz"); err == nil {
		resp.Body.Close()
		t.Errorf("the TLS admin listener answered plaintext HTTP with %s", resp.Status)
	}
	testkit.WaitFor(t, "the failed handshakes to be counted", 5*time.Second, func() bool {
		metrics := get("/metrics")
		for _, series := range []string{
			`partroute_tls_handshake_failures_total{listener="extproc",reason="no_client_certificate"} 1`,
			`partroute_tls_handshake_failures_total{listener="xds",reason="no_client_certificate"} 1`,
			`partroute_tls_handshake_failures_total{listener="admin",reason="not_tls"} 1`,
			`partroute_tls_reloads_total{listener="admin",result="ok"} 0`,
		} {
			if !strings.Contains(metrics, series+"\n") {
				return false
			}
		}
		return true
	})

	// A rotation reaches new handshakes on every listener.
	next := m.CA.Server(t, "localhost", "127.0.0.1")
	next.Write(t, m.ServerCert, m.ServerKey)
	for _, l := range []struct{ name, addr, alpn string }{{"extproc", extprocAddr, "h2"}, {"xds", xdsListen, "h2"}, {"admin", adminAddr, "http/1.1"}} {
		testkit.WaitFor(t, l.name+" to serve the new certificate", 10*time.Second, func() bool {
			serial, err := handshake(l.addr, &clientCert, l.alpn)
			return err == nil && serial.Cmp(next.Cert.SerialNumber) == 0
		})
	}
	// The established gRPC connection still serves.
	if _, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Errorf("health on the connection established before the rotation: %v", err)
	}
	if strings.Contains(strings.ToLower(logs.String()), "handshake") {
		t.Errorf("a handshake failure was logged:\n%s", logs)
	}
}

// TestRunRefusesTLSFilesThatDoNotLoad: a listener's certificate that cannot be read, or a
// client CA that holds no certificate, keeps partroute from starting, with an error at the
// field, as partroute serve prints the configuration's other problems.
func TestRunRefusesTLSFilesThatDoNotLoad(t *testing.T) {
	dir := testkit.CopyExamples(t)
	certs.NewMutual(t, dir)
	certs.WriteFile(t, filepath.Join(dir, "empty.pem"), []byte("\n"))
	cfgPath := withListenTLS(t, dir, `    extproc: {cert: missing.pem, key: server.key}
    admin: {cert: server.pem, key: server.key, clientCA: empty.pem}
`)
	err := Run(context.Background(), testOptions(cfgPath, time.Hour, slog.New(slog.DiscardHandler)))
	errs, ok := errors.AsType[*config.Errors](err)
	if !ok {
		t.Fatalf("Run: %v (%T), want *config.Errors", err, err)
	}
	if errs.File != cfgPath || len(errs.List) != 2 {
		t.Fatalf("errors of %s: %v", errs.File, err)
	}
	for i, want := range []struct{ path, fragment string }{
		{"listen.tls.extproc.cert", filepath.Join(dir, "missing.pem") + ": cannot read it"},
		{"listen.tls.admin.clientCA", filepath.Join(dir, "empty.pem") + ": holds no PEM certificate"},
	} {
		if got := errs.List[i]; got.Path != want.path || !strings.Contains(got.Message, want.fragment) {
			t.Errorf("error %d: %s, want %s: ...%s...", i, got.Error(), want.path, want.fragment)
		}
	}
}
