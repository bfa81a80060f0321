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
