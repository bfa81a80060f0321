package server

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
)

func TestWarnRestartOnly(t *testing.T) {
	base := func() *config.Config {
		return &config.Config{
			Listen: config.Listen{ExtProc: "127.0.0.1:1", Admin: "127.0.0.1:2", TLS: config.ListenTLS{
				ExtProc: config.ServerTLS{Cert: "/etc/partroute/server.pem", Key: "/etc/partroute/server.key", ClientCA: "/etc/partroute/ca.pem", RequireClientCert: true},
			}},
			Cache:  config.Cache{Size: 10, TTL: time.Second},
			Naming: config.Naming{Etcd: config.Etcd{Endpoints: []string{"127.0.0.1:2379"}}},
		}
	}
	for _, c := range []struct {
		name   string
		change func(*config.Config)
		want   string
	}{
		{"nothing", func(*config.Config) {}, ""},
		{"listen", func(c *config.Config) { c.Listen.Admin = "127.0.0.1:3" }, "field=listen"},
		{"listen.tls", func(c *config.Config) { c.Listen.TLS.ExtProc.Cert = "/etc/partroute/new.pem" }, "field=listen.tls"},
		{"listen.tls client certificates", func(c *config.Config) { c.Listen.TLS.ExtProc.RequireClientCert = false }, "field=listen.tls"},
		{"cache", func(c *config.Config) { c.Cache.TTL = time.Minute }, "field=cache"},
		{"etcd endpoints", func(c *config.Config) { c.Naming.Etcd.Endpoints = []string{"127.0.0.1:2380"} }, "field=naming.etcd"},
		{"fabric interval", func(c *config.Config) { c.Naming.ServiceFabric.EnumerateInterval = time.Hour }, "field=naming.servicefabric"},
		{"ext_proc streams", func(c *config.Config) { c.Limits.ExtProc.MaxConcurrentStreams = 7 }, "field=limits.extproc.maxConcurrentStreams"},
		{"xds streams", func(c *config.Config) { c.Limits.XDS.MaxConcurrentStreams = 7 }, "field=limits.xds.maxConcurrentStreams"},
		{"admin read timeout", func(c *config.Config) { c.Limits.Admin.ReadTimeout = time.Hour }, "field=limits.admin.readTimeout"},
		{"admin write timeout", func(c *config.Config) { c.Limits.Admin.WriteTimeout = time.Hour }, "field=limits.admin.writeTimeout"},
		{"admin idle timeout", func(c *config.Config) { c.Limits.Admin.IdleTimeout = time.Hour }, "field=limits.admin.idleTimeout"},
		{"admin header bytes", func(c *config.Config) { c.Limits.Admin.MaxHeaderBytes = 7 }, "field=limits.admin.maxHeaderBytes"},
		// The limits read at every connection, stream or request follow a reload.
		{"reloadable limits", func(c *config.Config) {
			c.Limits.ExtProc.MaxConnections, c.Limits.XDS.MaxConnections, c.Limits.Admin.MaxConnections = 7, 7, 7
			c.Limits.ExtProc.StreamIdleTimeout = time.Hour
			c.Limits.RequestHeaders = config.HeaderLimits{MaxCount: 7, MaxBytes: 7}
			c.Limits.Failover = config.FailoverLimits{MaxHeld: 7, MaxHeldPerPartition: 7}
		}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out bytes.Buffer
			next := base()
			c.change(next)
			warnRestartOnly(slog.New(slog.NewTextHandler(&out, nil)), base(), next)
			got := out.String()
			if c.want == "" {
				if got != "" {
					t.Errorf("warned about an unchanged configuration: %s", got)
				}
				return
			}
			if strings.Count(got, "level=WARN") != 1 || !strings.Contains(got, c.want) {
				t.Errorf("log %q, want one warning with %s", got, c.want)
			}
		})
	}
}
