package envoyconfig_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/xds"
)

// allowedEnvoyLog lists the warning, error and critical lines Envoy may log while it starts on
// one of partroute's bootstraps, becomes ready and is stopped. Anything else fails the test:
// Envoy reports a configuration it accepts but does not apply as it was written (an unknown
// retry_on token, a deprecated field) only in its log. Each entry says why the line is
// expected.
var allowedEnvoyLog = []testkit.EnvoyLogAllowance{
	{Line: regexp.MustCompile(`^\[main\] caught ENVOY_SIGTERM$`),
		Why: "the test stops Envoy with SIGTERM, which Envoy logs at warning level"},
	{Line: regexp.MustCompile(`^\[main\] There is no configured limit to the number of allowed active downstream connections\. `),
		Why: "Envoy says this of every bootstrap without an overload manager. The right limit depends on the machine and on what else Envoy fronts, so the generator leaves it to the operator (docs/envoy.md)"},
}

// envoyRun is one bootstrap to start Envoy on.
type envoyRun struct {
	name string
	// bootstrap returns the bootstrap YAML, with its admin listener at admin and partroute's
	// ext_proc and xDS servers at grpcAddrs, one address per partroute instance, reached over
	// tls when it is set.
	bootstrap func(t *testing.T, admin string, grpcAddrs []string, tls *envoyconfig.UpstreamTLS) []byte
	// ads, when set, is what partroute's xDS servers serve this Envoy.
	ads *adsInput
	// instances is the number of partroute instances the bootstrap names; 0 means 1.
	instances int
	// tls serves partroute's side over mutual TLS, with certificates made for the run.
	tls bool
}

type adsInput struct {
	cfg  *config.Config
	view *resolver.View
	opts envoyconfig.Options
}

// TestEnvoyLogsNoWarnings starts a real Envoy on every Envoy bootstrap in the repository (files
// and whole bootstraps in the docs) and on the bootstraps the generator writes for every
// combination of its options, waits until Envoy is ready (and, over xDS, has acknowledged
// partroute's clusters and endpoints), stops it and fails on any warning, error or critical
// line of its log that allowedEnvoyLog does not list. A missing Envoy fails the test.
func TestEnvoyLogsNoWarnings(t *testing.T) {
	bin, err := envoyconfig.FindEnvoy()
	if err != nil {
		t.Fatal(err)
	}
	runs := shippedRuns(t)
	if len(runs) == 0 {
		t.Fatal("found no shipped Envoy bootstrap; envoy-config/envoy.yaml should be one")
	}
	runs = append(runs, generatedRuns(t)...)
	for _, r := range runs {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			runEnvoyAndCheckLog(t, bin, r)
		})
	}
}

