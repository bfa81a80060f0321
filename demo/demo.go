package demo

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
)

// Options are what the demo runs on.
type Options struct {
	// ConfigPath is the partroute.yaml whose naming file lists the replicas to play; empty
	// takes the embedded example.
	ConfigPath string
	// EnvoyListen and EnvoyAdmin are Envoy's addresses; empty takes a free loopback port.
	EnvoyListen string
	EnvoyAdmin  string
	// Once stops the demo after the sample requests instead of waiting for ctx to end.
	Once bool
	// Version is the build's o.Version, for the first line of the output.
	Version string
}

// The demo's waits. Each is bounded, so that the demo ends with an error naming what did not
// happen rather than waiting for ever.
const (
	demoPartrouteReady = 15 * time.Second
	demoEnvoyReady     = 30 * time.Second
	demoRequestTimeout = 5 * time.Second
)

// Run plays every replica of the naming view with a backend that answers with its name, role
// and address, runs partroute and Envoy in front of them, and shows where sample requests land.
//
// Everything it starts listens on ports of its own, never on the ones the files name, so that
// it can run beside another partroute, another demo, or anything else on those ports. The
// backends listen on port 0 and hold their ports from the start. partroute and Envoy bind
// their own listeners, on ports the demo reserved a moment before (listened on and closed): a
// process that took one in between would make partroute or Envoy fail to bind it and the demo
// stop with that error. Either way the demo checks that the partroute and the Envoy answering
// are the ones it started before it sends a request.
func Run(ctx context.Context, o Options, out io.Writer) error {
	// An address the user chose is checked before anything starts, so that a busy one fails at
	// once, by name, rather than as an Envoy that did not come up.
	for _, f := range []struct{ flag, addr string }{{"-envoy-listen", o.EnvoyListen}, {"-envoy-admin", o.EnvoyAdmin}} {
		if f.addr != "" {
			if err := checkFree(f.flag, f.addr); err != nil {
				return err
			}
		}
	}
	envoyBin, err := envoyconfig.FindEnvoy()
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "partroute-demo-")
	if err != nil {
		return err
	}
	src, srcName := o.ConfigPath, o.ConfigPath
	if src == "" {
		if src, err = envoyconfig.WriteExamples(work); err != nil {
			return err
		}
		srcName = "the example built into partroute (envoy-config/examples/partroute.yaml)"
	}
	cfg, view, err := resolver.LoadConfigAndView(src, "")
	if err != nil {
		return err
	}

	backends, played, err := startDemoBackends(cfg, view)
	if err != nil {
		return err
	}
	defer backends.Close()
	// The ports are reserved after the backends hold theirs, so that none is given twice.
	need := 2
	if cfg.Listen.XDS != "" {
		need++
	}
	if o.EnvoyListen == "" {
		need++
	}
	if o.EnvoyAdmin == "" {
		need++
	}
	ports, err := loadtest.ReservePorts(need)
	if err != nil {
		return err
	}
	take := func() string { p := ports[0]; ports = ports[1:]; return p }
	listen := config.Listen{ExtProc: take(), Admin: take()}
	if cfg.Listen.XDS != "" {
		listen.XDS = take()
	}
	if o.EnvoyListen == "" {
		o.EnvoyListen = take()
	}
	if o.EnvoyAdmin == "" {
		o.EnvoyAdmin = take()
	}
	cfgPath, err := writeDemoFiles(work, src, srcName, cfg, played, listen)
	if err != nil {
		return err
	}
	// From here on the demo runs on its own files, exactly as partroute reads them.
	if cfg, view, err = resolver.LoadConfigAndView(cfgPath, ""); err != nil {
		return fmt.Errorf("the demo's copy of %s: %w", srcName, err)
	}
	if cfg.Listen != listen {
		return fmt.Errorf("the demo's copy of %s listens on %+v, not on the demo's ports %+v", srcName, cfg.Listen, listen)
	}

	logPath := filepath.Join(work, "partroute.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	serveCtx, stopServe := context.WithCancel(context.Background())
	// stopped is closed when serve has returned serveErr; a channel that is closed rather than
	// sent on lets the wait below and the deferred stop both learn it.
	stopped := make(chan struct{})
	var serveErr error
	go func() {
		defer close(stopped)
		so := server.DefaultOptions(cfgPath, slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})))
		so.Version, so.DrainDelay, so.ShutdownTimeout = o.Version, 0, 2*time.Second
		serveErr = server.Run(serveCtx, so)
	}()
	defer func() { stopServe(); <-stopped }()
	if err := waitPartroute(ctx, cfg.Listen.Admin, view.Version, stopped, &serveErr, demoPartrouteReady); err != nil {
		return fmt.Errorf("partroute (extproc %s, admin %s) is not ready (log: %s): %w", cfg.Listen.ExtProc, cfg.Listen.Admin, logPath, err)
	}

	boot, err := envoyconfig.Bootstrap(cfg, view, envoyconfig.Options{ListenAddress: o.EnvoyListen, AdminAddress: o.EnvoyAdmin})
	if err != nil {
		return err
	}
	bootYAML, err := envoyconfig.MarshalYAML(boot)
	if err != nil {
		return err
	}
	bootPath := filepath.Join(work, "envoy.yaml")
	if err := os.WriteFile(bootPath, bootYAML, 0o600); err != nil {
		return err
	}
	envoyLogPath := filepath.Join(work, "envoy.log")
	envoyLog, err := os.Create(envoyLogPath)
	if err != nil {
		return err
	}
	defer envoyLog.Close()
	envoy, err := envoyconfig.StartEnvoy(envoyBin, bootPath, o.EnvoyAdmin, envoyLog)
	if err != nil {
		return err
	}
	defer func() { _ = envoy.Stop(5 * time.Second) }() // the demo's answers are printed by then
	if err := waitEnvoy(ctx, envoy, o.EnvoyAdmin, bootPath, demoEnvoyReady); err != nil {
		return fmt.Errorf("envoy (listener %s, admin %s) is not ready (log: %s): %w", o.EnvoyListen, o.EnvoyAdmin, envoyLogPath, err)
	}

	fmt.Fprintf(out, "partroute %s on %s (admin http://%s), Envoy on http://%s (admin http://%s), %d backends\n\n", o.Version, cfg.Listen.ExtProc, cfg.Listen.Admin, o.EnvoyListen, o.EnvoyAdmin, len(backends.All()))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tSTATUS\tPARTITION\tASKED\tANSWERED BY\tROLE\tADDRESS")
	client := &http.Client{Timeout: demoRequestTimeout}
	for _, s := range sampleRequests(cfg) {
		row, err := s.send(ctx, client, o.EnvoyListen, backends)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nASKED is the role partroute asked Envoy for; ANSWERED BY, ROLE and ADDRESS are the replica that answered, as %s names it.\n", filepath.Join(work, "naming.yaml"))
	fmt.Fprintf(out, "files: %s (partroute.yaml, naming.yaml, partroute.log, envoy.yaml, envoy.log)\n", work)
	if o.Once {
		return nil
	}
	fmt.Fprintf(out, "try: curl -i -X PUT http://%s/api/users/7 -H 'host: api.example.com'\nmetrics: curl http://%s/metrics\nCtrl-C stops the demo.\n", o.EnvoyListen, cfg.Listen.Admin)
	<-ctx.Done()
	return nil
}

