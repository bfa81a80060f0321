package servicefabric

import (
	"github.com/partroute/partroute/config"
)

// ClientOptionsFromConfig returns the client options that naming.servicefabric of
// partroute.yaml describes. Metrics, and the test hooks, are left for the caller to set.
func ClientOptionsFromConfig(sf config.ServiceFabric) ClientOptions {
	return ClientOptions{
		Endpoint:      sf.Endpoint,
		APIVersion:    sf.APIVersion,
		Timeout:       sf.Timeout,
		Retries:       sf.Retries,
		MaxConcurrent: sf.MaxConcurrent,
		TLS: TLSOptions{
			CertFile:         sf.TLS.Cert,
			KeyFile:          sf.TLS.Key,
			CAFile:           sf.TLS.CA,
			ServerThumbprint: sf.TLS.ServerThumbprint,
		},
	}
}

// MappingsFromConfig returns the fabric mapping of every configured service that has one
// (services[].fabric), keyed by service name.
func MappingsFromConfig(cfg *config.Config) map[string]ServiceMapping {
	out := make(map[string]ServiceMapping, len(cfg.Services))
	for _, svc := range cfg.Services {
		if svc.Fabric.Name != "" {
			out[svc.Name] = ServiceMapping{FabricName: svc.Fabric.Name, ListenerName: svc.Fabric.Listener}
		}
	}
	return out
}

// SourceOptionsFromConfig returns the source options a configuration describes: its mappings,
// its cache settings and naming.servicefabric.reresolveMinInterval, over client. Metrics, Now
// and Log are left for the caller to set. naming.servicefabric.enumerateInterval is Run's
// interval.
func SourceOptionsFromConfig(cfg *config.Config, client *Client) SourceOptions {
	return SourceOptions{
		Client:               client,
		Services:             MappingsFromConfig(cfg),
		Size:                 cfg.Cache.Size,
		TTL:                  cfg.Cache.TTL,
		StaleIfError:         cfg.Cache.StaleIfError,
		ResolveTimeout:       cfg.Cache.ResolveTimeout,
		ReresolveMinInterval: cfg.Naming.ServiceFabric.ReresolveMinInterval,
		EnumerateInterval:    cfg.Naming.ServiceFabric.EnumerateInterval,
	}
}