func runEnvoyAndCheckLog(t *testing.T, bin string, r envoyRun) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// A gRPC server per instance plays partroute: it reports its ext_proc health service
	// serving, so that Envoy's health check of the partroute_extproc cluster passes, and serves
	// ADS, the same snapshot from every instance; with tls, over mutual TLS.
	var (
		serverOpts []grpc.ServerOption
		upstream   *envoyconfig.UpstreamTLS
	)
	if r.tls {
		dir := t.TempDir()
		m := certs.NewMutual(t, dir)
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{m.Server.TLS(t)},
			ClientCAs:    m.CA.Pool(),
			ClientAuth:   tls.RequireAndVerifyClientCert,
		})))
		upstream = &envoyconfig.UpstreamTLS{CertFile: m.ClientCert, KeyFile: m.ClientKey, CAFile: m.CAFile, ServerName: "localhost", SecretDir: dir}
		if err := envoyconfig.WriteSecretFiles(upstream); err != nil {
			t.Fatal(err)
		}
	}
	var (
		grpcAddrs []string
		servers   []*grpc.Server
		ads       []*xds.Server
		versions  xds.Versions
	)
	defer func() {
		for _, gs := range servers {
			gs.Stop()
		}
	}()
	for range max(r.instances, 1) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		gs := grpc.NewServer(serverOpts...)
		hs := health.NewServer()
		hs.SetServingStatus(contract.ExtProcService(), healthpb.HealthCheckResponse_SERVING)
		healthpb.RegisterHealthServer(gs, hs)
		if r.ads != nil {
			srv := xds.New(ctx, slog.New(slog.NewTextHandler(io.Discard, nil)), nil, xds.Options{})
			if versions, err = srv.Update(r.ads.cfg, r.ads.view, r.ads.opts); err != nil {
				t.Fatal(err)
			}
			srv.Register(gs)
			ads = append(ads, srv)
		}
		go func() { _ = gs.Serve(lis) }()
		servers = append(servers, gs)
		grpcAddrs = append(grpcAddrs, lis.Addr().String())
	}

	admin := freeAddr(t)
	path := filepath.Join(t.TempDir(), "envoy.yaml")
	if err := os.WriteFile(path, r.bootstrap(t, admin, grpcAddrs, upstream), 0o644); err != nil {
		t.Fatal(err)
	}
	var log testkit.LogBuffer
	envoy, err := envoyconfig.StartEnvoy(bin, path, admin, &log)
	if err != nil {
		t.Fatal(err)
	}
	ready := envoy.WaitReady(ctx, envoyconfig.ExtProcCluster)
	if ready == nil && ads != nil {
		ready = waitAnyAcked(ctx, ads, versions)
	}
	if err := envoy.Stop(5 * time.Second); err != nil {
		t.Errorf("stopping Envoy: %v", err)
	}
	if ready != nil {
		t.Fatalf("%v\nEnvoy's log:\n%s", ready, log.String())
	}
	if bad := unexpectedLogLines(log.String()); len(bad) > 0 {
		t.Errorf("Envoy logged %d line(s) that no entry of allowedEnvoyLog allows:\n  %s\nEnvoy's log:\n%s",
			len(bad), strings.Join(bad, "\n  "), log.String())
	}
}

// unexpectedLogLines returns the entries of an Envoy log at warning level or above that no
// entry of allowedEnvoyLog allows (testkit.UnexpectedEnvoyLogLines).
func unexpectedLogLines(log string) []string {
	return testkit.UnexpectedEnvoyLogLines(log, allowedEnvoyLog)
}

func TestUnexpectedLogLines(t *testing.T) {
	for _, a := range allowedEnvoyLog {
		if strings.TrimSpace(a.Why) == "" {
			t.Errorf("allowedEnvoyLog allows %s without saying why", a.Line)
		}
	}
	const (
		sigterm = "[2026-01-02 03:04:05.678][42][warning][main] [source/server/server.cc:1028] caught ENVOY_SIGTERM"
		retry   = "[2026-01-02 03:04:05.678][42][warning][misc] [source/common/router/retry_policy_impl.cc:51] Unknown retry_on policy token(s) [503] in retry_on config 'connect-failure,reset,503'. These tokens will be silently ignored."
		info    = "[2026-01-02 03:04:05.678][42][info][main] [source/server/server.cc:1000] starting main dispatch loop"
		crit    = "[2026-01-02 03:04:05.678][42][critical][backtrace] [./source/server/backtrace.h:104] Caught Segmentation fault, suspect faulting address 0x0"
	)
	cases := []struct {
		name, log string
		want      []string
	}{
		{"empty", "", nil},
		{"an allowed warning", sigterm + "\n", nil},
		{"a warning not allowed", sigterm + "\n" + retry + "\n", []string{"[warning][misc] Unknown retry_on policy token(s) [503] in retry_on config 'connect-failure,reset,503'. These tokens will be silently ignored."}},
		{"below warning", info + "\n", nil},
		{"an info entry's continuation", info + "\n  more of it\n", nil},
		{"a warning's continuation is part of it", retry + "\n  more of it\n", []string{"[warning][misc] Unknown retry_on policy token(s) [503] in retry_on config 'connect-failure,reset,503'. These tokens will be silently ignored.\n  more of it"}},
		{"an allowed warning's continuation", sigterm + "\n  more of it\n", nil},
		{"critical", crit + "\n", []string{"[critical][backtrace] Caught Segmentation fault, suspect faulting address 0x0"}},
		{"output that is no log entry", "error initializing configuration 'x.yaml': no such file\n", []string{"(unexplained output) error initializing configuration 'x.yaml': no such file"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := unexpectedLogLines(tc.log)
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Errorf("unexpectedLogLines =\n  %s\nwant\n  %s", strings.Join(got, "\n  "), strings.Join(tc.want, "\n  "))
			}
		})
	}
}

