package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
)

func runValidate(args []string, stdout, stderr io.Writer) int {
	fs := newCmdFlags("validate", "partroute validate -config FILE [-naming FILE]")
	cfgPath := fs.String("config", "", "partroute.yaml to check (required)")
	namingPath := fs.String("naming", "", "naming file to check against it (default: the configuration's naming.file)")
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	if *cfgPath == "" {
		return fs.fail(stderr, "-config is required")
	}
	cfg, err := config.Load(*cfgPath)
	if err == nil {
		err = server.CheckTLS(*cfgPath, cfg)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// A configuration whose naming lives in etcd or Service Fabric is checked alone, unless a
	// naming file is given to check against it.
	var view *resolver.View
	if cfg.Naming.Source == config.SourceFile || *namingPath != "" {
		if _, view, err = resolver.LoadConfigAndView(*cfgPath, *namingPath); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	for _, s := range cfg.Services {
		fmt.Fprintln(stdout, summarize(s, view))
	}
	if view == nil {
		fmt.Fprintf(stdout, "naming: %s source; the naming view is checked when partroute serve loads it (or give -naming FILE)\n", cfg.Naming.Source)
	}
	return 0
}

// summarize describes a service in one line: its match, scheme, key and replicas.
func summarize(s *config.Service, view *resolver.View) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: match", s.Name)
	if s.Match.Authority != "" {
		fmt.Fprintf(&b, " authority=%s", s.Match.Authority)
	}
	if s.Match.PathPrefix != "" {
		fmt.Fprintf(&b, " pathPrefix=%s", s.Match.PathPrefix)
	}
	if s.Match == (config.Match{}) {
		b.WriteString(" every request")
	}
	sc := s.Scheme()
	switch sc.Kind() {
	case keying.UniformInt64:
		fmt.Fprintf(&b, "; uniformInt64 [%d, %d] in %d partitions", sc.LowKey(), sc.HighKey(), sc.Count())
	case keying.Named:
		fmt.Fprintf(&b, "; named %v", sc.Names())
	default:
		b.WriteString("; singleton")
	}
	if srcs := s.Keyer.Sources(); len(srcs) > 0 {
		names := make([]string, len(srcs))
		for i, src := range srcs {
			names[i] = src.String()
		}
		fmt.Fprintf(&b, "; key from %s by %s", strings.Join(names, ", "), s.Keyer.Transform())
		if s.Keyer.Transform() == keying.TransformHash {
			fmt.Fprintf(&b, " (%s)", s.Keyer.Hash())
		}
	}
	fmt.Fprintf(&b, "; reads %s", s.Reads)
	if view == nil {
		return b.String()
	}
	if sv := view.Services[s.Name]; sv != nil {
		replicas, healthy := 0, 0
		for _, p := range sv.Partitions {
			for _, r := range p.Replicas {
				replicas++
				if r.Healthy {
					healthy++
				}
			}
		}
		noun := "replicas"
		if replicas == 1 {
			noun = "replica"
		}
		fmt.Fprintf(&b, "; %d %s (%d healthy)", replicas, noun, healthy)
	}
	return b.String()
}
