package config

import "path/filepath"

// ListenTLS holds the TLS settings of each listener. A listener whose ServerTLS is off (no
// certificate) serves plaintext.
type ListenTLS struct{ ExtProc, XDS, Admin ServerTLS }

// ServerTLS is how one listener serves TLS. Paths are absolute. The files are read when
// partroute starts and followed while it runs, so that a rotated certificate or client CA
// takes effect without a restart; the settings themselves take one.
type ServerTLS struct {
	// Cert and Key are the listener's certificate chain and private key, in PEM.
	Cert, Key string
	// ClientCA holds the CA certificates, in PEM, that a client certificate must chain to.
	// With it, a client that presents a certificate must present a valid one.
	ClientCA string
	// RequireClientCert refuses clients that present no certificate (mutual TLS). It needs
	// ClientCA.
	RequireClientCert bool
}

// On reports whether the listener serves TLS.
func (t ServerTLS) On() bool { return t.Cert != "" }

// listenTLSFile is the YAML shape of listen.tls.
type listenTLSFile struct {
	ExtProc *serverTLSFile `yaml:"extproc"`
	XDS     *serverTLSFile `yaml:"xds"`
	Admin   *serverTLSFile `yaml:"admin"`
}

type serverTLSFile struct {
	Cert              string `yaml:"cert"`
	Key               string `yaml:"key"`
	ClientCA          string `yaml:"clientCA"`
	RequireClientCert bool   `yaml:"requireClientCert"`
}

// parseListenTLS checks listen.tls. Only the settings are checked here: the files are read
// when the server starts (and by partroute validate), so that a reload of partroute.yaml never
// depends on the state of certificate files that are being rotated.
func parseListenTLS(f *listenTLSFile, l Listen, path string, errs *Errors, at func(string) int) ListenTLS {
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	one := func(name string, sf *serverTLSFile) ServerTLS {
		if sf == nil {
			return ServerTLS{}
		}
		p := "listen.tls." + name
		if name == "xds" && l.XDS == "" {
			errs.Add(p, at(p), "is set but listen.xds is empty: there is no xDS server to serve TLS")
		}
		switch {
		case sf.Cert == "":
			errs.Add(p+".cert", at(p), "is required: a TLS listener serves a certificate (cert) and its private key (key)")
		case sf.Key == "":
			errs.Add(p+".key", at(p), "is required with cert: the private key of the certificate")
		}
		if sf.RequireClientCert && sf.ClientCA == "" {
			errs.Add(p+".clientCA", at(p+".requireClientCert"), "is required with requireClientCert: true, to verify client certificates against")
		}
		return ServerTLS{Cert: abs(sf.Cert), Key: abs(sf.Key), ClientCA: abs(sf.ClientCA), RequireClientCert: sf.RequireClientCert}
	}
	return ListenTLS{ExtProc: one("extproc", f.ExtProc), XDS: one("xds", f.XDS), Admin: one("admin", f.Admin)}
}
