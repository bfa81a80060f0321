package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/resolver"
)

var exampleConfigPath = filepath.Join("..", "envoy-config", "examples", "partroute.yaml")

// TestDemoOnce runs two demos at once on the embedded example files, as `make demo` does, and
// checks each: it ran on addresses of its own (none of the example's, none of the other
// demo's), every answer came from the replica it names with the role the naming view gives
// it, and it ran Envoy with the example's bootstrap but for those addresses. (That bootstrap
// is the shipped envoy-config/envoy.yaml: TestEnvoyBootstrapShippedFileIsCurrent.)
func TestDemoOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var outs [2]bytes.Buffer
	var errs [2]error
	var wg sync.WaitGroup
	for i := range outs {
		wg.Go(func() { errs[i] = Run(ctx, Options{Once: true, Version: "test"}, &outs[i]) })
	}
	wg.Wait()
	for i := range outs {
		if errs[i] != nil {
			t.Errorf("demo %d: %v\n%s", i, errs[i], outs[i].String())
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	exampleCfg, exampleView, err := resolver.LoadConfigAndView(exampleConfigPath, "")
	if err != nil {
		t.Fatal(err)
	}
	exampleAddrs := map[string]bool{envoyconfig.DefaultListenAddress: true, envoyconfig.DefaultAdminAddress: true}
	for _, a := range demoAddresses(exampleCfg, exampleView) {
		exampleAddrs[a] = true
	}
	usedBy := map[string]int{}
	for i := range outs {
		for _, a := range checkDemoRun(t, outs[i].String(), exampleCfg, exampleView) {
			if exampleAddrs[a] {
				t.Errorf("demo %d uses %s, an address of the example files", i, a)
			}
			if j, dup := usedBy[a]; dup && j != i {
				t.Errorf("demos %d and %d both use %s", j, i, a)
			}
			usedBy[a] = i
		}
	}
}

// checkDemoRun checks the table and the files of one demo run and returns every address the
// demo used: partroute's, Envoy's and the backends'.
func checkDemoRun(t *testing.T, text string, exampleCfg *config.Config, exampleView *resolver.View) []string {
	t.Helper()
	m := regexp.MustCompile(`files: (\S+) `).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("demo output names no work folder:\n%s", text)
	}
	work := m[1]
	t.Cleanup(func() { os.RemoveAll(work) })
	for _, row := range []string{
		`PUT api.example.com/api/users/0 +200 +users-0 +primary +users-0/replica-1 +primary +127\.0\.0\.1:\d+`,
		`PUT api.example.com/api/users/9 +200 +users-1 +primary +users-1/replica-1 +primary +127\.0\.0\.1:\d+`,
		`GET api.example.com/api/users/9 +200 +users-1 +any +users-1/replica-[12] +(primary|secondary) +127\.0\.0\.1:\d+`,
		`GET api.example.com/api/users/330 +400 +- +- +partroute: partition_key_out_of_range`,
		`GET demo.local/api/sessions \[cookie: session=alice\] +200 +sessions/-9223372036854775808:-1 +secondary +sessions/-9223372036854775808:-1/replica-2 +secondary +127\.0\.0\.1:\d+`,
		`PUT demo.local/api/regions/eu +200 +regions/eu +primary +regions/eu/replica-1 +primary +127\.0\.0\.1:\d+`,
		`PUT demo.local/api/settings/theme +200 +settings +primary +settings/replica-1 +primary +127\.0\.0\.1:\d+`,
	} {
		if !regexp.MustCompile(row).MatchString(text) {
			t.Errorf("demo output lacks a row matching %q:\n%s", row, text)
		}
	}

	cfg, view, err := resolver.LoadConfigAndView(filepath.Join(work, "partroute.yaml"), "")
	if err != nil {
		t.Fatalf("the demo's own files do not load: %v", err)
	}
	envoy := regexp.MustCompile(`Envoy on http://(\S+) \(admin http://(\S+)\)`).FindStringSubmatch(text)
	if envoy == nil {
		t.Fatalf("demo output names no Envoy addresses:\n%s", text)
	}
	checkDemoTable(t, text, view)

	// The demo's view is the example's with other addresses; its bootstrap is the example's
	// bootstrap with the same addresses.
	want, err := withAddressesOf(exampleView, view)
	if err != nil {
		t.Fatalf("the demo's naming view is not the example's: %v", err)
	}
	wantCfg := *exampleCfg
	wantCfg.Listen = cfg.Listen
	wantBoot, err := envoyconfig.Bootstrap(&wantCfg, want, envoyconfig.Options{ListenAddress: envoy[1], AdminAddress: envoy[2]})
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(work, "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	used, err := envoyconfig.ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(wantBoot, used) {
		t.Errorf("the demo ran Envoy with a bootstrap other than the example's with the demo's addresses:\n%s", data)
	}
	return append(demoAddresses(cfg, view), envoy[1], envoy[2])
}

