package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
)

const sourcesBase = `
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: singleton}
`

func TestNamingSources(t *testing.T) {
	c, err := config.Parse([]byte("naming: {source: etcd, etcd: {endpoints: [127.0.0.1:2379, 'http://10.0.0.1:2379']}}"+sourcesBase), "/etc/p/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if e := c.Naming.Etcd; c.Naming.Source != config.SourceEtcd || len(e.Endpoints) != 2 || e.Prefix != config.DefaultEtcdPrefix || e.DialTimeout != config.DefaultEtcdDialTimeout {
		t.Errorf("etcd naming = %+v", c.Naming)
	}

	sf := `naming:
  source: servicefabric
  servicefabric:
    endpoint: https://cluster.example.com:19080
    retries: 3
    tls: {cert: c.pem, key: k.pem, ca: /abs/ca.pem, serverThumbprint: 0123456789ABCDEF0123456789abcdef01234567}
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: singleton}
    fabric: {name: "fabric:/app/users", listener: web}
    upstream: {protocol: http2, connectTimeout: 250ms, healthCheck: {path: /healthz}}
`
	c, err = config.Parse([]byte(sf), "/etc/p/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.Naming.ServiceFabric
	want := config.ServiceFabric{
		Endpoint: "https://cluster.example.com:19080", APIVersion: "6.0", Timeout: config.DefaultSFTimeout, Retries: 3,
		MaxConcurrent: config.DefaultSFMaxConcurrent, EnumerateInterval: config.DefaultSFEnumerateInterval, ReresolveMinInterval: config.DefaultSFReresolveInterval,
		TLS: config.TLS{Cert: "/etc/p/c.pem", Key: "/etc/p/k.pem", CA: "/abs/ca.pem", ServerThumbprint: "0123456789abcdef0123456789abcdef01234567"},
	}
	if s != want {
		t.Errorf("servicefabric naming\n got %+v\nwant %+v", s, want)
	}
	svc := c.Services[0]
	if svc.Fabric != (config.Fabric{Name: "fabric:/app/users", Listener: "web"}) {
		t.Errorf("fabric = %+v", svc.Fabric)
	}
	if u := svc.Upstream; u.Protocol != "http2" || u.ConnectTimeout != 250*time.Millisecond || u.HealthCheck == nil || *u.HealthCheck != (config.HealthCheck{Path: "/healthz", Interval: 5 * time.Second, Timeout: time.Second}) {
		t.Errorf("upstream = %+v (health check %+v)", u, u.HealthCheck)
	}
}

func TestNamingSourceErrors(t *testing.T) {
	cases := []struct{ name, yaml, path, fragment string }{
		{"etcd without endpoints", "naming: {source: etcd}", "naming.etcd.endpoints", "at least one endpoint"},
		{"etcd endpoint without port", "naming: {source: etcd, etcd: {endpoints: [localhost]}}", "naming.etcd.endpoints[0]", "not host:port"},
		{"etcd prefix", "naming: {source: etcd, etcd: {endpoints: [a:1], prefix: naming}}", "naming.etcd.prefix", "must start and end with /"},
		{"etcd dial timeout", "naming: {source: etcd, etcd: {endpoints: [a:1], dialTimeout: 0s}}", "naming.etcd.dialTimeout", "must be above 0"},
		{"etcd block with file source", "naming: {file: n.yaml, etcd: {prefix: /x/}}", "naming.etcd", "naming.source is file"},
		{"file with etcd source", "naming: {source: etcd, file: n.yaml, etcd: {endpoints: [a:1]}}", "naming.file", "naming.source is etcd"},
		{"unknown source", "naming: {source: zookeeper}", "naming.source", "use file, etcd or servicefabric"},
		{"sf endpoint", "naming: {source: servicefabric, servicefabric: {endpoint: cluster:19080}}", "naming.servicefabric.endpoint", "http:// or https://"},
		{"sf retries", "naming: {source: servicefabric, servicefabric: {endpoint: 'http://c:1', retries: 11}}", "naming.servicefabric.retries", "between 0 and 10"},
		{"sf concurrency", "naming: {source: servicefabric, servicefabric: {endpoint: 'http://c:1', maxConcurrent: 0}}", "naming.servicefabric.maxConcurrent", "below 1"},
		{"sf cert without key", "naming: {source: servicefabric, servicefabric: {endpoint: 'http://c:1', tls: {cert: c.pem}}}", "naming.servicefabric.tls", "both cert and key"},
		{"sf thumbprint", "naming: {source: servicefabric, servicefabric: {endpoint: 'http://c:1', tls: {serverThumbprint: abc}}}", "naming.servicefabric.tls.serverThumbprint", "40 hex digits"},
		{"sf service without fabric name", "naming: {source: servicefabric, servicefabric: {endpoint: 'http://c:1'}}", "services[0].fabric.name", "fabric:/app/users"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml+sourcesBase), "/etc/p/partroute.yaml")
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), c.path+": ") || !strings.Contains(err.Error(), c.fragment) {
				t.Errorf("error %q lacks %q with %q", err, c.path, c.fragment)
			}
		})
	}
}

func TestServiceBlockErrors(t *testing.T) {
	base := "naming: {file: n.yaml}\nservices:\n  - name: users\n    partitioning: {scheme: singleton}\n"
	cases := []struct{ name, extra, path, fragment string }{
		{"fabric name", "    fabric: {name: app/users}\n", "services[0].fabric.name", "fabric:/app/service"},
		{"protocol", "    upstream: {protocol: http3}\n", "services[0].upstream.protocol", "http1 or http2"},
		{"connect timeout", "    upstream: {connectTimeout: -1s}\n", "services[0].upstream.connectTimeout", "above 0"},
		{"health check path", "    upstream: {healthCheck: {path: healthz}}\n", "services[0].upstream.healthCheck.path", "starting with /"},
		{"health check interval", "    upstream: {healthCheck: {path: /h, interval: 0s}}\n", "services[0].upstream.healthCheck.interval", "above 0"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(base+c.extra), "/etc/p/partroute.yaml")
			if err == nil || !strings.Contains(err.Error(), c.path+": ") || !strings.Contains(err.Error(), c.fragment) {
				t.Errorf("error %v lacks %q with %q", err, c.path, c.fragment)
			}
		})
	}
}
