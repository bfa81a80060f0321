package config

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"
)

// The naming sources.
const (
	SourceFile          = "file"
	SourceEtcd          = "etcd"
	SourceServiceFabric = "servicefabric"
)

// Defaults of the naming sources' settings.
const (
	DefaultEtcdPrefix          = "/partroute/naming/"
	DefaultEtcdDialTimeout     = 2 * time.Second
	DefaultSFAPIVersion        = "6.0"
	DefaultSFTimeout           = 2 * time.Second
	DefaultSFRetries           = 2
	DefaultSFMaxConcurrent     = 16
	DefaultSFEnumerateInterval = 10 * time.Second
	DefaultSFReresolveInterval = time.Second
)

// Etcd is where the etcd naming source reads the view.
type Etcd struct {
	Endpoints   []string
	Prefix      string
	DialTimeout time.Duration
}

// ServiceFabric is how the servicefabric naming source reaches the cluster's HTTP gateway.
type ServiceFabric struct {
	// Endpoint is the gateway's base URL, such as https://cluster.example.com:19080.
	Endpoint   string
	APIVersion string
	// Timeout bounds one gateway call; Retries is how many times a failed call is repeated.
	Timeout time.Duration
	Retries int
	// MaxConcurrent bounds the calls in flight to the gateway.
	MaxConcurrent int
	// EnumerateInterval is how often every service's partitions and replicas are listed, for
	// xDS and to notice changes.
	EnumerateInterval time.Duration
	// ReresolveMinInterval is the least time between two failure-driven re-resolutions of one
	// partition.
	ReresolveMinInterval time.Duration
	TLS                  TLS
}

// TLS is a client's TLS settings. Paths are absolute.
type TLS struct {
	Cert, Key, CA string
	// ServerThumbprint pins the gateway's certificate by its SHA-1 thumbprint, in hex.
	ServerThumbprint string
}

// Fabric maps a service to its Service Fabric name.
type Fabric struct {
	// Name is the service's name in the cluster, such as fabric:/app/users.
	Name string
	// Listener chooses the replica endpoint by listener name; empty takes the first http one.
	Listener string
}

// Upstream is how Envoy talks to a service's replicas, in the clusters partroute generates.
type Upstream struct {
	// Protocol is "http1" (the default) or "http2".
	Protocol       string
	ConnectTimeout time.Duration
	// HealthCheck, when set, adds Envoy's active HTTP health check of every replica.
	HealthCheck *HealthCheck
}

// HealthCheck is an active HTTP health check.
type HealthCheck struct {
	Path              string
	Interval, Timeout time.Duration
}

type namingFile struct {
	Source string `yaml:"source"`
	File   string `yaml:"file"`
	Etcd   struct {
		Endpoints   []string       `yaml:"endpoints"`
		Prefix      string         `yaml:"prefix"`
		DialTimeout *time.Duration `yaml:"dialTimeout"`
	} `yaml:"etcd"`
	ServiceFabric struct {
		Endpoint             string         `yaml:"endpoint"`
		APIVersion           string         `yaml:"apiVersion"`
		Timeout              *time.Duration `yaml:"timeout"`
		Retries              *int           `yaml:"retries"`
		MaxConcurrent        *int           `yaml:"maxConcurrent"`
		EnumerateInterval    *time.Duration `yaml:"enumerateInterval"`
		ReresolveMinInterval *time.Duration `yaml:"reresolveMinInterval"`
		TLS                  tlsFile        `yaml:"tls"`
	} `yaml:"servicefabric"`
}

type tlsFile struct {
	Cert             string `yaml:"cert"`
	Key              string `yaml:"key"`
	CA               string `yaml:"ca"`
	ServerThumbprint string `yaml:"serverThumbprint"`
}

type fabricFile struct {
	Name     string `yaml:"name"`
	Listener string `yaml:"listener"`
}

