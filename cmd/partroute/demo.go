package main

import (
	"context"
	"fmt"
	"io"
	"os/signal"
	"syscall"

	"github.com/partroute/partroute/demo"
)

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newCmdFlags("demo", "partroute demo [-config FILE] [-envoy-listen ADDR] [-envoy-admin ADDR] [-once]")
	o := demo.Options{Version: version}
	fs.StringVar(&o.ConfigPath, "config", "", "partroute.yaml whose naming file lists the replicas to play (default: the embedded example)")
	fs.StringVar(&o.EnvoyListen, "envoy-listen", "", "Envoy's listener (default: a free loopback port)")
	fs.StringVar(&o.EnvoyAdmin, "envoy-admin", "", "Envoy's admin listener (default: a free loopback port)")
	fs.BoolVar(&o.Once, "once", false, "stop after the sample requests instead of waiting for Ctrl-C")
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := demo.Run(ctx, o, stdout); err != nil {
		fmt.Fprintln(stderr, "partroute demo:", err)
		return 1
	}
	return 0
}