// checkDemoTable checks every routed row of the demo table against the demo's naming view:
// the replica named answered, at its address, with its role, in the partition partroute
// chose; writes reached primaries and reads asked of secondaries reached secondaries.
func checkDemoTable(t *testing.T, text string, view *resolver.View) {
	t.Helper()
	replicas := map[string]resolver.Replica{}
	for _, sv := range view.Services {
		for _, p := range sv.Partitions {
			for j, r := range p.Replicas {
				replicas[p.ID+"/replica-"+strconv.Itoa(j+1)] = r
			}
		}
	}
	_, table, ok := strings.Cut(text, "\nREQUEST")
	if !ok {
		t.Fatalf("no table in the demo output:\n%s", text)
	}
	table, _, _ = strings.Cut(table, "\n\n")
	cells := regexp.MustCompile(`\s{2,}`)
	routed, secondaryReads := 0, 0
	for _, line := range strings.Split(table, "\n")[1:] {
		f := cells.Split(strings.TrimSpace(line), -1)
		if len(f) != 7 {
			t.Errorf("row %q has %d columns, want 7", line, len(f))
			continue
		}
		if f[1] != "200" {
			continue
		}
		routed++
		partition, asked, by, role, addr := f[2], f[3], f[4], f[5], f[6]
		r, ok := replicas[by]
		if !ok || !strings.HasPrefix(by, partition+"/replica-") {
			t.Errorf("row %q: %s is not a replica of partition %s", line, by, partition)
			continue
		}
		if r.Address != addr || r.Role.String() != role {
			t.Errorf("row %q: the naming view has %s at %s as %s", line, by, r.Address, r.Role)
		}
		if (strings.HasPrefix(f[0], "PUT ") || asked == "primary") && role != "primary" {
			t.Errorf("row %q: asked for the primary, answered by a %s", line, role)
		}
		if asked == "secondary" {
			if role != "secondary" {
				t.Errorf("row %q: asked for a secondary, answered by a %s", line, role)
			}
			secondaryReads++
		}
	}
	if routed < 10 || secondaryReads == 0 {
		t.Errorf("the table shows %d routed requests, %d of them to secondaries; want the example's writes and reads:\n%s", routed, secondaryReads, text)
	}
}

// demoAddresses returns partroute's listen addresses and every replica's.
func demoAddresses(cfg *config.Config, view *resolver.View) []string {
	out := []string{cfg.Listen.ExtProc, cfg.Listen.Admin}
	if cfg.Listen.XDS != "" {
		out = append(out, cfg.Listen.XDS)
	}
	for _, sv := range view.Services {
		for _, p := range sv.Partitions {
			for _, r := range p.Replicas {
				out = append(out, r.Address)
			}
		}
	}
	return out
}

// withAddressesOf returns a copy of view with the replica addresses of other, replica for
// replica, and an error if other differs from view in anything else.
func withAddressesOf(view, other *resolver.View) (*resolver.View, error) {
	out := &resolver.View{Version: other.Version, Services: map[string]*resolver.ServiceView{}}
	if len(view.Services) != len(other.Services) {
		return nil, fmt.Errorf("%d services, not %d", len(other.Services), len(view.Services))
	}
	for name, sv := range view.Services {
		osv := other.Services[name]
		if osv == nil || len(osv.Partitions) != len(sv.Partitions) || osv.Kind != sv.Kind {
			return nil, fmt.Errorf("service %s differs", name)
		}
		cp := *sv
		cp.Partitions = make([]resolver.Partition, len(sv.Partitions))
		for i, p := range sv.Partitions {
			op := osv.Partitions[i]
			if op.ID != p.ID || op.Index != p.Index || op.LowKey != p.LowKey || op.HighKey != p.HighKey || op.Name != p.Name || len(op.Replicas) != len(p.Replicas) {
				return nil, fmt.Errorf("partition %s differs", p.ID)
			}
			p.Replicas = append([]resolver.Replica(nil), p.Replicas...)
			for j := range p.Replicas {
				if op.Replicas[j].Role != p.Replicas[j].Role || op.Replicas[j].Healthy != p.Replicas[j].Healthy {
					return nil, fmt.Errorf("replica %d of partition %s differs", j+1, p.ID)
				}
				p.Replicas[j].Address = op.Replicas[j].Address
			}
			cp.Partitions[i] = p
		}
		out.Services[name] = &cp
	}
	return out, nil
}

// TestDemoBusyEnvoyAddress gives the demo an Envoy address that is in use: it must fail at
// once with an error that names the flag and the address.
func TestDemoBusyEnvoyAddress(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.Addr().String()
	for _, flag := range []string{"-envoy-listen", "-envoy-admin"} {
		t.Run(flag, func(t *testing.T) {
			var stdout bytes.Buffer
			o := Options{Once: true}
			if flag == "-envoy-listen" {
				o.EnvoyListen = addr
			} else {
				o.EnvoyAdmin = addr
			}
			done := make(chan error, 1)
			go func() { done <- Run(context.Background(), o, &stdout) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatalf("the demo still runs 10s after it was given a busy %s", flag)
			}
			want := flag + " " + addr + ": the address is in use"
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("error %v does not say %q", err, want)
			}
			if stdout.Len() != 0 {
				t.Errorf("the demo printed a table with a busy %s:\n%s", flag, stdout.String())
			}
		})
	}
}

