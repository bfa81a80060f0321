package keying

import (
	"fmt"
	"strings"
)

// PathTemplate matches a request path against a template such as "/api/users/{id}" and yields
// the segment in the variable's place. Literal segments match exactly, "*" matches any one
// segment, and whatever follows the template's last segment is ignored, so "/api/users/{id}"
// also matches "/api/users/42/orders".
type PathTemplate struct {
	raw      string
	segments []string // literal segments, "*" or "" for the variable
	variable int      // index of the variable in segments
	name     string
}

// ParsePathTemplate parses a template. It needs a leading "/", exactly one "{name}" segment
// and no empty segments.
func ParsePathTemplate(t string) (*PathTemplate, error) {
	if !strings.HasPrefix(t, "/") {
		return nil, fmt.Errorf("path template %q must start with /", t)
	}
	parts := strings.Split(t[1:], "/")
	p := &PathTemplate{raw: t, segments: make([]string, len(parts)), variable: -1}
	for i, seg := range parts {
		switch {
		case seg == "":
			return nil, fmt.Errorf("path template %q has an empty segment", t)
		case strings.HasPrefix(seg, "{") && strings.HasSuffix(seg, "}"):
			name := seg[1 : len(seg)-1]
			if name == "" || strings.ContainsAny(name, "{}*") {
				return nil, fmt.Errorf("path template %q: variable %q needs a plain name", t, seg)
			}
			if p.variable >= 0 {
				return nil, fmt.Errorf("path template %q has more than one variable; the key is one segment", t)
			}
			p.variable, p.name = i, name
		case strings.ContainsAny(seg, "{}?#"):
			return nil, fmt.Errorf("path template %q: segment %q mixes a variable with text or holds ? or #", t, seg)
		default:
			p.segments[i] = seg
		}
	}
	if p.variable < 0 {
		return nil, fmt.Errorf("path template %q has no {variable} to take the key from", t)
	}
	return p, nil
}

// String returns the template as written.
func (p *PathTemplate) String() string { return p.raw }

// Match returns the raw (still percent-encoded) segment in the variable's place, or false when
// the path does not match the template.
func (p *PathTemplate) Match(path string) (string, bool) {
	path = PathOnly(path)
	if path == "" || path[0] != '/' {
		return "", false
	}
	rest := path[1:]
	var value string
	for i, want := range p.segments {
		if rest == "" && i > 0 {
			return "", false
		}
		seg := rest
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			seg, rest = rest[:j], rest[j+1:]
		} else {
			rest = ""
		}
		switch {
		case i == p.variable:
			if seg == "" {
				return "", false
			}
			value = seg
		case want == "*":
			if seg == "" {
				return "", false
			}
		case seg != want:
			return "", false
		}
	}
	return value, true
}
