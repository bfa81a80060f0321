package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"unicode"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/resolver"
)

// runEnvoyBootstrap writes the Envoy bootstrap for a configuration and its naming view.
func runEnvoyBootstrap(args []string, stdout, stderr io.Writer) int {
	fs := newCmdFlags("envoy-bootstrap", "partroute envoy-bootstrap -config FILE [-naming FILE] [-listen ADDR] [-admin ADDR] [-extproc ADDR[,ADDR...]] [-retry N [-per-try-timeout D]] [-message-timeout D] [-response-headers] [-xds | -xds-address ADDR[,ADDR...]] [-node-id ID] [-tls-ca FILE -tls-server-name NAME [-tls-cert FILE -tls-key FILE] [-tls-sds-dir DIR]] [-o FILE]")
	cfgPath := fs.String("config", "", "partroute.yaml to generate from (required)")
	namingPath := fs.String("naming", "", "naming file whose replicas become endpoints (default: the configuration's naming.file)")
	listen := fs.String("listen", envoyconfig.DefaultListenAddress, "address Envoy accepts client traffic on")
	admin := fs.String("admin", envoyconfig.DefaultAdminAddress, "address of Envoy's admin endpoint (keep it on loopback)")
	var extProc, xdsAddrs addressList
	fs.Var(&extProc, "extproc", "address Envoy reaches partroute's ext_proc server at; several instances: comma-separated or the flag repeated (default: the configuration's listen.extproc)")
	retries := fs.Int("retry", 0, "retries per request on connect failure, reset or a replica's 503, to the same partition and role (0: none)")
	perTry := fs.Duration("per-try-timeout", 0, "timeout of each attempt when -retry is set (0: only the route timeout)")
	msgTimeout := fs.Duration("message-timeout", contract.DefaultMessageTimeout, "ext_proc message_timeout; must exceed the configuration's cache.resolveTimeout")
	respHeaders := fs.Bool("response-headers", false, "also send response headers to partroute (for failure-driven re-resolution)")
	xds := fs.Bool("xds", false, "take the service clusters and endpoints from partroute's xDS server (the configuration's listen.xds) instead of writing them in")
	fs.Var(&xdsAddrs, "xds-address", "as -xds, from the xDS servers at these addresses instead of listen.xds; several instances: comma-separated or the flag repeated")
	nodeID := fs.String("node-id", envoyconfig.DefaultNodeID, "the Envoy node id the xDS server sees; give each Envoy its own")
	tlsCA := fs.String("tls-ca", "", "CA file (PEM) to verify partroute's certificate with; puts the ext_proc and xDS clusters on TLS")
	tlsServerName := fs.String("tls-server-name", "", "with -tls-ca: the DNS name (also sent as SNI) or IP address partroute's certificate must hold")
	tlsCert := fs.String("tls-cert", "", "with -tls-ca: Envoy's client certificate file (PEM), for mutual TLS; needs -tls-key")
	tlsKey := fs.String("tls-key", "", "with -tls-ca: the private key file (PEM) of -tls-cert")
	tlsSDSDir := fs.String("tls-sds-dir", "", "with -tls-ca: directory to write the SDS files that point Envoy at the certificate files (default: the directory of -o)")
	out := fs.String("o", "", "file to write the bootstrap to (default: standard output)")
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	if *cfgPath == "" {
		return fs.fail(stderr, "-config is required")
	}
	if *retries < 0 || (*perTry != 0 && *retries == 0) {
		fmt.Fprintln(stderr, "partroute envoy-bootstrap: -retry must be at least 0, and -per-try-timeout needs -retry")
		return 1
	}
	// With -xds the service clusters come from partroute at run time: only the configuration
	// is needed, whatever its naming source.
	var (
		cfg  *config.Config
		view *resolver.View
		err  error
	)
	fromXDS := *xds || len(xdsAddrs) > 0
	if fromXDS {
		cfg, err = config.Load(*cfgPath)
	} else {
		cfg, view, err = resolver.LoadConfigAndView(*cfgPath, *namingPath)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	opts := envoyconfig.Options{
		ListenAddress:    *listen,
		AdminAddress:     *admin,
		MessageTimeout:   *msgTimeout,
		ResponseHeaders:  *respHeaders,
		NodeID:           *nodeID,
		ExtProcAddresses: extProc,
		XDSAddresses:     xdsAddrs,
	}
	if *xds && len(xdsAddrs) == 0 {
		if cfg.Listen.XDS == "" {
			fmt.Fprintf(stderr, "partroute envoy-bootstrap: -xds needs listen.xds in %s, or the addresses with -xds-address\n", cfg.Path)
			return 1
		}
		opts.XDSAddress = cfg.Listen.XDS
	}
	if *retries > 0 {
		opts.Retry = &envoyconfig.Retry{NumRetries: *retries, PerTryTimeout: *perTry}
	}
	upstream, err := upstreamTLSFlags(*tlsCA, *tlsServerName, *tlsCert, *tlsKey, *tlsSDSDir, *out)
	if err != nil {
		fmt.Fprintln(stderr, "partroute envoy-bootstrap:", err)
		return 1
	}
	opts.TLS = upstream
	b, err := envoyconfig.Bootstrap(cfg, view, opts)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	body, err := envoyconfig.MarshalYAML(b)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if upstream != nil {
		// The SDS files are written first: Envoy needs them when it loads the bootstrap.
		if err := envoyconfig.WriteSecretFiles(upstream); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	var doc bytes.Buffer
	doc.WriteString(bootstrapHeader(args))
	doc.Write(body)
	if *out == "" {
		if _, err := stdout.Write(doc.Bytes()); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		return 0
	}
	// The bootstrap is read by Envoy, which often runs as another user: it is world-readable,
	// as configuration files are.
	if err := os.WriteFile(*out, doc.Bytes(), 0o644); err != nil { //nolint:gosec // see above
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

// upstreamTLSFlags turns the -tls-* flags into the bootstrap's TLS option, nil without
// -tls-ca. Paths are made absolute, against the working directory, because Envoy resolves a
// relative one against its own.
func upstreamTLSFlags(ca, serverName, cert, key, sdsDir, out string) (*envoyconfig.UpstreamTLS, error) {
	if ca == "" {
		if serverName != "" || cert != "" || key != "" || sdsDir != "" {
			return nil, errors.New("-tls-server-name, -tls-cert, -tls-key and -tls-sds-dir need -tls-ca")
		}
		return nil, nil
	}
	if serverName == "" {
		return nil, errors.New("-tls-ca needs -tls-server-name, the name partroute's certificate holds")
	}
	if (cert == "") != (key == "") {
		return nil, errors.New("-tls-cert and -tls-key go together")
	}
	if sdsDir == "" {
		if out == "" {
			return nil, errors.New("-tls-ca writes SDS files beside the bootstrap: give -o FILE or -tls-sds-dir DIR")
		}
		sdsDir = filepath.Dir(out)
	}
	u := &envoyconfig.UpstreamTLS{ServerName: serverName}
	for _, p := range []struct {
		from string
		into *string
	}{{ca, &u.CAFile}, {cert, &u.CertFile}, {key, &u.KeyFile}, {sdsDir, &u.SecretDir}} {
		if p.from == "" {
			continue
		}
		abs, err := filepath.Abs(p.from)
		if err != nil {
			return nil, err
		}
		*p.into = abs
	}
	return u, nil
}

// bootstrapHeader is the comment that opens a generated bootstrap: the command that produced
// it, so that whoever reads the file knows to change the configuration and run it again rather
// than edit the output, and which defaults the YAML leaves unsaid. The output file is left out of the command, so the header does not
// depend on where the output went. Time stamps are left out too, so that the same inputs give
// the same bytes and a test can tell a stale file from a current one.
func bootstrapHeader(args []string) string {
	cmd := []string{"partroute", "envoy-bootstrap"}
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "--o":
			i++ // skip the file name too
			continue
		case strings.HasPrefix(a, "-o=") || strings.HasPrefix(a, "--o="):
			continue
		}
		cmd = append(cmd, shellWord(a))
	}
	return "# Envoy bootstrap generated by:\n#   " + strings.Join(cmd, " ") + "\n" +
		"# Change partroute's configuration or naming view and run that again (with -o FILE) instead\n" +
		"# of editing this file. Fields at their defaults are left out, among them lb_policy\n" +
		"# ROUND_ROBIN, lb_subset_config fallback_policy NO_FALLBACK, ext_proc failure_mode_allow\n" +
		"# false and body modes NONE; healthy_panic_threshold {} is 0%, which turns panic mode off.\n"
}

// shellWord quotes an argument that a shell would split or expand, so that the command can be
// pasted back; one holding a quote or an unprintable character (a line break among them, which
// would end the comment line) gets Go's escaped quoting instead.
func shellWord(s string) string {
	plain := s != ""
	for _, c := range s {
		if !unicode.IsPrint(c) || c == '\'' {
			return strconv.Quote(s)
		}
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./:=,@+%", c)) {
			plain = false
		}
	}
	if plain {
		return s
	}
	return "'" + s + "'"
}