// checkFree fails, naming flag and addr, when addr cannot be listened on.
func checkFree(flag, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("%s %s: the address is in use; choose another, or leave the flag out for a free port", flag, addr)
		}
		return fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return l.Close()
}

// startDemoBackends starts a backend for every replica of view, each on a free loopback port
// of its own and named after its place in the naming view ("users-1/replica-2": the second
// replica listed for partition users-1). It returns them with the view they play: view with
// each replica's address replaced by its backend's.
func startDemoBackends(cfg *config.Config, view *resolver.View) (*loadtest.Backends, *resolver.View, error) {
	played := &resolver.View{Services: make(map[string]*resolver.ServiceView, len(view.Services))}
	var specs []loadtest.BackendSpec
	var addrs []*string
	for _, svc := range cfg.Services {
		sv := *view.Services[svc.Name]
		sv.Partitions = slices.Clone(sv.Partitions)
		for i := range sv.Partitions {
			p := &sv.Partitions[i]
			p.Replicas = slices.Clone(p.Replicas)
			for j := range p.Replicas {
				r := &p.Replicas[j]
				specs = append(specs, loadtest.BackendSpec{Addr: "127.0.0.1:0", Replica: p.ID + "/replica-" + strconv.Itoa(j+1), Role: replicaRole(r)})
				addrs = append(addrs, &r.Address)
			}
		}
		played.Services[svc.Name] = &sv
	}
	backends, err := loadtest.StartReplicas(specs)
	if err != nil {
		return nil, nil, err
	}
	for i, b := range backends.All() {
		*addrs[i] = b.Addr
	}
	return backends, played, nil
}

