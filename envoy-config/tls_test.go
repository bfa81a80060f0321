package envoyconfig

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/partroute/partroute/internal/testkit/example"
)

func testUpstreamTLS() *UpstreamTLS {
	return &UpstreamTLS{
		CertFile: "/etc/envoy/tls/envoy.pem", KeyFile: "/etc/envoy/tls/envoy.key",
		CAFile: "/etc/envoy/tls/ca.pem", ServerName: "partroute.internal", SecretDir: "/etc/envoy/sds",
	}
}

// upstreamContext returns the UpstreamTlsContext of a cluster, failing when it has none.
func upstreamContext(t *testing.T, b *clusterv3.Cluster) *tlsv3.UpstreamTlsContext {
	t.Helper()
	ts := b.GetTransportSocket()
	if ts.GetName() != "envoy.transport_sockets.tls" {
		t.Fatalf("cluster %s: transport socket %q, want envoy.transport_sockets.tls", b.GetName(), ts.GetName())
	}
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	return ctx
}

func TestBootstrapTLS(t *testing.T) {
	cfg, view := example.Load(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{TLS: testUpstreamTLS(), XDSAddress: "127.0.0.1:18000"}))
	for _, name := range []string{ExtProcCluster, XDSCluster} {
		ctx := upstreamContext(t, p.clusters[name])
		if ctx.GetSni() != "partroute.internal" {
			t.Errorf("%s: SNI %q", name, ctx.GetSni())
		}
		common := ctx.GetCommonTlsContext()
		if !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}) {
			t.Errorf("%s: ALPN %v, want h2: partroute's gRPC servers refuse TLS without it", name, common.GetAlpnProtocols())
		}
		certs := common.GetTlsCertificateSdsSecretConfigs()
		if len(certs) != 1 || certs[0].GetName() != ClientCertificateSecret ||
			certs[0].GetSdsConfig().GetPathConfigSource().GetPath() != "/etc/envoy/sds/"+ClientCertificateSDSFile {
			t.Errorf("%s: client certificate %v, want the SDS file of %s", name, certs, ClientCertificateSecret)
		}
		combined := common.GetCombinedValidationContext()
		sans := combined.GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
		if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_DNS || sans[0].GetMatcher().GetExact() != "partroute.internal" {
			t.Errorf("%s: SAN matchers %v, want DNS partroute.internal", name, sans)
		}
		if v := combined.GetValidationContextSdsSecretConfig(); v.GetName() != ValidationContextSecret ||
			v.GetSdsConfig().GetPathConfigSource().GetPath() != "/etc/envoy/sds/"+ValidationContextSDSFile {
			t.Errorf("%s: validation context %v, want the SDS file of %s", name, v, ValidationContextSecret)
		}
	}

	// An IP address is verified as an IP SAN and sent as no SNI; without a client certificate
	// Envoy presents none.
	ip := testUpstreamTLS()
	ip.ServerName, ip.CertFile, ip.KeyFile = "10.0.0.7", "", ""
	ctx := upstreamContext(t, unpack(t, mustBootstrap(t, cfg, view, Options{TLS: ip})).clusters[ExtProcCluster])
	sans := ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchTypedSubjectAltNames()
	if ctx.GetSni() != "" || len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_IP_ADDRESS || sans[0].GetMatcher().GetExact() != "10.0.0.7" {
		t.Errorf("server name 10.0.0.7: SNI %q, SAN matchers %v, want no SNI and IP_ADDRESS 10.0.0.7", ctx.GetSni(), sans)
	}
	if n := len(ctx.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()); n != 0 {
		t.Errorf("without a client certificate Envoy still presents %d", n)
	}

	// Without TLS the clusters are plaintext, and the service clusters never get TLS.
	p = unpack(t, mustBootstrap(t, cfg, view, Options{TLS: testUpstreamTLS()}))
	for name, c := range p.clusters {
		if has := c.GetTransportSocket() != nil; has != (name == ExtProcCluster) {
			t.Errorf("cluster %s: transport socket %v", name, c.GetTransportSocket())
		}
	}
	if c := unpack(t, mustBootstrap(t, cfg, view, Options{})).clusters[ExtProcCluster]; c.GetTransportSocket() != nil {
		t.Errorf("without TLS the ext_proc cluster has a transport socket: %v", c.GetTransportSocket())
	}
}

