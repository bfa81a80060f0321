package keying_test

import (
	"strings"
	"testing"

	"github.com/partroute/partroute/keying"
)

func TestParsePathTemplateErrors(t *testing.T) {
	tests := []struct {
		template string
		fragment string
	}{
		{"", "must start with /"},
		{"api/users/{id}", "must start with /"},
		{"{id}", "must start with /"},
		{"/api/users", "has no {variable}"},
		{"/api/*", "has no {variable}"},
		{"/api/{tenant}/users/{id}", "more than one variable"},
		{"/api//{id}", "empty segment"},
		{"/api/{id}/", "empty segment"},
		{"/", "empty segment"},
		{"//{id}", "empty segment"},
		{"/api/{}", "needs a plain name"},
		{"/api/{*}", "needs a plain name"},
		{"/api/{a}{b}", "needs a plain name"},
		{"/api/{{id}}", "needs a plain name"},
		{"/api/a{id}", "mixes a variable with text"},
		{"/api/{id}b", "mixes a variable with text"},
		{"/api/{id", "mixes a variable with text"},
		{"/api/id}", "mixes a variable with text"},
		{"/api?x/{id}", "holds ? or #"},
		{"/api#x/{id}", "holds ? or #"},
	}
	for _, tt := range tests {
		p, err := keying.ParsePathTemplate(tt.template)
		if err == nil {
			t.Errorf("ParsePathTemplate(%q) = %v, want an error", tt.template, p)
			continue
		}
		if !strings.Contains(err.Error(), tt.fragment) {
			t.Errorf("ParsePathTemplate(%q) error %q does not contain %q", tt.template, err, tt.fragment)
		}
	}
}

func TestPathTemplateMatch(t *testing.T) {
	tests := []struct {
		template string
		path     string
		want     string // "" when the path must not match
	}{
		{"/api/users/{id}", "/api/users/42", "42"},
		{"/api/users/{id}", "/api/users/42/orders", "42"},
		{"/api/users/{id}", "/api/users/42/", "42"},
		{"/api/users/{id}", "/api/users/42?x=1", "42"},
		{"/api/users/{id}", "/api/users/42#frag", "42"},
		{"/api/users/{id}", "/api/users/42?next=/a/b", "42"},
		{"/api/users/{id}", "/api/users/4%32", "4%32"},
		{"/api/users/{id}", "/api/users/a:b@c", "a:b@c"},
		{"/api/users/{id}", "/api/users", ""},
		{"/api/users/{id}", "/api/users/", ""},
		{"/api/users/{id}", "/api/users//42", ""},
		{"/api/users/{id}", "/api/users?id=42", ""},
		{"/api/users/{id}", "/api/users/?x=1", ""},
		{"/api/users/{id}", "/api/user/42", ""},
		{"/api/users/{id}", "/api/usersx/42", ""},
		{"/api/users/{id}", "/API/users/42", ""},
		{"/api/users/{id}", "api/users/42", ""},
		{"/api/users/{id}", "//api/users/42", ""},
		{"/api/users/{id}", "", ""},
		{"/api/users/{id}", "/", ""},
		{"/api/users/{id}", "?/api/users/42", ""},
		{"/{id}", "/7", "7"},
		{"/{id}", "/7/x/y", "7"},
		{"/{id}", "/", ""},
		{"/{id}", "/?a", ""},
		{"/api/*/users/{id}", "/api/v1/users/42", "42"},
		{"/api/*/users/{id}", "/api/v2/users/9/x", "9"},
		{"/api/*/users/{id}", "/api//users/42", ""},
		{"/api/*/users/{id}", "/api/users/42", ""},
		{"/*/{id}", "/anything/5", "5"},
		{"/tenants/{tenant}/users", "/tenants/acme/users", "acme"},
		{"/tenants/{tenant}/users", "/tenants/acme/users/1", "acme"},
		{"/tenants/{tenant}/users", "/tenants/acme", ""},
		{"/tenants/{tenant}/users", "/tenants/acme/", ""},
		{"/tenants/{tenant}/users", "/tenants/acme/orders", ""},
		{"/tenants/{tenant}/users", "/tenants//users", ""},
		{"/tenants/{tenant}/*", "/tenants/acme/x", "acme"},
		{"/tenants/{tenant}/*", "/tenants/acme/", ""},
	}
	for _, tt := range tests {
		p, err := keying.ParsePathTemplate(tt.template)
		if err != nil {
			t.Fatalf("ParsePathTemplate(%q): %v", tt.template, err)
		}
		if p.String() != tt.template {
			t.Errorf("String() = %q, want %q", p.String(), tt.template)
		}
		got, ok := p.Match(tt.path)
		if want := tt.want != ""; ok != want || got != tt.want {
			t.Errorf("%q.Match(%q) = %q, %v; want %q, %v", tt.template, tt.path, got, ok, tt.want, want)
		}
	}
}

func TestPathOnlyAndQuery(t *testing.T) {
	tests := []struct {
		target, path, query string
	}{
		{"/a/b", "/a/b", ""},
		{"/a/b?x=1&y=2", "/a/b", "x=1&y=2"},
		{"/a/b?x=1#frag", "/a/b", "x=1"},
		{"/a/b#frag?x=1", "/a/b", ""},
		{"/a?x=1?y=2", "/a", "x=1?y=2"},
		{"/a?", "/a", ""},
		{"?x=1", "", "x=1"},
		{"", "", ""},
	}
	for _, tt := range tests {
		if got := keying.PathOnly(tt.target); got != tt.path {
			t.Errorf("PathOnly(%q) = %q, want %q", tt.target, got, tt.path)
		}
		if got := keying.Query(tt.target); got != tt.query {
			t.Errorf("Query(%q) = %q, want %q", tt.target, got, tt.query)
		}
	}
}

func FuzzPathTemplateMatch(f *testing.F) {
	for _, seed := range [][2]string{
		{"/api/users/{id}", "/api/users/42"},
		{"/api/users/{id}", "/api/users/42/orders?x=1#f"},
		{"/api/*/users/{id}", "/api/v1/users/42"},
		{"/{id}", "/"},
		{"/{id}/x", "//x"},
		{"/a/{b}/c", "/a/%2F/c"},
		{"/a{b}", "/ab"},
		{"/{}", "/x"},
		{"/api/users/{id}", "/api/users/?#"},
		{"/x/{y}", "/x/y?/z"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, template, path string) {
		p, err := keying.ParsePathTemplate(template)
		if err != nil {
			return
		}
		if v, ok := p.Match(path); ok {
			if v == "" || strings.ContainsAny(v, "/?#") {
				t.Fatalf("%q.Match(%q) = %q, true; want a non-empty segment without / ? #", template, path, v)
			}
		}
		// A path built from the template itself, with a value in the variable's place and a
		// word in every "*" segment, always matches and yields that value.
		segs := strings.Split(template[1:], "/")
		for i, s := range segs {
			switch {
			case s == "*":
				segs[i] = "any"
			case strings.HasPrefix(s, "{"):
				segs[i] = "v4lue"
			}
		}
		built := "/" + strings.Join(segs, "/")
		for _, suffix := range []string{"", "/more", "?q=1", "#f"} {
			if v, ok := p.Match(built + suffix); !ok || v != "v4lue" {
				t.Fatalf("%q.Match(%q) = %q, %v; want \"v4lue\", true", template, built+suffix, v, ok)
			}
		}
	})
}
