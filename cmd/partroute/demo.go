package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/loadtest"
)

type demoOptions struct {
	configPath  string
	envoyListen string
	envoyAdmin  string
	once        bool
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o demoOptions
	fs.StringVar(&o.configPath, "config", "", "partroute.yaml whose naming file lists the replicas to play (default: the embedded example)")
	fs.StringVar(&o.envoyListen, "envoy-listen", "127.0.0.1:10000", "Envoy's listener")
	fs.StringVar(&o.envoyAdmin, "envoy-admin", "127.0.0.1:9902", "Envoy's admin listener")
	fs.BoolVar(&o.once, "once", false, "stop after the sample requests instead of waiting for Ctrl-C")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: partroute demo [-config FILE] [-once]")
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := demo(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "partroute demo:", err)
		return 1
	}
	return 0
}

// demo plays every replica of the naming view with a backend that answers with its own
// address, runs partroute and Envoy in front of them, and shows where sample requests land.
func demo(ctx context.Context, o demoOptions, out io.Writer) error {
	work, err := os.MkdirTemp("", "partroute-demo-")
	if err != nil {
		return err
	}
	if o.configPath == "" {
		if o.configPath, err = envoyconfig.WriteExamples(work); err != nil {
			return err
		}
	}
	cfg, view, err := loadConfigAndView(o.configPath, "")
	if err != nil {
		return err
	}
	envoyBin, err := envoyconfig.FindEnvoy()
	if err != nil {
		return err
	}

	var addrs []string
	for _, sv := range view.Services {
		for _, p := range sv.Partitions {
			for _, r := range p.Replicas {
				addrs = append(addrs, r.Address)
			}
		}
	}
	backends, err := loadtest.StartBackends(addrs)
	if err != nil {
		return err
	}
	defer backends.Close()

	logPath := filepath.Join(work, "partroute.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	serveCtx, stopServe := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- serve(serveCtx, serveOptions{configPath: o.configPath, logLevel: "debug", poll: time.Second, shutdownTimeout: 2 * time.Second, maxConnAge: 5 * time.Minute}, nil, slog.New(slog.NewTextHandler(logFile, &slog.HandlerOptions{Level: slog.LevelDebug})))
	}()
	defer func() { stopServe(); <-served }()
	if err := waitHTTP(ctx, "http://"+cfg.Listen.Admin+"/readyz", served); err != nil {
		return fmt.Errorf("partroute did not become ready (log: %s): %w", logPath, err)
	}

	boot, err := envoyconfig.Bootstrap(cfg, view, envoyconfig.Options{ListenAddress: o.envoyListen, AdminAddress: o.envoyAdmin})
	if err != nil {
		return err
	}
	bootYAML, err := envoyconfig.MarshalYAML(boot)
	if err != nil {
		return err
	}
	bootPath := filepath.Join(work, "envoy.yaml")
	if err := os.WriteFile(bootPath, bootYAML, 0o644); err != nil {
		return err
	}
	envoyLogPath := filepath.Join(work, "envoy.log")
	envoyLog, err := os.Create(envoyLogPath)
	if err != nil {
		return err
	}
	defer envoyLog.Close()
	envoy, err := envoyconfig.StartEnvoy(envoyBin, bootPath, o.envoyAdmin, envoyLog)
	if err != nil {
		return err
	}
	defer envoy.Stop(5 * time.Second)
	readyCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := envoy.WaitReady(readyCtx, envoyconfig.ExtProcCluster); err != nil {
		return fmt.Errorf("%w (log: %s)", err, envoyLogPath)
	}

	fmt.Fprintf(out, "partroute %s on %s (admin http://%s), Envoy on http://%s, %d backends\n\n", version, cfg.Listen.ExtProc, cfg.Listen.Admin, o.envoyListen, len(backends.All()))
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "REQUEST\tSTATUS\tPARTITION\tROLE\tBACKEND")
	client := &http.Client{Timeout: 5 * time.Second}
	for _, s := range sampleRequests(cfg) {
		row, err := s.send(client, o.envoyListen)
		if err != nil {
			return err
		}
		fmt.Fprintln(tw, row)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nfiles: %s (partroute.log, envoy.yaml, envoy.log)\n", work)
	if o.once {
		return nil
	}
	fmt.Fprintf(out, "try: curl -i -X PUT http://%s/api/users/7 -H 'host: api.example.com'\nmetrics: curl http://%s/metrics\nCtrl-C stops the demo.\n", o.envoyListen, cfg.Listen.Admin)
	<-ctx.Done()
	return nil
}

// waitHTTP waits until url answers 200, or until the server reports an error on failed.
func waitHTTP(ctx context.Context, url string, failed <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-failed:
			return fmt.Errorf("server stopped: %v", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
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

func (s sample) send(client *http.Client, envoyAddr string) (string, error) {
	req, err := http.NewRequest(s.method, "http://"+envoyAddr+s.target, strings.NewReader(s.body))
	if err != nil {
		return "", err
	}
	req.Host = s.host
	if s.header[0] != "" {
		req.Header.Set(s.header[0], s.header[1])
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	row := fmt.Sprintf("%s\t%d", s, resp.StatusCode)
	if resp.StatusCode != http.StatusOK {
		return row + "\t-\t-\t" + resp.Header.Get("x-partroute-error"), nil
	}
	var e loadtest.Echo
	if err := json.NewDecoder(resp.Body).Decode(&e); err != nil {
		return "", fmt.Errorf("%s: backend answer: %w", s, err)
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s", row, e.Partition, e.Role, e.Backend), nil
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
			if strings.HasPrefix(seg, "{") {
				b.WriteString(key)
			} else if seg == "*" {
				b.WriteString("x")
			} else {
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