// shippedRuns finds every Envoy bootstrap in the repository: YAML files and the docs' YAML
// blocks with a top-level static_resources. Their fixed ports are replaced, so that the test
// binds only free ones: the admin listener's by admin, partroute's by grpcAddr, and every
// other (the client listener, the replicas) by a free port.
func shippedRuns(t *testing.T) []envoyRun {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("the module root is not above envoy-config: %v", err)
	}
	bootstrapKey := regexp.MustCompile(`(?m)^static_resources:`)
	var runs []envoyRun
	add := func(name string, data []byte) {
		runs = append(runs, envoyRun{name: name, bootstrap: func(t *testing.T, admin string, grpcAddrs []string, _ *envoyconfig.UpstreamTLS) []byte {
			return withFreePorts(t, data, admin, grpcAddrs[0])
		}})
	}
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			if rel != "." && (strings.HasPrefix(d.Name(), ".") || rel == "bin" || rel == "results") {
				return filepath.SkipDir
			}
			return nil
		}
		switch filepath.Ext(path) {
		case ".yaml", ".yml":
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bootstrapKey.Match(data) {
				add(rel, data)
			}
		case ".md":
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for i, block := range yamlBlocks(data) {
				if bootstrapKey.Match(block) {
					add(fmt.Sprintf("%s#block%d", rel, i+1), block)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return runs
}

// yamlBlocks returns the fenced yaml code blocks of a Markdown document.
func yamlBlocks(md []byte) [][]byte {
	var blocks [][]byte
	var cur *bytes.Buffer
	for _, line := range strings.Split(string(md), "\n") {
		trimmed := strings.TrimSpace(line)
		switch {
		case cur == nil && (trimmed == "```yaml" || trimmed == "```yml"):
			cur = &bytes.Buffer{}
		case cur != nil && trimmed == "```":
			blocks = append(blocks, cur.Bytes())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	return blocks
}

var portValue = regexp.MustCompile(`(?m)^(\s*)port_value: (\d+)\s*$`)

// withFreePorts rewrites the ports of a shipped bootstrap: the admin listener's becomes
// admin's, the endpoints of partroute's own clusters get grpcAddr's, and every other port a
// free one.
func withFreePorts(t *testing.T, data []byte, admin, grpcAddr string) []byte {
	t.Helper()
	b, err := envoyconfig.ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	ports := map[uint32]string{}
	ports[b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue()] = portOf(t, admin)
	for _, c := range b.GetStaticResources().GetClusters() {
		if c.GetName() != envoyconfig.ExtProcCluster && c.GetName() != envoyconfig.XDSCluster {
			continue
		}
		for _, l := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				ports[e.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()] = portOf(t, grpcAddr)
			}
		}
	}
	out := portValue.ReplaceAllFunc(data, func(m []byte) []byte {
		sub := portValue.FindSubmatch(m)
		n, err := strconv.ParseUint(string(sub[2]), 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		p, ok := ports[uint32(n)]
		if !ok {
			p = portOf(t, freeAddr(t))
			ports[uint32(n)] = p
		}
		return []byte(string(sub[1]) + "port_value: " + p)
	})
	// A port left as shipped could reach some other process on this machine and pass for
	// the test's own server.
	got, err := envoyconfig.ParseYAML(out)
	if err != nil {
		t.Fatal(err)
	}
	if p := got.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); strconv.Itoa(int(p)) != portOf(t, admin) {
		t.Fatalf("the admin port is still %d after substitution", p)
	}
	found := false
	for _, c := range got.GetStaticResources().GetClusters() {
		if c.GetName() != envoyconfig.ExtProcCluster {
			continue
		}
		for _, l := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				p := e.GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()
				if strconv.Itoa(int(p)) != portOf(t, grpcAddr) {
					t.Fatalf("the %s endpoint's port is still %d after substitution", envoyconfig.ExtProcCluster, p)
				}
				found = true
			}
		}
	}
	if !found {
		t.Fatalf("the bootstrap has no %s endpoint", envoyconfig.ExtProcCluster)
	}
	return out
}

