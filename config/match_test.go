package config_test

import (
	"testing"

	"github.com/partroute/partroute/config"
)

// matchConfig has services of every authority class and several path prefixes, listed in an
// order unrelated to their precedence.
const matchConfig = `
naming: {file: naming.yaml}
services:
  - {name: catchall, partitioning: {scheme: singleton}}
  - {name: api, match: {pathPrefix: /api}, partitioning: {scheme: singleton}}
  - {name: apiusers, match: {pathPrefix: /api/users}, partitioning: {scheme: singleton}}
  - {name: files, match: {pathPrefix: /files/}, partitioning: {scheme: singleton}}
  - {name: wild, match: {authority: "*.example.com"}, partitioning: {scheme: singleton}}
  - {name: wildusers, match: {authority: "*.example.com", pathPrefix: /api/users}, partitioning: {scheme: singleton}}
  - {name: deepwild, match: {authority: "*.eu.example.com"}, partitioning: {scheme: singleton}}
  - {name: exact, match: {authority: api.example.com}, partitioning: {scheme: singleton}}
  - {name: exactusers, match: {authority: API.Example.com, pathPrefix: /api/users}, partitioning: {scheme: singleton}}
  - {name: other, match: {authority: other.org, pathPrefix: /api}, partitioning: {scheme: singleton}}
`

func TestServicesByPrecedence(t *testing.T) {
	c := mustParse(t, matchConfig)
	want := []string{
		// Exact authorities first, the longer authority and then the longer prefix first.
		"exactusers", "exact", "other",
		// Then wildcards, the longer suffix first whatever the path prefix.
		"deepwild", "wildusers", "wild",
		// Then no authority, the longer prefix first.
		"apiusers", "files", "api", "catchall",
	}
	got := c.ServicesByPrecedence()
	if len(got) != len(want) {
		t.Fatalf("%d services, want %d", len(got), len(want))
	}
	for i, s := range got {
		if s.Name != want[i] {
			t.Errorf("precedence[%d] = %s, want %s", i, s.Name, want[i])
		}
	}
	// The configuration order is kept apart from the precedence order.
	if c.Services[0].Name != "catchall" || c.Services[0].Index != 0 || c.Services[9].Name != "other" {
		t.Errorf("Services lost the configuration order: %s ... %s", c.Services[0].Name, c.Services[9].Name)
	}
}

func TestServicesByPrecedenceKeepsConfigOrderOnTies(t *testing.T) {
	c := mustParse(t, `
naming: {file: naming.yaml}
services:
  - {name: b, match: {pathPrefix: /bb}, partitioning: {scheme: singleton}}
  - {name: a, match: {pathPrefix: /aa}, partitioning: {scheme: singleton}}
  - {name: c, match: {pathPrefix: /cc}, partitioning: {scheme: singleton}}
`)
	var got string
	for _, s := range c.ServicesByPrecedence() {
		got += s.Name
	}
	if got != "bac" {
		t.Errorf("precedence %q, want the configuration order bac", got)
	}
}

func TestMatch(t *testing.T) {
	c := mustParse(t, matchConfig)
	cases := []struct {
		authority, path, want string
	}{
		// An exact authority beats a wildcard, which beats none.
		{"api.example.com", "/api/users/1", "exactusers"},
		{"api.example.com", "/other", "exact"},
		{"a.example.com", "/api/users/1", "wildusers"},
		{"a.example.com", "/other", "wild"},
		{"example.org", "/api/users/1", "apiusers"},
		// Host names match case-insensitively, in the configuration and in the request.
		{"API.EXAMPLE.COM", "/api/users", "exactusers"},
		{"A.Example.Com", "/x", "wild"},
		// A port in the request's authority is ignored.
		{"api.example.com:8080", "/api/users?x=1", "exactusers"},
		{"a.example.com:443", "/x", "wild"},
		{"example.org:80", "/api/users", "apiusers"},
		{"[::1]:8080", "/api", "api"},
		{"[::1]", "/x", "catchall"},
		// A wildcard needs at least one more label.
		{"example.com", "/x", "catchall"},
		{"example.com", "/api/users/1", "apiusers"},
		{"notexample.com", "/x", "catchall"},
		{".example.com", "/x", "catchall"},
		{"a.b.example.com", "/x", "wild"},
		// The longer wildcard suffix first, before a longer path under a shorter suffix.
		{"x.eu.example.com", "/api/users", "deepwild"},
		{"eu.example.com", "/api/users", "wildusers"},
		// Path prefixes match whole segments.
		{"", "/api/users", "apiusers"},
		{"", "/api/users/1", "apiusers"},
		{"", "/api/users/", "apiusers"},
		{"", "/api/users?x=1", "apiusers"},
		{"", "/api/users#top", "apiusers"},
		{"", "/api/usersX", "api"},
		{"", "/api/users-old", "api"},
		{"", "/api", "api"},
		{"", "/api/", "api"},
		{"", "/apix", "catchall"},
		{"", "/API/users", "catchall"},
		// A prefix that ends in "/" matches as text.
		{"", "/files/", "files"},
		{"", "/files/a/b", "files"},
		{"", "/files", "catchall"},
		{"", "/filesX", "catchall"},
		// The empty match takes everything else.
		{"", "", "catchall"},
		{"", "/", "catchall"},
		{"anything", "*", "catchall"},
		// An exact authority with a path prefix does not take other paths.
		{"other.org", "/api/x", "other"},
		{"other.org", "/web", "catchall"},
	}
	for _, tc := range cases {
		s := c.Match(tc.authority, tc.path)
		if s == nil {
			t.Errorf("Match(%q, %q) = nil, want %s", tc.authority, tc.path, tc.want)
			continue
		}
		if s.Name != tc.want {
			t.Errorf("Match(%q, %q) = %s, want %s", tc.authority, tc.path, s.Name, tc.want)
		}
	}
}

func TestMatchNone(t *testing.T) {
	c := mustParse(t, `
naming: {file: naming.yaml}
services:
  - {name: users, match: {authority: "*.example.com", pathPrefix: /api/users}, partitioning: {scheme: singleton}}
  - {name: exact, match: {authority: api.example.org}, partitioning: {scheme: singleton}}
`)
	for _, tc := range []struct{ authority, path string }{
		{"a.example.com", "/api"},
		{"example.com", "/api/users"},
		{"api.example.org.evil.com", "/"},
		{"evilapi.example.org", "/"},
		{"", "/api/users"},
		{"", ""},
	} {
		if s := c.Match(tc.authority, tc.path); s != nil {
			t.Errorf("Match(%q, %q) = %s, want nil", tc.authority, tc.path, s.Name)
		}
	}
}

func TestMatchDoesNotAllocate(t *testing.T) {
	c := mustParse(t, matchConfig)
	requests := []struct{ authority, path string }{
		{"api.example.com:8080", "/api/users/42?x=1"},
		{"A.EU.EXAMPLE.COM", "/x"},
		{"example.org", "/files/a"},
		{"[::1]:80", "/nothing"},
	}
	var sink *config.Service
	allocs := testing.AllocsPerRun(100, func() {
		for _, r := range requests {
			sink = c.Match(r.authority, r.path)
		}
	})
	if allocs != 0 {
		t.Errorf("Match allocates %v times per run, want 0", allocs)
	}
	_ = sink
}

func BenchmarkMatch(b *testing.B) {
	c := mustParse(b, matchConfig)
	b.ReportAllocs()
	for b.Loop() {
		c.Match("a.example.com:443", "/api/users/42")
	}
}
