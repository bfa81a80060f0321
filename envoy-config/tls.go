package envoyconfig

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"
)

// Names of the TLS pieces of the bootstrap: the secrets Envoy loads over SDS from files, and
// those files, which SecretFiles writes into UpstreamTLS.SecretDir.
const (
	// ClientCertificateSecret is Envoy's client certificate and key, presented to partroute.
	ClientCertificateSecret = "partroute_client_certificate"
	// ValidationContextSecret is the CA that partroute's server certificate must chain to.
	ValidationContextSecret = "partroute_validation_context"
	// ClientCertificateSDSFile and ValidationContextSDSFile are the SDS files, in SecretDir,
	// that hold those secrets.
	ClientCertificateSDSFile = "partroute-client-certificate.sds.yaml"
	ValidationContextSDSFile = "partroute-validation-context.sds.yaml"

	tlsTransportSocketName = "envoy.transport_sockets.tls"
	// grpcALPN is what Envoy offers partroute's gRPC servers, which refuse a TLS connection
	// that does not negotiate HTTP/2.
	grpcALPN = "h2"
)

// UpstreamTLS makes Envoy reach partroute's ext_proc and xDS servers over TLS: it verifies
// partroute's certificate against CAFile and ServerName, and presents its own certificate
// (mutual TLS) when CertFile and KeyFile are set. One setting serves both clusters, so the
// ext_proc and xDS listeners of partroute serve certificates valid for the same name.
//
// Envoy reads the certificate files through SDS from files (SecretFiles), not from the
// bootstrap itself: only secrets delivered by SDS are reloaded when their files change, so
// Envoy rotates its certificate, key and CA by itself when they are replaced by a rename (a
// file moved into their directory).
type UpstreamTLS struct {
	// CertFile and KeyFile are Envoy's client certificate chain and private key, in PEM.
	// Both or neither: without them Envoy presents no certificate.
	CertFile, KeyFile string
	// CAFile holds the CA certificates, in PEM, that partroute's certificate must chain to.
	// Required.
	CAFile string
	// ServerName is the name partroute's certificate must hold among its subject alternative
	// names: a DNS name, which Envoy also sends as SNI, or an IP address (an IP SAN, no SNI).
	// Required.
	ServerName string
	// SecretDir is the directory of the SDS files that SecretFiles returns. Required.
	SecretDir string
}

// check reports what is missing or wrong in t. Paths are absolute: Envoy resolves a relative
// one against its own working directory, which is seldom that of the generator.
func (t *UpstreamTLS) check() error {
	var errs []error
	if t.CAFile == "" {
		errs = append(errs, errors.New("a CA file is required to verify partroute's certificate"))
	}
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, errors.New("a client certificate for Envoy needs both its certificate and its key file"))
	}
	if t.ServerName == "" {
		errs = append(errs, errors.New("a server name is required: the name partroute's certificate holds"))
	}
	for _, p := range []struct{ what, path string }{{"certificate", t.CertFile}, {"key", t.KeyFile}, {"CA", t.CAFile}, {"SDS directory", t.SecretDir}} {
		if p.path != "" && !filepath.IsAbs(p.path) {
			errs = append(errs, fmt.Errorf("the %s path %q is not absolute", p.what, p.path))
		}
	}
	if t.SecretDir == "" {
		errs = append(errs, errors.New("a directory for the SDS files is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("envoy bootstrap: tls: %w", err)
	}
	return nil
}

// transportSocket is the TLS transport socket of partroute's own clusters, or nil without TLS.
func (t *UpstreamTLS) transportSocket() *corev3.TransportSocket {
	if t == nil {
		return nil
	}
	san := &tlsv3.SubjectAltNameMatcher{
		SanType: tlsv3.SubjectAltNameMatcher_DNS,
		Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: t.ServerName}},
	}
	sni := t.ServerName
	if net.ParseIP(t.ServerName) != nil {
		san.SanType, sni = tlsv3.SubjectAltNameMatcher_IP_ADDRESS, ""
	}
	common := &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{grpcALPN},
		// The name to verify stays in the bootstrap, where it can be read; the CA comes
		// from its SDS file, which Envoy follows.
		ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext: &tlsv3.CertificateValidationContext{MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{san}},
			ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{
				Name:      ValidationContextSecret,
				SdsConfig: sdsFileSource(filepath.Join(t.SecretDir, ValidationContextSDSFile)),
			},
		}},
	}
	if t.CertFile != "" {
		common.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{
			Name:      ClientCertificateSecret,
			SdsConfig: sdsFileSource(filepath.Join(t.SecretDir, ClientCertificateSDSFile)),
		}}
	}
	return &corev3.TransportSocket{
		Name:       tlsTransportSocketName,
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: common})},
	}
}