// generatedRuns are the generator's bootstraps: every combination of its options over the
// example and the feature configuration, statically and over xDS, each shape of partroute's
// answer (headers.setBy), and the configurations that change what it writes (upstream HTTP/2
// and health checks, host names long enough to need a larger regex program).
func generatedRuns(t *testing.T) []envoyRun {
	example, err := config.Load(filepath.Join("examples", "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	exampleView, err := resolver.LoadViewFile(example.Naming.File, example)
	if err != nil {
		t.Fatal(err)
	}
	type input struct {
		name string
		cfg  *config.Config
		view *resolver.View
	}
	all := []input{{"example", example, exampleView}}
	parse := func(name, cfgYAML, namingYAML string) input {
		dir := t.TempDir()
		envoyconfig.WriteFeatureKeys(t, dir)
		cfg, err := config.Parse([]byte(cfgYAML), filepath.Join(dir, "partroute.yaml"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		view, err := resolver.ParseView([]byte(namingYAML), filepath.Join(dir, "naming.yaml"), cfg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return input{name, cfg, view}
	}
	all = append(all, parse("features", envoyconfig.FeatureConfig, envoyconfig.FeatureNaming))

	retries := []struct {
		name  string
		retry *envoyconfig.Retry
	}{{"", nil}, {"retry", &envoyconfig.Retry{NumRetries: 2}}, {"retry-per-try", &envoyconfig.Retry{NumRetries: 2, PerTryTimeout: 250 * time.Millisecond}}}
	var runs []envoyRun
	gen := func(in input, name string, opts envoyconfig.Options, xdsMode bool) {
		runs = append(runs, generatedRun(in.name+"/"+name, in.cfg, in.view, opts, xdsMode, 1, false))
	}
	for _, in := range all {
		for _, xdsMode := range []bool{false, true} {
			for _, r := range retries {
				for _, respHeaders := range []bool{false, true} {
					for _, noExtProc := range []bool{false, true} {
						parts := []string{map[bool]string{false: "static", true: "xds"}[xdsMode]}
						for _, p := range []string{r.name, map[bool]string{true: "response-headers"}[respHeaders], map[bool]string{true: "no-ext-proc"}[noExtProc]} {
							if p != "" {
								parts = append(parts, p)
							}
						}
						gen(in, strings.Join(parts, ","), envoyconfig.Options{Retry: r.retry, ResponseHeaders: respHeaders, NoExtProc: noExtProc}, xdsMode)
					}
				}
			}
		}
		// TLS changes partroute's own clusters alone, whatever the other options: each input
		// is run with it statically and over xDS (where both clusters are on TLS), and once
		// with the other options on.
		for _, xdsMode := range []bool{false, true} {
			name := map[bool]string{false: "static,tls", true: "xds,tls"}[xdsMode]
			runs = append(runs, generatedRun(in.name+"/"+name, in.cfg, in.view, envoyconfig.Options{}, xdsMode, 1, true))
		}
		runs = append(runs, generatedRun(in.name+"/xds,retry,response-headers,tls", in.cfg, in.view,
			envoyconfig.Options{Retry: &envoyconfig.Retry{NumRetries: 2}, ResponseHeaders: true}, true, 1, true))
	}

	// The shape of partroute's answer (headers.setBy) changes the service routes' request
	// headers and the filter's receiving namespaces alone: each shape other than the
	// default's above, statically and over xDS, and once with retries and response headers.
	for _, in := range all {
		for _, setBy := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
			if setBy == in.cfg.Headers.SetBy {
				continue // the runs above
			}
			cfg := *in.cfg
			cfg.Headers.SetBy = setBy
			name := in.name + "/setBy-" + setBy.String()
			runs = append(runs,
				generatedRun(name+",static", &cfg, in.view, envoyconfig.Options{}, false, 1, false),
				generatedRun(name+",xds", &cfg, in.view, envoyconfig.Options{}, true, 1, false),
				generatedRun(name+",static,retry,response-headers", &cfg, in.view, envoyconfig.Options{Retry: &envoyconfig.Retry{NumRetries: 2}, ResponseHeaders: true}, false, 1, false))
		}
	}

	// Envoy's Google gRPC client changes the filter's gRPC service only: each mode once.
	for _, in := range all {
		runs = append(runs,
			generatedRun(in.name+"/static,google-grpc", in.cfg, in.view, envoyconfig.Options{GoogleGRPC: true}, false, 1, false),
			generatedRun(in.name+"/xds,google-grpc", in.cfg, in.view, envoyconfig.Options{GoogleGRPC: true}, true, 1, false))
	}

	// Several partroute instances change only partroute's own clusters, which no other option
	// touches: each mode once, with two instances behind the ext_proc cluster (and ADS).
	for _, in := range all {
		runs = append(runs,
			generatedRun(in.name+"/static,two-instances", in.cfg, in.view, envoyconfig.Options{}, false, 2, false),
			generatedRun(in.name+"/xds,two-instances", in.cfg, in.view, envoyconfig.Options{}, true, 2, false))
	}

	upstream := parse("upstream", `
naming: {file: naming.yaml}
services:
  - name: grpc-backed
    match: {pathPrefix: /h2}
    partitioning: {scheme: singleton}
    upstream: {protocol: http2, connectTimeout: 250ms, healthCheck: {path: /healthz, interval: 1s, timeout: 500ms}}
`, `services: {grpc-backed: {partitions: [{replicas: [{address: 127.0.0.1:9, role: primary}]}]}}`)
	gen(upstream, "static", envoyconfig.Options{}, false)
	gen(upstream, "xds", envoyconfig.Options{}, true)
	long := strings.Repeat("abcdefghi.", 24) + "example.com"
	gen(parse("long-authority", `
naming: {file: naming.yaml}
services:
  - {name: w, match: {authority: "*.`+long+`", pathPrefix: /w}, partitioning: {scheme: singleton}}
  - {name: e, match: {authority: "`+long+`", pathPrefix: /e}, partitioning: {scheme: singleton}}
`, `services: {w: {partitions: [{replicas: []}]}, e: {partitions: [{replicas: []}]}}`), "static", envoyconfig.Options{}, false)
	return runs
}

// generatedRun is Envoy on the generator's bootstrap of cfg and view with opts, its client
// listener on a port the kernel picks; with xdsMode the clusters come from partroute's xDS
// server, and with tlsMode partroute's own clusters are on mutual TLS. With one instance the
// addresses are given as ExtProcAddress and XDSAddress, with more as the lists.
func generatedRun(name string, cfg *config.Config, view *resolver.View, opts envoyconfig.Options, xdsMode bool, instances int, tlsMode bool) envoyRun {
	r := envoyRun{name: name, instances: instances, tls: tlsMode}
	if xdsMode {
		r.ads = &adsInput{cfg: cfg, view: view, opts: opts}
	}
	r.bootstrap = func(t *testing.T, admin string, grpcAddrs []string, upstream *envoyconfig.UpstreamTLS) []byte {
		o := opts
		o.ListenAddress, o.AdminAddress, o.TLS = "127.0.0.1:0", admin, upstream
		if len(grpcAddrs) == 1 {
			o.ExtProcAddress = grpcAddrs[0]
		} else {
			o.ExtProcAddresses = grpcAddrs
		}
		v := view
		if xdsMode {
			v = nil
			if len(grpcAddrs) == 1 {
				o.XDSAddress = grpcAddrs[0]
			} else {
				o.XDSAddresses = grpcAddrs
			}
		}
		b, err := envoyconfig.Bootstrap(cfg, v, o)
		if err != nil {
			t.Fatal(err)
		}
		y, err := envoyconfig.MarshalYAML(b)
		if err != nil {
			t.Fatal(err)
		}
		return y
	}
	return r
}

// waitAnyAcked waits until Envoy has acknowledged versions from one of the xDS servers: it
// holds its ADS stream with one instance, whichever it picked.
func waitAnyAcked(ctx context.Context, servers []*xds.Server, versions xds.Versions) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() { errs <- s.WaitAcked(ctx, versions) }()
	}
	var last error
	for range servers {
		if last = <-errs; last == nil {
			return nil
		}
	}
	return last
}

// freeAddr returns a loopback address whose port was free a moment ago. Envoy's admin
// listener needs a port known in advance; nothing else on a test machine races for it.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func portOf(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return port
}
