package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/server"
	"github.com/partroute/partroute/xds"
)

// mtlsConfig serves ext_proc and xDS over mutual TLS with the certificates under tls/. %[1]s,
// %[2]s and %[3]s are the ext_proc, admin and xDS addresses.
const mtlsConfig = `
listen:
  extproc: "%[1]s"
  admin: "%[2]s"
  xds: "%[3]s"
  tls:
    extproc: {cert: tls/server.pem, key: tls/server.key, clientCA: tls/ca.pem, requireClientCert: true}
    xds: {cert: tls/server.pem, key: tls/server.key, clientCA: tls/ca.pem, requireClientCert: true}
naming: {source: file, file: naming.yaml}
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 2}
    key: {sources: [{path: "/api/orders/{id}"}], transform: int64}
`

// mtlsStack is a real Envoy that reaches partroute's ext_proc and xDS servers over mutual
// TLS, in front of one backend per partition of orders.
type mtlsStack struct {
	t                   *testing.T
	m                   *certs.Mutual
	extproc, admin, xds string
	envoy, envoyAdmin   string
	primary0, primary1  string
	client              *http.Client
	partroute           *partrouteProcess
}

// maxConnectionAge is short, so that Envoy opens new connections to partroute, with new
// handshakes, while the steady load runs.
const maxConnectionAge = time.Second

func startMTLSStack(t *testing.T) *mtlsStack {
	t.Helper()
	dir := t.TempDir()
	ports := testkit.FreePorts(t, 7)
	s := &mtlsStack{t: t, extproc: ports[0], admin: ports[1], xds: ports[2], envoy: ports[3], envoyAdmin: ports[4],
		primary0: ports[5], primary1: ports[6], client: &http.Client{Timeout: 10 * time.Second}}
	if err := os.Mkdir(filepath.Join(dir, "tls"), 0o700); err != nil {
		t.Fatal(err)
	}
	s.m = certs.NewMutual(t, filepath.Join(dir, "tls"))
	cfgPath := filepath.Join(dir, "partroute.yaml")
	write(t, cfgPath, fmt.Sprintf(mtlsConfig, s.extproc, s.admin, s.xds))
	write(t, filepath.Join(dir, "naming.yaml"), fmt.Sprintf(`services:
  orders:
    partitions:
      - {lowKey: 0, highKey: 49, id: orders-0, replicas: [{address: %q, role: primary}]}
      - {lowKey: 50, highKey: 99, id: orders-1, replicas: [{address: %q, role: primary}]}
`, s.primary0, s.primary1))
	// Envoy takes the service clusters over xDS: its bootstrap needs the configuration alone.
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	backends, err := loadtest.StartBackends([]string{s.primary0, s.primary1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)

	o := embeddedOptions(cfgPath, 20*time.Millisecond, nil)
	o.MaxConnectionAge = maxConnectionAge
	s.partroute = runPartrouteWith(t, o, s.admin)

	upstream := &envoyconfig.UpstreamTLS{CertFile: s.m.ClientCert, KeyFile: s.m.ClientKey, CAFile: s.m.CAFile, ServerName: "localhost", SecretDir: dir}
	if err := envoyconfig.WriteSecretFiles(upstream); err != nil {
		t.Fatal(err)
	}
	runEnvoy(t, dir, cfg, nil, envoyconfig.Options{ListenAddress: s.envoy, AdminAddress: s.envoyAdmin, XDSAddress: s.xds, NodeID: mtlsNodeID, TLS: upstream},
		envoyconfig.ExtProcCluster, "orders")
	return s
}

// mtlsNodeID is Envoy's node id: the name of its client certificate (certs.NewMutual), as
// mutual TLS on the xDS listener binds a node id to the certificate's identities.
const mtlsNodeID = "envoy"

// runPartrouteWith is runPartroute with options of the test's own (their log is replaced by
// one the test prints when it fails).
func runPartrouteWith(t *testing.T, o server.Options, admin string) *partrouteProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &partrouteProcess{t: t, cancel: cancel, served: make(chan error, 1), log: &testkit.LogBuffer{}}
	o.Log = slog.New(slog.NewTextHandler(p.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() { p.served <- server.Run(ctx, o) }()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("partroute log:\n%s", p.log.String())
		}
	})
	client := &http.Client{Timeout: time.Second}
	testkit.WaitFor(t, "partroute to be ready on "+admin, 15*time.Second, func() bool {
		select {
		case err := <-p.served:
			p.served <- err
			t.Fatalf("partroute stopped before it was ready: %v", err)
		default:
		}
		resp, err := client.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// put sends PUT /api/orders/key through Envoy and returns the status and the backend that
// answered.
func (s *mtlsStack) put(key int) (int, string, error) {
	req, err := http.NewRequest(http.MethodPut, "http://"+s.envoy+"/api/orders/"+strconv.Itoa(key), http.NoBody)
	if err != nil {
		return 0, "", err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get(loadtest.BackendHeader), nil
}

func (s *mtlsStack) primaryOf(key int) string {
	if key < 50 {
		return s.primary0
	}
	return s.primary1
}

// metric returns the value of one series of partroute's /metrics, such as
// `partroute_tls_reloads_total{listener="xds",result="ok"}`.
func (s *mtlsStack) metric(series string) float64 {
	s.t.Helper()
	return scrape(s.t, "http://"+s.admin+"/metrics", series+" ")
}

// envoyStat returns one counter of Envoy's /stats, such as
// cluster.partroute_extproc.ssl.handshake.
func (s *mtlsStack) envoyStat(name string) float64 {
	s.t.Helper()
	return scrape(s.t, "http://"+s.envoyAdmin+"/stats?filter=^"+strings.ReplaceAll(name, ".", `\.`)+"$", name+": ")
}

// scrape fetches url and returns the number after the line prefix, or 0 when no line has it.
func scrape(t *testing.T, url, prefix string) float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %q: %v", url, sc.Text(), err)
			}
			return f
		}
	}
	return 0
}