// replicaRole is a replica's role as the demo table shows it, with its health when it is
// marked unhealthy (Envoy then sends it nothing).
func replicaRole(r *resolver.Replica) string {
	if !r.Healthy {
		return r.Role.String() + " (unhealthy)"
	}
	return r.Role.String()
}

// writeDemoFiles writes the demo's naming file (the view the backends play) and its copy of
// the configuration at src (srcName in its header comment), listening on listen and naming
// that file, into work. It returns the configuration's path.
func writeDemoFiles(work, src, srcName string, cfg *config.Config, played *resolver.View, listen config.Listen) (string, error) {
	naming, err := resolver.FormatView(cfg, played)
	if err != nil {
		return "", err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return "", err
	}
	copied, err := demoConfigYAML(data, listen, "naming.yaml")
	if err != nil {
		return "", fmt.Errorf("%s: %w", src, err)
	}
	header := "# The configuration the demo runs partroute with: " + srcName + ",\n# listening on the demo's own ports and naming its naming.yaml.\n"
	cfgPath := filepath.Join(work, "partroute.yaml")
	if err := os.WriteFile(filepath.Join(work, "naming.yaml"), naming, 0o600); err != nil {
		return "", err
	}
	// cfgPath is in the demo's own work folder, made by os.MkdirTemp.
	if err := os.WriteFile(cfgPath, append([]byte(header), copied...), 0o600); err != nil { //nolint:gosec // a path of the demo's own making
		return "", err
	}
	return cfgPath, nil
}

// demoConfigYAML returns the configuration data with its listen addresses set to listen (xds
// only when listen has one) and its naming file set to namingFile. Everything else, comments
// included, stays as written, so that the demo runs partroute on the user's own file.
func demoConfigYAML(data []byte, listen config.Listen, namingFile string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("the configuration is not a YAML mapping")
	}
	root := doc.Content[0]
	l := mappingField(root, "listen")
	setScalarField(l, "extproc", listen.ExtProc)
	setScalarField(l, "admin", listen.Admin)
	if listen.XDS != "" {
		setScalarField(l, "xds", listen.XDS)
	}
	setScalarField(mappingField(root, "naming"), "file", namingFile)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// mappingField returns the mapping under key in m, adding it (or replacing a value that is
// not a mapping) when needed.
func mappingField(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			v := m.Content[i+1]
			if v.Kind != yaml.MappingNode {
				*v = yaml.Node{Kind: yaml.MappingNode, Tag: "!!map", LineComment: v.LineComment}
			}
			return v
		}
	}
	v := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, v)
	return v
}

// setScalarField sets key in m to the string value, keeping the comments of a value it
// replaces.
func setScalarField(m *yaml.Node, key, value string) {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			old := m.Content[i+1]
			*old = yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value, HeadComment: old.HeadComment, LineComment: old.LineComment, FootComment: old.FootComment}
			return
		}
	}
	m.Content = append(m.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: key}, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: value})
}

