package certreload

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
)

// fixture is a Reloader on a Mutual setup, served by an echo server over its Listener.
type fixture struct {
	t    *testing.T
	m    *certs.Mutual
	r    *Reloader
	log  *testkit.LogBuffer
	addr string
}

func newFixture(t *testing.T, require bool) *fixture {
	t.Helper()
	m := certs.NewMutual(t, t.TempDir())
	log := &testkit.LogBuffer{}
	r, err := New("extproc", Files{Cert: m.ServerCert, Key: m.ServerKey, ClientCA: m.CAFile, RequireClientCert: require},
		nil, NewMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := r.Listener(lis)
	t.Cleanup(func() { tl.Close() })
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := io.WriteString(c, "hello\n"); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return &fixture{t: t, m: m, r: r, log: log, addr: lis.Addr().String()}
}

// dial connects with the client certificate given (none when nil), reads the greeting and
// returns the connection and the serial of the server's certificate.
func (f *fixture) dial(client *certs.Leaf) (*tls.Conn, *big.Int, error) {
	cfg := &tls.Config{RootCAs: f.m.CA.Pool(), ServerName: "localhost"}
	if client != nil {
		c := client.TLS(f.t)
		// Go's client sends a certificate from Certificates only when it chains to one of
		// the CAs the server names; a client that sends its certificate anyway is the case
		// to test.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
	}
	c, err := tls.Dial("tcp", f.addr, cfg)
	if err != nil {
		return nil, nil, err
	}
	// In TLS 1.3 the server judges the client certificate after the client has finished its
	// handshake: a refusal shows on the first read.
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "hello\n" {
		c.Close()
		return nil, nil, errors.Join(errors.New("no greeting"), err)
	}
	return c, c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

func (f *fixture) mustDial() (*tls.Conn, *big.Int) {
	f.t.Helper()
	c, serial, err := f.dial(f.m.Client)
	if err != nil {
		f.t.Fatalf("a client with a valid certificate was refused: %v", err)
	}
	f.t.Cleanup(func() { c.Close() })
	return c, serial
}

func (f *fixture) reloads(result string) float64 {
	return testutil.ToFloat64(f.r.metrics.reloads.WithLabelValues("extproc", result))
}

func (f *fixture) failures(reason string) float64 {
	return testutil.ToFloat64(f.r.metrics.failures.WithLabelValues("extproc", reason))
}

func echo(t *testing.T, c *tls.Conn) {
	t.Helper()
	if _, err := io.WriteString(c, "ping\n"); err != nil {
		t.Fatalf("an established connection no longer writes: %v", err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || line != "ping\n" {
		t.Fatalf("an established connection no longer echoes: %q %v", line, err)
	}
}

func TestRotation(t *testing.T) {
	f := newFixture(t, true)
	established, first := f.mustDial()
	if first.Cmp(f.m.Server.Cert.SerialNumber) != 0 {
		t.Fatalf("serial %X, want the server certificate's %X", first, f.m.Server.Cert.SerialNumber)
	}
	f.r.poll()
	if f.reloads("ok") != 0 {
		t.Errorf("a poll that found nothing new counted a reload")
	}

	next := f.m.CA.Server(t, "localhost", "127.0.0.1")
	next.Write(t, f.m.ServerCert, f.m.ServerKey)
	f.r.poll()
	_, got := f.mustDial()
	if got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("after the rotation a new handshake got serial %X, want the new certificate's %X", got, next.Cert.SerialNumber)
	}
	if established.ConnectionState().PeerCertificates[0].SerialNumber.Cmp(first) != 0 {
		t.Error("the established connection's certificate changed")
	}
	echo(t, established)
	if f.reloads("ok") != 1 || f.reloads("error") != 0 {
		t.Errorf("reloads ok %v error %v, want 1 and 0", f.reloads("ok"), f.reloads("error"))
	}
	if n := strings.Count(f.log.String(), "TLS files reloaded"); n != 1 {
		t.Errorf("%d reload lines, want 1:\n%s", n, f.log.String())
	}
}

func TestBadFileKeepsTheCertificate(t *testing.T) {
	f := newFixture(t, true)
	_, first := f.mustDial()
	certs.WriteFile(t, f.m.ServerCert, []byte("not a certificate\n"))
	f.r.poll()
	if f.reloads("error") != 0 {
		t.Errorf("bad content was reported at the first poll that saw it; it is looked at again first")
	}
	for range 5 {
		f.r.poll()
	}
	if _, got := f.mustDial(); got.Cmp(first) != 0 {
		t.Errorf("a handshake after the bad file got serial %X, want the old %X", got, first)
	}
	if f.reloads("error") != 1 || f.reloads("ok") != 0 {
		t.Errorf("reloads error %v ok %v, want 1 and 0: once per bad content", f.reloads("error"), f.reloads("ok"))
	}
	if n := strings.Count(f.log.String(), "TLS files rejected"); n != 1 || !strings.Contains(f.log.String(), "holds no PEM certificate") {
		t.Errorf("%d rejection lines, want 1 saying why:\n%s", n, f.log.String())
	}

	// Other bad content is news: counted and logged again.
	other := f.m.CA.Server(t, "localhost")
	certs.WriteFile(t, f.m.ServerCert, other.CertPEM) // the key is still the old one
	f.r.poll()
	f.r.poll()
	if f.reloads("error") != 2 || !strings.Contains(f.log.String(), "is not the private key of the certificate") {
		t.Errorf("reloads error %v, want 2, and a line naming the key:\n%s", f.reloads("error"), f.log.String())
	}

	// A removed file is bad content too.
	if err := os.Remove(f.m.ServerKey); err != nil {
		t.Fatal(err)
	}
	f.r.poll()
	f.r.poll()
	if f.reloads("error") != 3 || !strings.Contains(f.log.String(), "cannot read it") {
		t.Errorf("reloads error %v, want 3, and a line saying the key cannot be read:\n%s", f.reloads("error"), f.log.String())
	}

	// The fix is served.
	certs.WriteFile(t, f.m.ServerKey, other.KeyPEM)
	f.r.poll()
	if _, got := f.mustDial(); got.Cmp(other.Cert.SerialNumber) != 0 {
		t.Errorf("after the fix a handshake got serial %X, want %X", got, other.Cert.SerialNumber)
	}
	if f.reloads("ok") != 1 {
		t.Errorf("reloads ok %v, want 1", f.reloads("ok"))
	}
}

// TestPairBetweenWrites: a poll that falls between the writes of the key and the certificate
// sees a pair that does not match; the next poll sees the whole rotation, and nothing is
// reported.
func TestPairBetweenWrites(t *testing.T) {
	f := newFixture(t, true)
	next := f.m.CA.Server(t, "localhost", "127.0.0.1")
	certs.WriteFile(t, f.m.ServerKey, next.KeyPEM)
	f.r.poll()
	certs.WriteFile(t, f.m.ServerCert, next.CertPEM)
	f.r.poll()
	if _, got := f.mustDial(); got.Cmp(next.Cert.SerialNumber) != 0 {
		t.Errorf("serial %X, want the new certificate's %X", got, next.Cert.SerialNumber)
	}
	if f.reloads("error") != 0 || f.reloads("ok") != 1 || strings.Contains(f.log.String(), "rejected") {
		t.Errorf("reloads error %v ok %v, want 0 and 1, and no rejection:\n%s", f.reloads("error"), f.reloads("ok"), f.log.String())
	}
}

func TestClientCARotation(t *testing.T) {
	f := newFixture(t, true)
	newCA := certs.NewCA(t, "next client CA")
	newClient := newCA.Client(t, "envoy")
	if _, _, err := f.dial(newClient); err == nil {
		t.Fatal("a client certificate of a CA not yet trusted was accepted")
	}
	certs.WriteFile(t, f.m.CAFile, newCA.PEM)
	f.r.poll()
	if _, _, err := f.dial(newClient); err != nil {
		t.Errorf("after the client CA rotated, its client was refused: %v", err)
	}
	if _, _, err := f.dial(f.m.Client); err == nil {
		t.Error("after the client CA rotated, a client of the old CA was still accepted")
	}
}

func TestHandshakeFailureReasons(t *testing.T) {
	f := newFixture(t, true)
	untrusted := certs.NewCA(t, "untrusted").Client(t, "intruder")
	expired := f.m.CA.Issue(t, certs.Spec{Name: "envoy", Client: true, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	serverOnly := f.m.CA.Server(t, "envoy") // not for client authentication
	raw := func(send string) func() error {
		return func() error {
			c, err := net.Dial("tcp", f.addr)
			if err != nil {
				return err
			}
			defer c.Close()
			if send != "" {
				if _, err := io.WriteString(c, send); err != nil {
					return err
				}
			}
			if tc, ok := c.(*net.TCPConn); ok && send == "" {
				return tc.CloseWrite()
			}
			_, err = io.ReadAll(c)
			return err
		}
	}
	tlsClient := func(client *certs.Leaf) func() error {
		return func() error {
			c, _, err := f.dial(client)
			if err == nil {
				c.Close()
				return errors.New("the handshake succeeded")
			}
			return nil
		}
	}
	for _, c := range []struct {
		name, reason string
		try          func() error
	}{
		{"no client certificate", ReasonNoClientCertificate, tlsClient(nil)},
		{"a certificate of another CA", ReasonUnknownAuthority, tlsClient(untrusted)},
		{"an expired certificate", ReasonBadCertificate, tlsClient(expired)},
		{"a certificate not for clients", ReasonBadCertificate, tlsClient(serverOnly)},
		{"plaintext HTTP/2", ReasonNotTLS, raw("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")},
		{"a connection closed at once", ReasonOther, raw("")},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := map[string]float64{}
			for _, r := range reasons {
				before[r] = f.failures(r)
			}
			if err := c.try(); err != nil {
				t.Fatal(err)
			}
			// The server counts once its side of the handshake has ended, which the client
			// may see first.
			testkit.WaitFor(t, c.reason+" counted", 5*time.Second, func() bool { return f.failures(c.reason) == before[c.reason]+1 })
			for _, r := range reasons {
				if want := before[r] + map[bool]float64{true: 1}[r == c.reason]; f.failures(r) != want {
					t.Errorf("%s: %v, want %v", r, f.failures(r), want)
				}
			}
		})
	}
	if strings.Contains(f.log.String(), "handshake") {
		t.Errorf("handshake failures were logged:\n%s", f.log.String())
	}
}

// TestClientCertOptional: with a client CA and no requirement, a client without a certificate
// is served and one with a bad certificate is not.
func TestClientCertOptional(t *testing.T) {
	f := newFixture(t, false)
	if _, _, err := f.dial(nil); err != nil {
		t.Errorf("a client without a certificate was refused: %v", err)
	}
	if _, _, err := f.dial(certs.NewCA(t, "untrusted").Client(t, "x")); err == nil {
		t.Error("a client certificate of another CA was accepted")
	}
}

func TestNewErrors(t *testing.T) {
	dir := t.TempDir()
	m := certs.NewMutual(t, dir)
	garbage := filepath.Join(dir, "garbage.pem")
	certs.WriteFile(t, garbage, []byte("-----BEGIN NOTHING-----\n"))
	missing := filepath.Join(dir, "missing.pem")
	for _, c := range []struct {
		name     string
		files    Files
		field    string
		fragment string
	}{
		{"missing certificate", Files{Cert: missing, Key: m.ServerKey}, FieldCert, "cannot read it"},
		{"missing key", Files{Cert: m.ServerCert, Key: missing}, FieldKey, "cannot read it"},
		{"certificate not PEM", Files{Cert: garbage, Key: m.ServerKey}, FieldCert, "holds no PEM certificate"},
		{"key of another certificate", Files{Cert: m.ServerCert, Key: m.ClientKey}, FieldKey, "is not the private key of the certificate in " + m.ServerCert},
		{"key not PEM", Files{Cert: m.ServerCert, Key: garbage}, FieldKey, "is not the private key"},
		{"client CA not PEM", Files{Cert: m.ServerCert, Key: m.ServerKey, ClientCA: garbage}, FieldClientCA, "holds no PEM certificate"},
		{"missing client CA", Files{Cert: m.ServerCert, Key: m.ServerKey, ClientCA: missing}, FieldClientCA, "cannot read it"},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := Check(c.files)
			fe, ok := errors.AsType[*FileError](err)
			if !ok {
				t.Fatalf("error %v (%T) is not a *FileError", err, err)
			}
			if fe.Field != c.field || !strings.Contains(fe.Error(), c.fragment) {
				t.Errorf("field %s error %q, want field %s and a message containing %q", fe.Field, fe.Error(), c.field, c.fragment)
			}
		})
	}
	if err := Check(Files{Cert: m.ServerCert, Key: m.ServerKey, ClientCA: m.CAFile, RequireClientCert: true}); err != nil {
		t.Errorf("valid files: %v", err)
	}
}

func TestWatch(t *testing.T) {
	f := newFixture(t, true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.r.Watch(ctx, 10*time.Millisecond); close(done) }()
	next := f.m.CA.Server(t, "localhost")
	next.Write(t, f.m.ServerCert, f.m.ServerKey)
	testkit.WaitFor(t, "the rotation to be served", 5*time.Second, func() bool {
		return f.r.current.Load().Certificates[0].Leaf.SerialNumber.Cmp(next.Cert.SerialNumber) == 0
	})
	cancel()
	<-done
}
