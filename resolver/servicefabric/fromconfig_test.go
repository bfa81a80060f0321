package servicefabric

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/keying"
)

func TestFromConfig(t *testing.T) {
	env := newEnv(t, nil, nil)
	cfg := loadConfig(t, `
naming:
  source: servicefabric
  servicefabric:
    endpoint: `+"https://cluster.example.com:19080"+`
    timeout: 1500ms
    retries: 3
    maxConcurrent: 4
    reresolveMinInterval: 2s
    tls: {cert: client.pem, key: client.key, ca: ca.pem, serverThumbprint: 5F3660C715EBBDA31DB1FFDCF508302348DE8E7A}
cache: {size: 500, ttl: 10s, staleIfError: 1m, resolveTimeout: 150ms}
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: singleton}
    fabric: {name: "fabric:/shop/users", listener: web}
`)
	co := ClientOptionsFromConfig(cfg.Naming.ServiceFabric)
	if co.Endpoint != "https://cluster.example.com:19080" || co.APIVersion != DefaultAPIVersion || co.Timeout != 1500*time.Millisecond || co.Retries != 3 || co.MaxConcurrent != 4 {
		t.Errorf("client options %+v", co)
	}
	if !strings.HasSuffix(co.TLS.CertFile, "/client.pem") || !strings.HasSuffix(co.TLS.KeyFile, "/client.key") || !strings.HasSuffix(co.TLS.CAFile, "/ca.pem") ||
		!strings.EqualFold(co.TLS.ServerThumbprint, "5F3660C715EBBDA31DB1FFDCF508302348DE8E7A") {
		t.Errorf("tls options %+v", co.TLS)
	}
	so := SourceOptionsFromConfig(cfg, env.src.client)
	if so.Client != env.src.client || so.Size != 500 || so.TTL != 10*time.Second || so.StaleIfError != time.Minute || so.ResolveTimeout != 150*time.Millisecond || so.ReresolveMinInterval != 2*time.Second {
		t.Errorf("source options %+v", so)
	}
	if m := so.Services["users"]; len(so.Services) != 1 || m != (ServiceMapping{FabricName: "fabric:/shop/users", ListenerName: "web"}) {
		t.Errorf("mappings %+v", so.Services)
	}
}

func TestSetServices(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	regions := env.cfg.Service("regions")
	p1, err := env.src.Partition(ctx, regions, keying.Key{Index: 0})
	if err != nil || p1.Replicas[0].Address != "10.0.1.4:8080" {
		t.Fatalf("through listener Zed: %v, %v", p1, err)
	}

	// An invalid mapping changes nothing.
	bad := testMappings()
	bad["regions"] = ServiceMapping{FabricName: "regions"}
	if err := env.src.SetServices(bad); err == nil {
		t.Fatal("SetServices accepted an invalid mapping")
	}
	if p, err := env.src.Partition(ctx, regions, keying.Key{Index: 0}); err != nil || p != p1 {
		t.Fatalf("after a refused SetServices: %v, %v", p, err)
	}

	// A reload that picks another listener: the entry resolved through the old one is not
	// served; the partition is resolved again through the new one.
	m := testMappings()
	m["regions"] = ServiceMapping{FabricName: "fabric:/shop/regions"}
	if err := env.src.SetServices(m); err != nil {
		t.Fatal(err)
	}
	p2, err := env.src.Partition(ctx, regions, keying.Key{Index: 0})
	if err != nil || p2.Replicas[0].Address != "10.0.1.4:8443" {
		t.Fatalf("through the first http listener: %v, %v", p2, err)
	}
	if n := len(env.gw.requests("/Services/shop~regions/")); n != 2 {
		t.Errorf("%d resolutions, want 2", n)
	}
	// Services left unchanged keep their entries.
	users := env.cfg.Service("users")
	if _, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil {
		t.Fatal(err)
	}
	if err := env.src.SetServices(m); err != nil {
		t.Fatal(err)
	}
	if _, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil || len(env.gw.requests("/Services/shop~users/")) != 1 {
		t.Errorf("an unchanged mapping lost its entry: %v", err)
	}
}