type upstreamFile struct {
	Protocol       string         `yaml:"protocol"`
	ConnectTimeout *time.Duration `yaml:"connectTimeout"`
	HealthCheck    *struct {
		Path     string         `yaml:"path"`
		Interval *time.Duration `yaml:"interval"`
		Timeout  *time.Duration `yaml:"timeout"`
	} `yaml:"healthCheck"`
}

// parseNaming reads the naming block. Each source's block is checked only when it is the
// source in use; a block for another source is an error, since it would silently do nothing.
func parseNaming(f *namingFile, path string, errs *Errors, at func(string) int) Naming {
	n := Naming{Source: f.Source}
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(filepath.Dir(path), p)
	}
	if n.Source == "" {
		n.Source = SourceFile
	}
	unused := func(field string, set bool) {
		if set {
			errs.Add("naming."+field, at("naming."+field), "is set but naming.source is %s", n.Source)
		}
	}
	etcdSet := f.Etcd.Endpoints != nil || f.Etcd.Prefix != "" || f.Etcd.DialTimeout != nil
	sf := &f.ServiceFabric
	sfSet := sf.Endpoint != "" || sf.APIVersion != "" || sf.Timeout != nil || sf.Retries != nil || sf.MaxConcurrent != nil ||
		sf.EnumerateInterval != nil || sf.ReresolveMinInterval != nil || sf.TLS != (tlsFile{})
	switch n.Source {
	case SourceFile:
		unused("etcd", etcdSet)
		unused("servicefabric", sfSet)
		if f.File == "" {
			errs.Add("naming.file", at("naming"), "the file naming source needs a file")
		}
		n.File = abs(f.File)
	case SourceEtcd:
		unused("file", f.File != "")
		unused("servicefabric", sfSet)
		n.Etcd = Etcd{Endpoints: f.Etcd.Endpoints, Prefix: f.Etcd.Prefix, DialTimeout: DefaultEtcdDialTimeout}
		if len(n.Etcd.Endpoints) == 0 {
			errs.Add("naming.etcd.endpoints", at("naming"), "the etcd naming source needs at least one endpoint (host:port)")
		}
		for i, e := range n.Etcd.Endpoints {
			if err := checkHostPort(strings.TrimPrefix(strings.TrimPrefix(e, "http://"), "https://")); err != nil {
				p := fmt.Sprintf("naming.etcd.endpoints[%d]", i)
				errs.Add(p, at(p), "%v", err)
			}
		}
		if n.Etcd.Prefix == "" {
			n.Etcd.Prefix = DefaultEtcdPrefix
		} else if !strings.HasPrefix(n.Etcd.Prefix, "/") || !strings.HasSuffix(n.Etcd.Prefix, "/") {
			errs.Add("naming.etcd.prefix", at("naming.etcd.prefix"), "%q must start and end with /", n.Etcd.Prefix)
		}
		positive(errs, at, "naming.etcd.dialTimeout", f.Etcd.DialTimeout, &n.Etcd.DialTimeout)
	case SourceServiceFabric:
		unused("file", f.File != "")
		unused("etcd", etcdSet)
		n.ServiceFabric = ServiceFabric{
			Endpoint: sf.Endpoint, APIVersion: sf.APIVersion, Timeout: DefaultSFTimeout, Retries: DefaultSFRetries,
			MaxConcurrent: DefaultSFMaxConcurrent, EnumerateInterval: DefaultSFEnumerateInterval, ReresolveMinInterval: DefaultSFReresolveInterval,
			TLS: TLS{Cert: abs(sf.TLS.Cert), Key: abs(sf.TLS.Key), CA: abs(sf.TLS.CA), ServerThumbprint: strings.ToLower(sf.TLS.ServerThumbprint)},
		}
		p := "naming.servicefabric"
		if u, err := url.Parse(sf.Endpoint); sf.Endpoint == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs.Add(p+".endpoint", at(p+".endpoint"), "%q is not the gateway's http:// or https:// URL, such as https://cluster.example.com:19080", sf.Endpoint)
		}
		if n.ServiceFabric.APIVersion == "" {
			n.ServiceFabric.APIVersion = DefaultSFAPIVersion
		}
		positive(errs, at, p+".timeout", sf.Timeout, &n.ServiceFabric.Timeout)
		positive(errs, at, p+".enumerateInterval", sf.EnumerateInterval, &n.ServiceFabric.EnumerateInterval)
		positive(errs, at, p+".reresolveMinInterval", sf.ReresolveMinInterval, &n.ServiceFabric.ReresolveMinInterval)
		if sf.Retries != nil {
			if n.ServiceFabric.Retries = *sf.Retries; *sf.Retries < 0 || *sf.Retries > 10 {
				errs.Add(p+".retries", at(p+".retries"), "%d is not between 0 and 10", *sf.Retries)
			}
		}
		if sf.MaxConcurrent != nil {
			if n.ServiceFabric.MaxConcurrent = *sf.MaxConcurrent; *sf.MaxConcurrent < 1 {
				errs.Add(p+".maxConcurrent", at(p+".maxConcurrent"), "%d is below 1", *sf.MaxConcurrent)
			}
		}
		t := n.ServiceFabric.TLS
		if (t.Cert == "") != (t.Key == "") {
			errs.Add(p+".tls", at(p+".tls"), "a client certificate needs both cert and key")
		}
		if tp := t.ServerThumbprint; tp != "" {
			if b, err := hex.DecodeString(tp); err != nil || len(b) != 20 {
				errs.Add(p+".tls.serverThumbprint", at(p+".tls.serverThumbprint"), "%q is not a SHA-1 thumbprint (40 hex digits)", sf.TLS.ServerThumbprint)
			}
		}
	default:
		errs.Add("naming.source", at("naming.source"), "%q is not a naming source; use file, etcd or servicefabric", f.Source)
	}
	return n
}