// handshake connects to addr as a TLS client with Envoy's certificate, reads the server's
// first bytes (its HTTP/2 settings: the server accepted the certificate) and returns the
// serial of the server's certificate.
func (s *mtlsStack) handshake(addr string) (*big.Int, error) {
	cert := s.m.Client.TLS(s.t)
	c, err := tls.Dial("tcp", addr, s.tlsClient(&cert))
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := bufio.NewReader(c).ReadByte(); err != nil {
		return nil, err
	}
	return c.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// tlsClient trusts the test's CA and presents cert, even to a server that does not name its
// CA among those it accepts (Go's client would send none then): nil presents nothing.
func (s *mtlsStack) tlsClient(cert *tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: s.m.CA.Pool(), ServerName: "localhost", NextProtos: []string{"h2"}}
	if cert != nil {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return cfg
}

// healthCheck calls the gRPC health service at addr with the client certificate given.
func (s *mtlsStack) healthCheck(addr string, cert *tls.Certificate) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(s.tlsClient(cert))))
	if err != nil {
		s.t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestMTLSThroughEnvoy(t *testing.T) {
	s := startMTLSStack(t)

	t.Run("routed requests work over mutual TLS", func(t *testing.T) {
		for key := 0; key < 100; key += 3 {
			code, backend, err := s.put(key)
			if err != nil || code != http.StatusOK || backend != s.primaryOf(key) {
				t.Fatalf("PUT key %d: %d from %q (%v), want 200 from %s", key, code, backend, err, s.primaryOf(key))
			}
		}
		// Both of partroute's clusters are on TLS: Envoy counts their handshakes.
		for _, c := range []string{envoyconfig.ExtProcCluster, envoyconfig.XDSCluster} {
			if n := s.envoyStat("cluster." + c + ".ssl.handshake"); n < 1 {
				t.Errorf("Envoy made %v TLS handshakes on %s", n, c)
			}
		}
	})

	t.Run("clients without a trusted certificate are refused at the handshake", func(t *testing.T) {
		valid := s.m.Client.TLS(t)
		untrusted := certs.NewCA(t, "untrusted CA").Client(t, "envoy").TLS(t)
		logBefore := len(s.partroute.log.String())
		for _, l := range []struct {
			name, addr string
			// served is the status of a served call: the xDS listener has no health service.
			served codes.Code
		}{{"extproc", s.extproc, codes.OK}, {"xds", s.xds, codes.Unimplemented}} {
			if err := s.healthCheck(l.addr, &valid); status.Code(err) != l.served {
				t.Fatalf("%s: a client with Envoy's certificate: %v, want %v", l.name, err, l.served)
			}
			for _, c := range []struct {
				name, reason string
				cert         *tls.Certificate
			}{
				{"no certificate", "no_client_certificate", nil},
				{"a certificate of an untrusted CA", "unknown_authority", &untrusted},
			} {
				series := fmt.Sprintf(`partroute_tls_handshake_failures_total{listener=%q,reason=%q}`, l.name, c.reason)
				before := s.metric(series)
				err := s.healthCheck(l.addr, c.cert)
				if status.Code(err) != codes.Unavailable {
					t.Errorf("%s, %s: %v, want the call to fail as the connection did (Unavailable)", l.name, c.name, err)
				}
				testkit.WaitFor(t, series+" to count the refusal", 5*time.Second, func() bool { return s.metric(series) > before })
			}
		}
		if logged := s.partroute.log.String()[logBefore:]; strings.Contains(logged, "handshake") || strings.Contains(logged, "certificate") {
			t.Errorf("refused handshakes were logged:\n%s", logged)
		}
	})

	t.Run("an xDS stream may speak only for the node of its certificate", func(t *testing.T) {
		// Envoy's own stream, whose node id is its certificate's name, was accepted: it
		// acknowledged the snapshot.
		acked := func() map[string]xds.Versions {
			_, nodes, ok := debugXDS(s.client, s.admin)
			if !ok {
				t.Fatal("/debug/xds does not answer")
			}
			return nodes
		}
		if _, ok := acked()[mtlsNodeID]; !ok {
			t.Fatalf("/debug/xds acknowledged %v, want Envoy's node %q", acked(), mtlsNodeID)
		}
		// Another client of the same CA claims Envoy's node id: refused, and counted.
		impostor := s.m.CA.Client(t, "impostor").TLS(t)
		conn, err := grpc.NewClient(s.xds, grpc.WithTransportCredentials(credentials.NewTLS(s.tlsClient(&impostor))))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		const series = "partroute_xds_unbound_node_refusals_total"
		before := s.metric(series)
		ads, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := ads.Send(&discoverygrpc.DiscoveryRequest{Node: &corev3.Node{Id: mtlsNodeID}, TypeUrl: resource.ClusterType}); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if _, err := ads.Recv(); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("an impostor's stream claiming node %q: %v, want PermissionDenied", mtlsNodeID, err)
		}
		if got := s.metric(series); got != before+1 {
			t.Errorf("%s = %v, want %v", series, got, before+1)
		}
		if nodes := acked(); len(nodes) != 1 {
			t.Errorf("/debug/xds acknowledged %v after the impostor, want Envoy's node alone", nodes)
		}
		// Envoy's stream is untouched: a routed request still works.
		if code, backend, err := s.put(7); err != nil || code != http.StatusOK || backend != s.primaryOf(7) {
			t.Errorf("PUT key 7 after the impostor: %d from %q (%v)", code, backend, err)
		}
	})

	t.Run("certificates rotated under a steady load lose no request", func(t *testing.T) {
		old, err := s.handshake(s.extproc)
		if err != nil {
			t.Fatal(err)
		}
		next := s.m.CA.Server(t, "localhost", "127.0.0.1")
		if next.Cert.SerialNumber.Cmp(old) == 0 {
			t.Fatal("the new certificate has the serial of the old one")
		}
		type result struct {
			key, code int
			backend   string
			err       error
		}
		const rate, requests, rotateAt = 20, 60, 20 // 20 requests a second for 3 s, the rotation after 1 s
		var (
			mu      sync.Mutex
			results []result
			wg      sync.WaitGroup
		)
		tick := time.NewTicker(time.Second / rate)
		for i := range requests {
			<-tick.C
			if i == rotateAt {
				// The key first, then the certificate, each by a rename, as a certificate
				// manager writes them.
				next.Write(t, s.m.ServerCert, s.m.ServerKey)
			}
			wg.Go(func() {
				key := (i * 37) % 100
				code, backend, err := s.put(key)
				mu.Lock()
				results = append(results, result{key, code, backend, err})
				mu.Unlock()
			})
		}
		tick.Stop()
		wg.Wait()
		for _, r := range results {
			if r.err != nil || r.code != http.StatusOK || r.backend != s.primaryOf(r.key) {
				t.Errorf("PUT key %d during the rotation: %d from %q (%v), want 200 from %s", r.key, r.code, r.backend, r.err, s.primaryOf(r.key))
			}
		}
		t.Logf("%d requests at %d/s, the certificate rotated after %d: %d failed", len(results), rate, rotateAt, countFailed(results, func(r result) bool {
			return r.err != nil || r.code != http.StatusOK
		}))

		// New handshakes on both listeners see the new certificate, from one reload each.
		for _, addr := range []string{s.extproc, s.xds} {
			testkit.WaitFor(t, "a handshake at "+addr+" to get the new certificate", 5*time.Second, func() bool {
				serial, err := s.handshake(addr)
				return err == nil && serial.Cmp(next.Cert.SerialNumber) == 0
			})
		}
		for _, l := range []string{"extproc", "xds"} {
			if ok, bad := s.metric(fmt.Sprintf(`partroute_tls_reloads_total{listener=%q,result="ok"}`, l)), s.metric(fmt.Sprintf(`partroute_tls_reloads_total{listener=%q,result="error"}`, l)); ok != 1 || bad != 0 {
				t.Errorf("%s: reloads ok %v error %v, want 1 and 0", l, ok, bad)
			}
		}

		// Envoy, whose connections partroute ages out every second, handshakes again with the
		// new certificate and keeps routing.
		handshakes := s.envoyStat("cluster." + envoyconfig.ExtProcCluster + ".ssl.handshake")
		testkit.WaitFor(t, "Envoy to connect again after the rotation", 10*time.Second, func() bool {
			if code, _, err := s.put(1); err != nil || code != http.StatusOK {
				t.Fatalf("PUT after the rotation: %d %v", code, err)
			}
			return s.envoyStat("cluster."+envoyconfig.ExtProcCluster+".ssl.handshake") > handshakes
		})
		for _, stat := range []string{"ssl.connection_error", "ssl.fail_verify_error", "ssl.fail_verify_san", "upstream_cx_connect_fail"} {
			if n := s.envoyStat("cluster." + envoyconfig.ExtProcCluster + "." + stat); n != 0 {
				t.Errorf("Envoy's %s on %s: %v, want 0", stat, envoyconfig.ExtProcCluster, n)
			}
		}
	})

	t.Run("Envoy rotates its own client certificate from its files", func(t *testing.T) {
		if got := s.envoyClientSerials(); len(got) != 2 || got[0].Cmp(s.m.Client.Cert.SerialNumber) != 0 || got[1].Cmp(s.m.Client.Cert.SerialNumber) != 0 {
			t.Fatalf("Envoy's client certificates %v, want %X in both of partroute's clusters", got, s.m.Client.Cert.SerialNumber)
		}
		failures := func() float64 {
			n := 0.0
			for _, reason := range []string{"no_client_certificate", "unknown_authority", "bad_certificate", "not_tls", "other"} {
				n += s.metric(fmt.Sprintf(`partroute_tls_handshake_failures_total{listener="extproc",reason=%q}`, reason))
			}
			return n
		}
		failedBefore := failures()
		next := s.m.CA.Client(t, "envoy")
		next.Write(t, s.m.ClientCert, s.m.ClientKey)
		testkit.WaitFor(t, "Envoy to load its new client certificate", 10*time.Second, func() bool {
			got := s.envoyClientSerials()
			return len(got) == 2 && got[0].Cmp(next.Cert.SerialNumber) == 0 && got[1].Cmp(next.Cert.SerialNumber) == 0
		})
		// partroute accepts it on the connections Envoy opens from now on.
		handshakes := s.envoyStat("cluster." + envoyconfig.ExtProcCluster + ".ssl.handshake")
		testkit.WaitFor(t, "Envoy to connect with its new certificate", 10*time.Second, func() bool {
			if code, _, err := s.put(2); err != nil || code != http.StatusOK {
				t.Fatalf("PUT after Envoy's rotation: %d %v", code, err)
			}
			return s.envoyStat("cluster."+envoyconfig.ExtProcCluster+".ssl.handshake") > handshakes
		})
		for key := range 10 {
			if code, backend, err := s.put(key); err != nil || code != http.StatusOK || backend != s.primaryOf(key) {
				t.Errorf("PUT key %d after Envoy's rotation: %d from %q (%v)", key, code, backend, err)
			}
		}
		if n := failures() - failedBefore; n != 0 {
			t.Errorf("partroute refused %v handshakes while Envoy rotated its certificate", n)
		}
	})
}

// envoyClientSerials returns the serial of every client certificate Envoy's TLS contexts
// hold now, as its admin /certs lists them.
func (s *mtlsStack) envoyClientSerials() []*big.Int {
	s.t.Helper()
	resp, err := s.client.Get("http://" + s.envoyAdmin + "/certs")
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Certificates []struct {
			CertChain []struct {
				SerialNumber string `json:"serial_number"`
			} `json:"cert_chain"`
		} `json:"certificates"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		s.t.Fatal(err)
	}
	var serials []*big.Int
	for _, c := range out.Certificates {
		for _, cert := range c.CertChain {
			n, ok := new(big.Int).SetString(cert.SerialNumber, 16)
			if !ok {
				s.t.Fatalf("Envoy's /certs lists serial %q", cert.SerialNumber)
			}
			serials = append(serials, n)
		}
	}
	return serials
}

func countFailed[T any](rs []T, failed func(T) bool) int {
	n := 0
	for _, r := range rs {
		if failed(r) {
			n++
		}
	}
	return n
}
