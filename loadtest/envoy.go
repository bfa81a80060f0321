package loadtest

import (
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/resolver"
)

// EnvoyBootstrap is the Envoy configuration of an http run: partroute's generated bootstrap,
// with the ext_proc filter left out when noExtProc is set, and with every service cluster
// falling back to any of its endpoints when a request carries no partition criteria.
//
// The fallback is what lets the baselines through: neither the no-op ext_proc server nor an
// Envoy without the filter sets envoy.lb criteria, and partroute's own clusters (NO_FALLBACK)
// would answer them 503. All three arms of a comparison use the same fallback, so the only
// difference between them is the ext_proc hop and what the server does in it; partroute's
// requests carry criteria and still reach the replica of their subset.
func EnvoyBootstrap(cfg *config.Config, view *resolver.View, opts envoyconfig.Options) (*bootstrapv3.Bootstrap, error) {
	b, err := envoyconfig.Bootstrap(cfg, view, opts)
	if err != nil {
		return nil, err
	}
	for _, c := range b.GetStaticResources().GetClusters() {
		if ss := c.GetLbSubsetConfig(); ss != nil {
			ss.FallbackPolicy = clusterv3.Cluster_LbSubsetConfig_ANY_ENDPOINT
		}
	}
	if err := envoyconfig.Validate(b); err != nil {
		return nil, err
	}
	return b, nil
}
