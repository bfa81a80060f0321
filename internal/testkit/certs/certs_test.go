package certs

import (
	"bytes"
	"crypto/x509"
	"os"
	"testing"
)

func TestMutual(t *testing.T) {
	dir := t.TempDir()
	m := NewMutual(t, dir)
	for _, c := range []struct {
		name  string
		leaf  *Leaf
		host  string
		usage x509.ExtKeyUsage
	}{
		{"server by name", m.Server, "localhost", x509.ExtKeyUsageServerAuth},
		{"server by address", m.Server, "127.0.0.1", x509.ExtKeyUsageServerAuth},
		{"client", m.Client, "", x509.ExtKeyUsageClientAuth},
	} {
		if _, err := c.leaf.Cert.Verify(x509.VerifyOptions{Roots: m.CA.Pool(), DNSName: c.host, KeyUsages: []x509.ExtKeyUsage{c.usage}}); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
	other := NewCA(t, "other")
	if _, err := m.Client.Cert.Verify(x509.VerifyOptions{Roots: other.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("a certificate verified against a CA that did not sign it")
	}
	for path, want := range map[string][]byte{m.CAFile: m.CA.PEM, m.ServerCert: m.Server.CertPEM, m.ServerKey: m.Server.KeyPEM, m.ClientCert: m.Client.CertPEM, m.ClientKey: m.Client.KeyPEM} {
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: %v, content differs: %v", path, err, !bytes.Equal(got, want))
		}
	}
	_ = m.Server.TLS(t)
	if m.Server.Cert.SerialNumber.Cmp(m.CA.Server(t, "localhost").Cert.SerialNumber) == 0 {
		t.Error("two certificates share a serial number")
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 5 {
		t.Errorf("the directory holds %d entries (%v), want the 5 files and no temporary one", len(entries), err)
	}
}
