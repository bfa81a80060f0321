// Package example loads the shipped example configuration and naming view for tests, once.
// It is apart from testkit because it imports config and resolver, which testkit must not:
// their own internal tests use testkit.
package example

import (
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
)

// Load loads envoy-config/examples' partroute.yaml and naming.yaml, failing the test if they
// do not load.
func Load(tb testing.TB) (*config.Config, *resolver.View) {
	tb.Helper()
	return LoadPair(tb, testkit.Example(tb, "partroute.yaml"), testkit.Example(tb, "naming.yaml"))
}

// LoadPair loads a configuration and a naming view that must be valid.
func LoadPair(tb testing.TB, cfgPath, namingPath string) (*config.Config, *resolver.View) {
	tb.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		tb.Fatal(err)
	}
	view, err := resolver.LoadViewFile(namingPath, cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg, view
}
