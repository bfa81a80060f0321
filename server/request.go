package server

import (
	"fmt"
	"net/url"
	"strings"

	"github.com/partroute/partroute/keying"
)

// BuildRequest turns a method, a URL, "name: value" headers and a body into the request Envoy
// would send partroute, for the questions of `partroute resolve` and /debug/resolve: an
// absolute URL gives the authority, a bare path takes it from a host header. A nil body is a
// request whose body has not been read.
func BuildRequest(method, rawURL string, headers []string, body []byte) (*keying.Request, error) {
	u, err := parseRequestURL(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Path == "" {
		u.Path = "/"
	}
	target := u.EscapedPath()
	if u.RawQuery != "" {
		target += "?" + u.RawQuery
	}
	req := &keying.Request{Method: strings.ToUpper(method), Authority: u.Host, Path: target}
	list := keying.HeaderList{}
	for _, h := range headers {
		name, value, ok := strings.Cut(h, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("header %q is not 'name: value'", h)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		value = strings.TrimSpace(value)
		if name == "host" && req.Authority == "" {
			req.Authority = value
		}
		list = append(list, keying.Header{Name: name, Value: value})
	}
	// Envoy hands ext_proc the pseudo-headers as ordinary entries; so does the CLI.
	list = append(list,
		keying.Header{Name: ":method", Value: req.Method},
		keying.Header{Name: ":path", Value: req.Path},
		keying.Header{Name: ":authority", Value: req.Authority},
	)
	req.Headers = list
	req.Body = body
	return req, nil
}

// parseRequestURL parses the URL of a request to resolve: an absolute http or https URL, or a
// path. Anything else is refused rather than guessed at: "api.example.com/api/users/12" parses
// as a relative path, which would match no service and pass through, and "localhost:8080/x"
// parses as an opaque URL of scheme "localhost".
func parseRequestURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %w", rawURL, err)
	}
	bare := u.Scheme == "" && u.Host == "" && strings.HasPrefix(rawURL, "/")
	absolute := (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && u.Opaque == ""
	if !bare && !absolute && u.Host != "" && u.Scheme != "" {
		return nil, fmt.Errorf("URL %q: the scheme is %q, not http or https", rawURL, u.Scheme)
	}
	if !bare && !absolute {
		return nil, fmt.Errorf("URL %q has no scheme and host: write it as http://host/path (or as a path, /path, with a host header)", rawURL)
	}
	return u, nil
}
