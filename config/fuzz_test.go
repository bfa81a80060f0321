package config_test

import (
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
)

// FuzzConfigParse checks that Parse never panics, and that it returns either a usable
// configuration or a list of errors that each say where they are.
func FuzzConfigParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(matchConfig))
	f.Add([]byte(""))
	f.Add([]byte("services: ["))
	f.Add([]byte("naming: {file: n.yaml}\nservices: [{name: a, partitioning: {scheme: named, names: [a, a]}}]\n"))
	f.Add([]byte("naming: {file: n.yaml}\nx: &a [*a]\nservices: *a\n"))
	f.Add([]byte("naming: {file: n.yaml}\ncache: {ttl: 1.5, size: 1e3, resolveTimeout: 200ms}\n"))
	for _, broken := range []struct{ from, to string }{
		{"count: 4", "count: 40"},
		{"count: 4", "count: four"},
		{"lowKey: 0", "lowKey: 99"},
		{"transform: int64", "transform: name"},
		{"scheme: named", "scheme: singleton"},
		{"{cookie: session}", "{cookie: session, header: x}"},
		{"unmatched: passthrough", "unmatched: maybe"},
		{"name: regions", "name: users"},
		{"    match: {pathPrefix: /api/settings}\n", ""},
		{"resolveTimeout: 100ms", "resolveTimeout: 1s"},
	} {
		if !strings.Contains(string(example), broken.from) {
			f.Fatalf("the example no longer holds %q", broken.from)
		}
		f.Add([]byte(strings.Replace(string(example), broken.from, broken.to, 1)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := config.Parse(data, "/etc/partroute/partroute.yaml")
		if err != nil {
			if c != nil {
				t.Fatal("Parse returned a configuration along with an error")
			}
			var errs *config.Errors
			if !errors.As(err, &errs) || len(errs.List) == 0 {
				t.Fatalf("error %T is not a non-empty *config.Errors: %v", err, err)
			}
			for _, fe := range errs.List {
				if fe.Message == "" || fe.Line < 0 {
					t.Fatalf("error without a message or with line %d: %+v", fe.Line, fe)
				}
			}
			_ = err.Error()
			return
		}
		if len(c.ServicesByPrecedence()) != len(c.Services) {
			t.Fatalf("%d services by precedence, %d configured", len(c.ServicesByPrecedence()), len(c.Services))
		}
		for _, s := range c.Services {
			if s.Keyer == nil || s.Scheme() == nil || s.Name == "" || s.Reads == 0 {
				t.Fatalf("service %q is incomplete", s.Name)
			}
			if c.Match("", s.Match.PathPrefix) == nil && s.Match.Authority == "" {
				t.Fatalf("service %q does not match its own prefix", s.Name)
			}
		}
		if c.Cache.ResolveTimeout <= 0 || c.Cache.ResolveTimeout >= 200e6 || c.Cache.Size < 1 || c.MaxBodyBytes < 1 {
			t.Fatalf("limits out of range: %+v, maxBodyBytes %d", c.Cache, c.MaxBodyBytes)
		}
	})
}