// sdsFileSource reads a secret from an SDS file. Envoy watches the file for a rename onto it,
// and the directories of the certificate files the secret names for renames into them.
func sdsFileSource(path string) *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: path}},
	}
}

// SecretFile is an SDS file of the bootstrap: its path and content.
type SecretFile struct {
	Path string
	Data []byte
}

// SecretFiles returns the SDS files a bootstrap with t refers to: the validation context
// (CAFile) and, with a client certificate, the certificate and key. Each holds one secret that
// names the files by path; write them with WriteSecretFiles, or as they are, before Envoy
// starts.
func SecretFiles(t *UpstreamTLS) ([]SecretFile, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	file := func(name string, s *tlsv3.Secret) (SecretFile, error) {
		if err := s.ValidateAll(); err != nil {
			return SecretFile{}, fmt.Errorf("envoy bootstrap: tls: secret %s: %w", s.GetName(), err)
		}
		a, err := anypb.New(s)
		if err != nil {
			return SecretFile{}, fmt.Errorf("envoy bootstrap: tls: %w", err)
		}
		j, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(&discoveryv3.DiscoveryResponse{Resources: []*anypb.Any{a}})
		if err != nil {
			return SecretFile{}, fmt.Errorf("envoy bootstrap: tls: %w", err)
		}
		y, err := yaml.JSONToYAML(j)
		if err != nil {
			return SecretFile{}, fmt.Errorf("envoy bootstrap: tls: %w", err)
		}
		return SecretFile{Path: filepath.Join(t.SecretDir, name), Data: append([]byte(sdsFileHeader), y...)}, nil
	}
	fileOf := func(p string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: p}}
	}
	validation, err := file(ValidationContextSDSFile, &tlsv3.Secret{
		Name: ValidationContextSecret,
		Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{TrustedCa: fileOf(t.CAFile)}},
	})
	if err != nil {
		return nil, err
	}
	out := []SecretFile{validation}
	if t.CertFile != "" {
		cert, err := file(ClientCertificateSDSFile, &tlsv3.Secret{
			Name: ClientCertificateSecret,
			Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{CertificateChain: fileOf(t.CertFile), PrivateKey: fileOf(t.KeyFile)}},
		})
		if err != nil {
			return nil, err
		}
		out = append(out, cert)
	}
	return out, nil
}

// sdsFileHeader opens every SDS file, for whoever finds one beside a bootstrap.
const sdsFileHeader = "# An SDS file of the Envoy bootstrap partroute envoy-bootstrap writes: the secret names\n" +
	"# the certificate files by path, and Envoy reloads them when they are replaced by a rename.\n"

// WriteSecretFiles writes the SDS files of t, each atomically (a rename onto the file, which is
// what Envoy watches for). They hold paths, not keys: they are world-readable, as the
// bootstrap is.
func WriteSecretFiles(t *UpstreamTLS) error {
	files, err := SecretFiles(t)
	if err != nil {
		return err
	}
	for _, f := range files {
		tmp, err := os.CreateTemp(filepath.Dir(f.Path), "."+filepath.Base(f.Path)+".*")
		if err != nil {
			return err
		}
		_, werr := tmp.Write(f.Data)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o644)); err != nil { //nolint:gosec // see above
			_ = os.Remove(tmp.Name())
			return err
		}
		if err := os.Rename(tmp.Name(), f.Path); err != nil {
			_ = os.Remove(tmp.Name())
			return err
		}
	}
	return nil
}
