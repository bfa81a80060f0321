package servicefabric

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"math/big"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testPKI is a certificate authority with a gateway certificate and a client certificate it
// signed, written as PEM files the way an operator would hand them to partroute.
type testPKI struct {
	caFile, certFile, keyFile string
	caPool                    *x509.CertPool
	server                    tls.Certificate
	// serverThumbprint is the SHA-1 of the gateway certificate, as Service Fabric shows it.
	serverThumbprint string
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "partroute test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage, ips []net.IP, dns []string) ([]byte, *ecdsa.PrivateKey) {
		key := newKey(t)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: ips, DNSNames: dns,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		return der, key
	}
	srvDER, srvKey := issue(2, "mycluster.example", x509.ExtKeyUsageServerAuth, []net.IP{net.ParseIP("127.0.0.1")}, []string{"mycluster.example"})
	cliDER, cliKey := issue(3, "partroute", x509.ExtKeyUsageClientAuth, nil, nil)

	p := &testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "client.pem"), keyFile: filepath.Join(dir, "client.key")}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	writePEM(t, p.certFile, "CERTIFICATE", cliDER)
	keyDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, p.keyFile, "EC PRIVATE KEY", keyDER)
	p.caPool = x509.NewCertPool()
	p.caPool.AddCert(ca)
	p.server = tls.Certificate{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}
	sum := sha1.Sum(srvDER)
	p.serverThumbprint = strings.ToUpper(hex.EncodeToString(sum[:]))
	return p
}

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// newTLSGateway starts a fake gateway over TLS that, like a secure cluster, admits only clients
// presenting a certificate its CA signed.
func newTLSGateway(t *testing.T, p *testPKI) (*fakeGateway, *httptest.Server) {
	t.Helper()
	g := &fakeGateway{t: t, routes: map[string][]reply{}, served: map[string]int{}}
	g.standard()
	srv := httptest.NewUnstartedServer(g)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{p.server}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: p.caPool, MinVersion: tls.VersionTLS12}
	// The handshakes the test makes fail on purpose; their log lines are noise.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return g, srv
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	gw, srv := newTLSGateway(t, p)
	// Service Fabric Explorer shows thumbprints in capitals; the portal and certificate stores
	// show them in other cases and with separators. All of them pin the same certificate.
	spaced := strings.ToLower(p.serverThumbprint[:20]) + " " + p.serverThumbprint[20:]
	wrong := strings.Repeat("AB", 20)

	for _, tc := range []struct {
		name string
		tls  TLSOptions
		// want is "" for success, or what the error must say.
		want string
	}{
		{"client certificate and CA", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile}, ""},
		{"client certificate and thumbprint", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, ServerThumbprint: p.serverThumbprint}, ""},
		{"thumbprint in another case with a space", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, ServerThumbprint: spaced}, ""},
		{"one of two thumbprints", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, ServerThumbprint: wrong + ", " + p.serverThumbprint}, ""},
		{"CA and thumbprint", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile, ServerThumbprint: p.serverThumbprint}, ""},
		{"wrong thumbprint", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, ServerThumbprint: wrong}, "is not the pinned serverThumbprint"},
		{"CA right but thumbprint wrong", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile, ServerThumbprint: wrong}, "is not the pinned serverThumbprint"},
		{"no client certificate", TLSOptions{CAFile: p.caFile}, "certificate required"},
		{"unknown CA", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile}, "certificate signed by unknown authority"},
		{"CA but another server name", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile, ServerName: "other.example"}, "certificate is valid for mycluster.example"},
		{"CA and the certificate's server name", TLSOptions{CertFile: p.certFile, KeyFile: p.keyFile, CAFile: p.caFile, ServerName: "mycluster.example"}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, w := testClient(t, srv.URL, nil, func(o *ClientOptions) { o.TLS = tc.tls })
			before := len(gw.requests("/"))
			res, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
			if tc.want == "" {
				if err != nil {
					t.Fatalf("ResolvePartition over TLS: %v", err)
				}
				if res.Partition.ID != users0 {
					t.Errorf("id %s", res.Partition.ID)
				}
				return
			}
			var ge *GatewayError
			if !errors.As(err, &ge) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want a *GatewayError saying %q", err, tc.want)
			}
			// A handshake refused for a certificate would be refused again: no retry.
			if ge.Attempts != 1 || len(w.list()) != 0 || ge.Temporary() {
				t.Errorf("attempts %d, waits %v, temporary %v", ge.Attempts, w.list(), ge.Temporary())
			}
			if n := len(gw.requests("/")) - before; n != 0 {
				t.Errorf("%d requests reached the gateway", n)
			}
			var pin *ThumbprintError
			if strings.Contains(tc.want, "pinned") && (!errors.As(err, &pin) || pin.Got != p.serverThumbprint) {
				t.Errorf("error %v, want a *ThumbprintError naming %s", err, p.serverThumbprint)
			}
		})
	}
}

func TestParseThumbprints(t *testing.T) {
	const a = "5F3660C715EBBDA31DB1FFDCF508302348DE8E7A"
	good := []string{a, strings.ToLower(a), "5F:36:60:C7:15:EB:BD:A3:1D:B1:FF:DC:F5:08:30:23:48:DE:8E:7A", "5f3660c715ebbda31db1 ffdcf508302348de8e7a", a + "," + a}
	for _, s := range good {
		if got, err := parseThumbprints(s); err != nil || len(got) == 0 || strings.ToUpper(hex.EncodeToString(got[0][:])) != a {
			t.Errorf("parseThumbprints(%q) = %x, %v", s, got, err)
		}
	}
	// The last one carries an invisible left-to-right mark, which copying a thumbprint out of
	// the Windows certificate dialog is known to add.
	for _, s := range []string{"", "5F3660", a + "00", "ZZ3660C715EBBDA31DB1FFDCF508302348DE8E7A", a + ",", "\u200e" + a} {
		if got, err := parseThumbprints(s); err == nil {
			t.Errorf("parseThumbprints(%q) = %x, want an error", s, got)
		}
	}
}
