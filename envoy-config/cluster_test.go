package envoyconfig

import (
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/partroute/partroute/config"
)

func TestServiceClusterUpstream(t *testing.T) {
	plain := &config.Service{Name: "users", Upstream: config.Upstream{Protocol: "http1"}}
	c, err := ServiceCluster(plain, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetType() != clusterv3.Cluster_STATIC || c.GetEdsClusterConfig() != nil || c.TypedExtensionProtocolOptions != nil || c.HealthChecks != nil {
		t.Errorf("plain static cluster: %v", c)
	}
	if c.GetConnectTimeout().AsDuration() != DefaultConnectTimeout {
		t.Errorf("connect timeout %v, want the default", c.GetConnectTimeout().AsDuration())
	}

	tuned := &config.Service{Name: "users", Upstream: config.Upstream{Protocol: "http2", ConnectTimeout: 250 * time.Millisecond,
		HealthCheck: &config.HealthCheck{Path: "/healthz", Interval: 3 * time.Second, Timeout: time.Second}}}
	c, err = ServiceCluster(tuned, Options{ConnectTimeout: 5 * time.Second}, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Errorf("EDS cluster does not take endpoints from ADS: %v", c)
	}
	if c.GetConnectTimeout().AsDuration() != 250*time.Millisecond {
		t.Errorf("the service's connect timeout does not win over the option: %v", c.GetConnectTimeout().AsDuration())
	}
	if _, ok := c.TypedExtensionProtocolOptions[httpProtocolOptions]; !ok {
		t.Error("http2 upstream has no HTTP/2 protocol options")
	}
	if len(c.HealthChecks) != 1 || c.HealthChecks[0].GetHttpHealthCheck().GetPath() != "/healthz" || c.HealthChecks[0].GetInterval().AsDuration() != 3*time.Second {
		t.Errorf("health check = %v", c.HealthChecks)
	}
	if err := c.ValidateAll(); err != nil {
		t.Errorf("cluster does not validate: %v", err)
	}
	if len(c.GetLbSubsetConfig().GetSubsetSelectors()) != 2 || c.GetLbSubsetConfig().GetFallbackPolicy() != clusterv3.Cluster_LbSubsetConfig_NO_FALLBACK {
		t.Errorf("subset config = %v", c.GetLbSubsetConfig())
	}
}
