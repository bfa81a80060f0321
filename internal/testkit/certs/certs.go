package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority that signs the certificates of a test.
type CA struct {
	Cert *x509.Certificate
	// PEM is the CA certificate, what a peer is given to trust.
	PEM []byte
	key *ecdsa.PrivateKey
}

// Leaf is a certificate signed by a CA, with its private key.
type Leaf struct {
	Cert            *x509.Certificate
	CertPEM, KeyPEM []byte
}

// Spec says what a leaf certificate is for.
type Spec struct {
	// Name is the subject's common name.
	Name string
	// Hosts are the subject alternative names: IP addresses become IP SANs, the rest DNS SANs.
	Hosts []string
	// Client makes a client certificate (extended key usage clientAuth); otherwise it is a
	// server certificate (serverAuth).
	Client bool
	// NotBefore and NotAfter bound its validity; zero values mean an hour ago and a day from
	// now.
	NotBefore, NotAfter time.Time
}

// NewCA returns a new self-signed CA named name.
func NewCA(tb testing.TB, name string) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(tb),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("creating CA %s: %v", name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Issue signs a new leaf certificate with a fresh key and serial number.
func (ca *CA) Issue(tb testing.TB, s Spec) *Leaf {
	tb.Helper()
	key := newKey(tb)
	notBefore, notAfter := s.NotBefore, s.NotAfter
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = time.Now().Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(tb),
		Subject:      pkix.Name{CommonName: s.Name},
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if s.Client {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	for _, h := range s.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.key)
	if err != nil {
		tb.Fatalf("issuing %s: %v", s.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return &Leaf{
		Cert:    cert,
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}
}

// Server issues a server certificate for hosts, such as "localhost" and "127.0.0.1".
func (ca *CA) Server(tb testing.TB, hosts ...string) *Leaf {
	tb.Helper()
	return ca.Issue(tb, Spec{Name: hosts[0], Hosts: hosts})
}

// Client issues a client certificate named name.
func (ca *CA) Client(tb testing.TB, name string) *Leaf {
	tb.Helper()
	return ca.Issue(tb, Spec{Name: name, Client: true})
}

// Pool is a pool holding the CA alone, for a peer that trusts it.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// TLS is the leaf as a crypto/tls certificate.
func (l *Leaf) TLS(tb testing.TB) tls.Certificate {
	tb.Helper()
	c, err := tls.X509KeyPair(l.CertPEM, l.KeyPEM)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// Write writes the leaf's key to keyPath, then its certificate to certPath, each atomically.
func (l *Leaf) Write(tb testing.TB, certPath, keyPath string) {
	tb.Helper()
	WriteFile(tb, keyPath, l.KeyPEM)
	WriteFile(tb, certPath, l.CertPEM)
}

// WriteFile replaces the file at path with data atomically: it writes a temporary file in the
// same directory and renames it over path, as a certificate manager does. Readers see the old
// content or the new, never a part; a directory watch sees a file moved in.
func WriteFile(tb testing.TB, path string, data []byte) {
	tb.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		tb.Fatal(err)
	}
	// CreateTemp makes the file private to this user (0600): the test's own Envoy runs as
	// the same user and reads it.
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		tb.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		tb.Fatal(err)
	}
}

// Mutual is the usual mutual TLS setup of a test, written into a directory: a CA, a server
// certificate for localhost and 127.0.0.1, and a client certificate, all of it signed by
// that CA.
type Mutual struct {
	CA             *CA
	Server, Client *Leaf
	// The files: CAFile holds the CA certificate.
	CAFile, ServerCert, ServerKey, ClientCert, ClientKey string
}

// NewMutual issues a Mutual setup and writes its files into dir as ca.pem, server.pem,
// server.key, client.pem and client.key.
func NewMutual(tb testing.TB, dir string) *Mutual {
	tb.Helper()
	ca := NewCA(tb, "partroute test CA")
	m := &Mutual{
		CA:         ca,
		Server:     ca.Server(tb, "localhost", "127.0.0.1"),
		Client:     ca.Client(tb, "envoy"),
		CAFile:     filepath.Join(dir, "ca.pem"),
		ServerCert: filepath.Join(dir, "server.pem"),
		ServerKey:  filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.pem"),
		ClientKey:  filepath.Join(dir, "client.key"),
	}
	WriteFile(tb, m.CAFile, ca.PEM)
	m.Server.Write(tb, m.ServerCert, m.ServerKey)
	m.Client.Write(tb, m.ClientCert, m.ClientKey)
	return m
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return key
}

// serial is a random 128-bit serial number, so that every certificate of a test run is told
// apart by its serial.
func serial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		tb.Fatal(err)
	}
	return n
}
