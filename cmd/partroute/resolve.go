package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
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
	cfg, view, err := resolver.LoadConfigAndView(*cfgPath, *namingPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	body, err := requestBody(*data)
	if err != nil {
		fmt.Fprintln(stderr, "partroute resolve: -d:", err)
		return 1
	}
	req, err := server.BuildRequest(fs.Arg(0), fs.Arg(1), headers, body)
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

// requestBody is the body of -d: inline, or read from a file with @FILE; nil without -d.
func requestBody(data string) ([]byte, error) {
	if file, ok := strings.CutPrefix(data, "@"); ok {
		return os.ReadFile(file)
	}
	if data == "" {
		return nil, nil
	}
	return []byte(data), nil
}
