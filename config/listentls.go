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
	// BindNodeID, on the xDS listener only, refuses an xDS stream whose node id is not an
	// identity of the client certificate of its connection (docs/xds.md): with it, only the
	// Envoy holding a node's certificate can speak, and acknowledge, for that node. It needs
	// RequireClientCert, and is on by default with it (listen.tls.xds.nodeID).
	BindNodeID bool
}

// The values of listen.tls.xds.nodeID.
const (
	// NodeIDCertificate binds a node id to the client certificate (ServerTLS.BindNodeID).
	NodeIDCertificate = "certificate"
	// NodeIDAny lets a stream claim any node id.
	NodeIDAny = "any"
)

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
	NodeID            string `yaml:"nodeID"`
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
		return ServerTLS{Cert: abs(sf.Cert), Key: abs(sf.Key), ClientCA: abs(sf.ClientCA), RequireClientCert: sf.RequireClientCert,
			BindNodeID: parseNodeID(name, sf, p, errs, at)}
	}
	return ListenTLS{ExtProc: one("extproc", f.ExtProc), XDS: one("xds", f.XDS), Admin: one("admin", f.Admin)}
}

// parseNodeID checks listen.tls.<name>.nodeID and tells whether the listener binds node ids
// to client certificates. Only xDS streams name a node; a binding needs a certificate on every
// connection, so it needs requireClientCert, and it is what mutual TLS on xDS means unless
// nodeID says any.
func parseNodeID(name string, sf *serverTLSFile, p string, errs *Errors, at func(string) int) bool {
	f := p + ".nodeID"
	switch {
	case sf.NodeID != "" && name != "xds":
		errs.Add(f, at(f), "is only for listen.tls.xds: only xDS streams name a node")
		return false
	case sf.NodeID == "":
		return name == "xds" && sf.RequireClientCert
	case sf.NodeID == NodeIDAny:
		return false
	case sf.NodeID != NodeIDCertificate:
		errs.Add(f, at(f), "%q is not %s or %s", sf.NodeID, NodeIDCertificate, NodeIDAny)
		return false
	case !sf.RequireClientCert:
		errs.Add(f, at(f), "%s needs requireClientCert: true: a node id is bound to the client certificate every connection must present", NodeIDCertificate)
		return false
	}
	return true
}