// positive copies a duration that was set into dst, reporting one that is not above zero.
func positive(errs *Errors, at func(string) int, field string, v, dst *time.Duration) {
	if v == nil {
		return
	}
	*dst = *v
	if *v <= 0 {
		errs.Add(field, at(field), "%v must be above 0", *v)
	}
}

func parseFabric(f *fabricFile, p string, errs *Errors, at func(string) int) Fabric {
	fb := Fabric{Name: f.Name, Listener: f.Listener}
	if fb.Name != "" && (!strings.HasPrefix(fb.Name, "fabric:/") || len(fb.Name) == len("fabric:/") || strings.ContainsAny(fb.Name, " ?#")) {
		errs.Add(p+".fabric.name", at(p+".fabric.name"), "%q is not a Service Fabric name such as fabric:/app/service", fb.Name)
	}
	return fb
}

func parseUpstream(f *upstreamFile, p string, errs *Errors, at func(string) int) Upstream {
	u := Upstream{Protocol: f.Protocol}
	switch u.Protocol {
	case "":
		u.Protocol = "http1"
	case "http1", "http2":
	default:
		errs.Add(p+".upstream.protocol", at(p+".upstream.protocol"), "%q is not http1 or http2", f.Protocol)
	}
	positive(errs, at, p+".upstream.connectTimeout", f.ConnectTimeout, &u.ConnectTimeout)
	if hc := f.HealthCheck; hc != nil {
		u.HealthCheck = &HealthCheck{Path: hc.Path, Interval: 5 * time.Second, Timeout: time.Second}
		if !strings.HasPrefix(hc.Path, "/") {
			errs.Add(p+".upstream.healthCheck.path", at(p+".upstream.healthCheck"), "%q must be a path starting with /", hc.Path)
		}
		positive(errs, at, p+".upstream.healthCheck.interval", hc.Interval, &u.HealthCheck.Interval)
		positive(errs, at, p+".upstream.healthCheck.timeout", hc.Timeout, &u.HealthCheck.Timeout)
	}
	return u
}