func TestBootstrapTLSErrors(t *testing.T) {
	cfg, view := example.Load(t)
	for _, tc := range []struct {
		name   string
		change func(*UpstreamTLS)
		want   string
	}{
		{"no CA", func(u *UpstreamTLS) { u.CAFile = "" }, "a CA file is required"},
		{"certificate without key", func(u *UpstreamTLS) { u.KeyFile = "" }, "needs both its certificate and its key file"},
		{"key without certificate", func(u *UpstreamTLS) { u.CertFile = "" }, "needs both its certificate and its key file"},
		{"no server name", func(u *UpstreamTLS) { u.ServerName = "" }, "a server name is required"},
		{"relative CA", func(u *UpstreamTLS) { u.CAFile = "ca.pem" }, `the CA path "ca.pem" is not absolute`},
		{"relative SDS directory", func(u *UpstreamTLS) { u.SecretDir = "sds" }, `the SDS directory path "sds" is not absolute`},
		{"no SDS directory", func(u *UpstreamTLS) { u.SecretDir = "" }, "a directory for the SDS files is required"},
	} {
		u := testUpstreamTLS()
		tc.change(u)
		if _, err := Bootstrap(cfg, view, Options{TLS: u}); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "envoy bootstrap: tls: ") {
			t.Errorf("%s: Bootstrap error %v, want one saying %q", tc.name, err, tc.want)
		}
		if _, err := SecretFiles(u); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: SecretFiles error %v, want one saying %q", tc.name, err, tc.want)
		}
	}
}

func TestSecretFiles(t *testing.T) {
	dir := t.TempDir()
	u := testUpstreamTLS()
	u.SecretDir = dir
	if err := WriteSecretFiles(u); err != nil {
		t.Fatal(err)
	}
	secrets := map[string]*tlsv3.Secret{}
	for _, name := range []string{ClientCertificateSDSFile, ValidationContextSDSFile} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o644 {
			t.Errorf("%s: mode %v %v, want 0644: Envoy may run as another user", name, fi.Mode(), err)
		}
		j, err := yaml.YAMLToJSON(data)
		if err != nil {
			t.Fatal(err)
		}
		resp := &discoveryv3.DiscoveryResponse{}
		if err := protojson.Unmarshal(j, resp); err != nil {
			t.Fatalf("%s: %v\n%s", name, err, data)
		}
		// Envoy takes exactly one secret from an SDS file, named as the bootstrap asks.
		if len(resp.GetResources()) != 1 {
			t.Fatalf("%s holds %d resources, want 1", name, len(resp.GetResources()))
		}
		s := &tlsv3.Secret{}
		if err := resp.GetResources()[0].UnmarshalTo(s); err != nil {
			t.Fatal(err)
		}
		secrets[s.GetName()] = s
	}
	cert := secrets[ClientCertificateSecret].GetTlsCertificate()
	if cert.GetCertificateChain().GetFilename() != u.CertFile || cert.GetPrivateKey().GetFilename() != u.KeyFile {
		t.Errorf("client certificate secret %v, want the files %s and %s", cert, u.CertFile, u.KeyFile)
	}
	if ca := secrets[ValidationContextSecret].GetValidationContext().GetTrustedCa().GetFilename(); ca != u.CAFile {
		t.Errorf("validation context names %q, want %s", ca, u.CAFile)
	}
	entries, err := os.ReadDir(dir)
	if err != nil || len(entries) != 2 {
		t.Errorf("the directory holds %d entries, want the 2 SDS files and nothing left of writing them", len(entries))
	}

	// Without a client certificate there is only the validation context.
	u.CertFile, u.KeyFile = "", ""
	files, err := SecretFiles(u)
	if err != nil || len(files) != 1 || filepath.Base(files[0].Path) != ValidationContextSDSFile {
		t.Errorf("SecretFiles without a client certificate: %v %v", files, err)
	}
}