// TestDemoConfigYAML checks the demo's copy of a configuration: the listen addresses and the
// naming file are the demo's, everything else is as the user wrote it, comments included.
func TestDemoConfigYAML(t *testing.T) {
	example, err := os.ReadFile(exampleConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	const services = "services:\n  - name: settings\n    match: {pathPrefix: /api/settings}\n    partitioning: {scheme: singleton}\n"
	listen := config.Listen{ExtProc: "127.0.0.1:40001", Admin: "127.0.0.1:40002"}
	withXDS := config.Listen{ExtProc: "127.0.0.1:40001", XDS: "127.0.0.1:40003", Admin: "127.0.0.1:40002"}
	for _, tc := range []struct {
		name   string
		in     string
		listen config.Listen
		keep   []string // text the copy must still hold
	}{
		{"the example", string(example), listen, []string{"# Every field is described in docs/configuration.md.", "# gRPC ext_proc for Envoy", "resolveTimeout: 100ms"}},
		{"flow style", "listen: {extproc: 10.0.0.1:50051, admin: 10.0.0.1:9901}\nnaming: {source: file, file: /etc/partroute/naming.yaml}\n" + services, listen, []string{"pathPrefix: /api/settings"}},
		{"no listen block", "naming: {file: n.yaml}\n" + services, listen, nil},
		{"an empty listen block", "listen:\nnaming: {file: n.yaml}\n" + services, listen, nil},
		{"with xds", "listen: {extproc: 127.0.0.1:50051, xds: 127.0.0.1:18000, admin: 127.0.0.1:9901}\nnaming: {file: n.yaml}\n" + services, withXDS, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before, err := config.Parse([]byte(tc.in), "/work/partroute.yaml")
			if err != nil {
				t.Fatalf("the input does not load: %v", err)
			}
			out, err := demoConfigYAML([]byte(tc.in), tc.listen, "naming.yaml")
			if err != nil {
				t.Fatal(err)
			}
			after, err := config.Parse(out, "/demo/partroute.yaml")
			if err != nil {
				t.Fatalf("the copy does not load: %v\n%s", err, out)
			}
			if after.Listen != tc.listen || after.Naming.File != "/demo/naming.yaml" {
				t.Errorf("the copy listens on %+v with naming file %s, want %+v and /demo/naming.yaml:\n%s", after.Listen, after.Naming.File, tc.listen, out)
			}
			if after.Cache != before.Cache || after.Headers != before.Headers || after.Unmatched != before.Unmatched || len(after.Services) != len(before.Services) {
				t.Errorf("the copy changed more than the listen addresses and the naming file:\n%s", out)
			}
			for _, s := range tc.keep {
				if !strings.Contains(string(out), s) {
					t.Errorf("the copy lost %q:\n%s", s, out)
				}
			}
		})
	}
	if _, err := demoConfigYAML([]byte("- a list\n"), listen, "naming.yaml"); err == nil {
		t.Error("a configuration that is not a mapping was rewritten")
	}
}

// TestWaitPartroute checks that the demo's wait for partroute ends in every case, and accepts
// only a partroute that serves the demo's naming view.
func TestWaitPartroute(t *testing.T) {
	const version = "0123456789abcdef"
	ours := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			fmt.Fprintf(w, "partroute_naming_view_info{version=%q} 1\n", version)
		}
	}
	anotherPartroute := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/metrics" {
			fmt.Fprintln(w, `partroute_naming_view_info{version="fedcba9876543210"} 1`)
		}
	}
	notReady := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		stopped bool
		want    string // empty: ready
	}{
		{"the demo's partroute", ours, false, ""},
		{"another partroute", anotherPartroute, false, "not as the partroute the demo started"},
		{"another server", func(http.ResponseWriter, *http.Request) {}, false, "another process is listening on that port"},
		{"never ready", notReady, false, "not ready within 1s (last: /readyz answered 503)"},
		{"partroute stopped", notReady, true, "partroute stopped: listen.extproc: address already in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			stopped := make(chan struct{})
			var stopErr error
			if tc.stopped {
				stopErr = errors.New("listen.extproc: address already in use")
				close(stopped)
			}
			done := make(chan error, 1)
			go func() {
				done <- waitPartroute(context.Background(), strings.TrimPrefix(srv.URL, "http://"), version, stopped, &stopErr, time.Second)
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("the wait still runs 10s after it started, with a 1s bound")
			}
			if tc.want == "" {
				if err != nil {
					t.Errorf("err = %v, want ready", err)
				}
			} else if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}