// waitPartroute waits, at most timeout, until the partroute whose admin listener is admin is
// ready and serves the naming view of the given version. The version is a hash of the naming
// file, which holds the backends' ports: a process that answers with it is the partroute
// this demo started and no other. The server stopping (stopped closed, with its error in
// *stopErr) ends the wait at once.
//
// stopErr is a pointer because the server's goroutine writes the error after the wait has
// started; it is read only once stopped is closed.
func waitPartroute(parent context.Context, admin, viewVersion string, stopped <-chan struct{}, stopErr *error, timeout time.Duration) error { //nolint:gocritic // see stopErr above
	ctx, cancel := context.WithTimeout(parent, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	want := `partroute_naming_view_info{version="` + viewVersion + `"} 1`
	last := "no answer yet"
	for {
		select {
		case <-stopped:
			return fmt.Errorf("partroute stopped: %w", *stopErr)
		case <-ctx.Done():
			if err := parent.Err(); err != nil {
				return err
			}
			return fmt.Errorf("not ready within %v (last: %s)", timeout, last)
		case <-tick.C:
		}
		status, _, err := httpGet(ctx, client, "http://"+admin+"/readyz")
		if err != nil {
			// A request cut by the deadline says nothing about partroute; the answer before it does.
			if ctx.Err() == nil {
				last = err.Error()
			}
			continue
		}
		if status != http.StatusOK {
			last = fmt.Sprintf("/readyz answered %d", status)
			continue
		}
		status, body, err := httpGet(ctx, client, "http://"+admin+"/metrics")
		if err != nil {
			last = err.Error()
			continue
		}
		if status != http.StatusOK || !strings.Contains(body, want) {
			return fmt.Errorf("http://%s answers, but not as the partroute the demo started (it does not serve naming view %s): another process is listening on that port", admin, viewVersion)
		}
		return nil
	}
}

// waitEnvoy waits, at most timeout, until the Envoy the demo started is ready with partroute
// healthy, and checks that the Envoy answering on admin runs the demo's bootstrap: Envoy
// exits when it cannot bind a listener, so a ready Envoy that runs it listens where it says.
func waitEnvoy(ctx context.Context, envoy *envoyconfig.Envoy, admin, bootPath string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := envoy.WaitReady(ctx, envoyconfig.ExtProcCluster); err != nil {
		return err
	}
	status, body, err := httpGet(ctx, &http.Client{Timeout: time.Second}, "http://"+admin+"/server_info")
	if err != nil {
		return err
	}
	var info struct {
		Options struct {
			ConfigPath string `json:"config_path"`
		} `json:"command_line_options"`
	}
	if status != http.StatusOK || json.Unmarshal([]byte(body), &info) != nil || info.Options.ConfigPath != bootPath {
		return fmt.Errorf("http://%s answers, but not as the Envoy the demo started on %s: another process is listening on that port", admin, bootPath)
	}
	return nil
}

// httpGet returns the status and body of a GET of url.
func httpGet(ctx context.Context, client *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, http.NoBody)
	if err != nil {
		return 0, "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, string(body), err
}

// sample is one demo request.
type sample struct {
	method, host, target, body string
	header                     [2]string
}

func (s sample) String() string {
	str := s.method + " " + s.host + s.target
	if s.header[0] != "" {
		str += " [" + s.header[0] + ": " + s.header[1] + "]"
	}
	if s.body != "" {
		str += " " + s.body
	}
	return str
}

// send sends the request through Envoy at envoyAddr and returns its row of the demo table. An
// answer must come from partroute or Envoy themselves, or from one of backends.
func (s sample) send(ctx context.Context, client *http.Client, envoyAddr string, backends *loadtest.Backends) (string, error) {
	req, err := http.NewRequestWithContext(ctx, s.method, "http://"+envoyAddr+s.target, strings.NewReader(s.body))
	if err != nil {
		return "", err
	}
	req.Host = s.host
	if s.header[0] != "" {
		req.Header.Set(s.header[0], s.header[1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("%s: %w", s, err)
	}
	defer resp.Body.Close()
	row := fmt.Sprintf("%s\t%d", s, resp.StatusCode)
	if code := resp.Header.Get("x-partroute-error"); code != "" {
		return row + "\t-\t-\tpartroute: " + code + "\t-\t-", nil
	}
	addr := resp.Header.Get(loadtest.BackendHeader)
	if addr == "" {
		// Envoy's own answer, such as 503 when no replica of the partition is healthy.
		return row + "\t-\t-\tenvoy\t-\t-", nil
	}
	b := backends.Get(addr)
	if b == nil {
		return "", fmt.Errorf("%s: answered by %s, which is not one of the demo's backends", s, addr)
	}
	var e loadtest.Echo
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
			return "", fmt.Errorf("%s: backend answer: %w", s, err)
		}
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%s\t%s", row, orDash(e.Partition), orDash(e.Role), b.Replica, b.Role, b.Addr), nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// sampleRequests derives a handful of requests for each service from its configuration: a
// write and a read per example key, and one request the error table rejects.
func sampleRequests(cfg *config.Config) []sample {
	var out []sample
	for _, svc := range cfg.Services {
		host := svc.Match.Authority
		if strings.HasPrefix(host, "*.") {
			host = "api" + host[1:]
		}
		if host == "" {
			host = "demo.local"
		}
		base := svc.Match.PathPrefix
		sc := svc.Scheme()
		var keys []string
		switch sc.Kind() {
		case keying.UniformInt64:
			if svc.Keyer.Transform() == keying.TransformHash {
				keys = []string{"alice", "bob"}
			} else {
				for i := 0; i < sc.Count() && i < 2; i++ {
					lo, _ := sc.Bounds(i)
					keys = append(keys, strconv.FormatInt(lo, 10))
				}
			}
		case keying.Named:
			keys = append(keys, sc.Names()[:min(2, sc.Count())]...)
		default:
			out = append(out, sample{method: "PUT", host: host, target: base + "/theme"}, sample{method: "GET", host: host, target: base + "/theme"})
			continue
		}
		src := svc.Keyer.Sources()[0]
		for _, k := range keys {
			for _, m := range []string{"PUT", "GET"} {
				out = append(out, withKey(sample{method: m, host: host, target: base}, src, k))
			}
		}
		bad := "not-a-partition"
		if sc.Kind() == keying.UniformInt64 && svc.Keyer.Transform() == keying.TransformInt64 {
			bad = strconv.FormatInt(sc.HighKey(), 10) + "0"
		}
		if svc.Keyer.Transform() != keying.TransformHash {
			out = append(out, withKey(sample{method: "GET", host: host, target: base}, src, bad))
		}
	}
	return out
}

// withKey places key where the source reads it.
func withKey(s sample, src keying.Source, key string) sample {
	switch src.Kind {
	case keying.SourcePath:
		// Fill the template's variable; literal segments stay as written.
		var b strings.Builder
		for _, seg := range strings.Split(strings.TrimPrefix(src.Name, "/"), "/") {
			b.WriteByte('/')
			switch {
			case strings.HasPrefix(seg, "{"):
				b.WriteString(key)
			case seg == "*":
				b.WriteString("x")
			default:
				b.WriteString(seg)
			}
		}
		s.target = b.String()
	case keying.SourceHeader:
		s.header = [2]string{src.Name, key}
	case keying.SourceQuery:
		s.target += "?" + src.Name + "=" + key
	case keying.SourceCookie:
		s.header = [2]string{"cookie", src.Name + "=" + key}
	case keying.SourceJSONBody:
		s.body = jsonAt(src.Name, key)
	}
	return s
}

// jsonAt builds a JSON document with value at the given JSON pointer.
func jsonAt(pointer, value string) string {
	var v any = value
	toks := strings.Split(strings.TrimPrefix(pointer, "/"), "/")
	for i := len(toks) - 1; i >= 0; i-- {
		v = map[string]any{toks[i]: v}
	}
	b, _ := json.Marshal(v)
	return string(b)
}
