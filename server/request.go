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
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %v", rawURL, err)
	}
	if u.Path == "" && u.Opaque == "" {
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
