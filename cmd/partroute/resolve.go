package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// headerFlags collects repeated -H flags.
type headerFlags []string

func (h *headerFlags) String() string     { return strings.Join(*h, ", ") }
func (h *headerFlags) Set(v string) error { *h = append(*h, v); return nil }

const resolveSynopsis = "partroute resolve -config FILE [-naming FILE] [-H 'name: value']... [-d BODY|@FILE] METHOD URL"

func runResolve(args []string, stdout, stderr io.Writer) int {
	fs := newCmdFlags("resolve", resolveSynopsis).positional("METHOD and URL", 2, 2)
	cfgPath := fs.String("config", "", "partroute.yaml (required)")
	namingPath := fs.String("naming", "", "naming file (default: the configuration's naming.file)")
	var headers headerFlags
	fs.Var(&headers, "H", "a request header 'name: value' (repeatable)")
	data := fs.String("d", "", "the request body, or @FILE to read it from a file")
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	if *cfgPath == "" {
		return fs.fail(stderr, "-config is required")
	}
	cfg, view, err := loadConfigAndView(*cfgPath, *namingPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	req, err := buildRequest(fs.Arg(0), fs.Arg(1), headers, *data)
	if err != nil {
		fmt.Fprintln(stderr, "partroute resolve:", err)
		return 1
	}
	d := resolver.New(&resolver.State{Config: cfg, Naming: view}).Resolve(context.Background(), req)
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(d.Report()); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if d.Err != nil {
		return 2
	}
	return 0
}

// buildRequest turns the command line into the request Envoy would send: an absolute URL gives
// the authority, a bare path takes it from a host header.
func buildRequest(method, rawURL string, headers []string, data string) (*keying.Request, error) {
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
	if strings.HasPrefix(data, "@") {
		body, err := os.ReadFile(data[1:])
		if err != nil {
			return nil, err
		}
		req.Body = body
	} else if data != "" {
		req.Body = []byte(data)
	}
	return req, nil
}

// parseRequestURL parses the URL of a request to resolve: an absolute http or https URL, or a
// path. Anything else is refused rather than guessed at: "api.example.com/api/users/12" parses
// as a relative path, which would match no service and pass through, and "localhost:8080/x"
// parses as an opaque URL of scheme "localhost".
func parseRequestURL(rawURL string) (*url.URL, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("URL %q: %v", rawURL, err)
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
