package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
)

// namingSynopses are the command lines of the naming subcommands.
var namingSynopses = map[string]string{
	"put":      "partroute naming put -config FILE [-etcd ENDPOINTS] [-prefix P] [-file NAMING]",
	"get":      "partroute naming get -config FILE [-etcd ENDPOINTS] [-prefix P]",
	"failover": "partroute naming failover -config FILE [-etcd ENDPOINTS] [-prefix P] -service S -partition ID -to ADDRESS",
}

const namingUsage = `usage:
  partroute naming put      -config FILE [-etcd ENDPOINTS] [-prefix P] [-file NAMING]
  partroute naming get      -config FILE [-etcd ENDPOINTS] [-prefix P]
  partroute naming failover -config FILE [-etcd ENDPOINTS] [-prefix P] -service S -partition ID -to ADDRESS
-etcd and -prefix default to the configuration's naming.etcd when its naming.source is etcd.
Run 'partroute naming SUBCOMMAND -h' for its flags.`

// runNaming manages the naming view stored in etcd: put writes a naming file, get prints what
// is stored, failover moves a partition's primary.
func runNaming(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		fmt.Fprintln(stderr, namingUsage)
		return 1
	case args[0] == "-h" || args[0] == "-help" || args[0] == "--help":
		fmt.Fprintln(stdout, namingUsage)
		return 0
	case strings.HasPrefix(args[0], "-"):
		fmt.Fprintf(stderr, "partroute naming: the subcommand (put, get or failover) goes before the flags: %q came first\n%s\n", args[0], namingUsage)
		return 1
	}
	sub, args := args[0], args[1:]
	synopsis, known := namingSynopses[sub]
	if !known {
		fmt.Fprintf(stderr, "partroute naming: unknown subcommand %q\n%s\n", sub, namingUsage)
		return 1
	}
	fs := newCmdFlags("naming "+sub, synopsis)
	cfgPath := fs.String("config", "", "partroute.yaml whose services the view must fit (required)")
	endpoints := fs.String("etcd", "", "etcd endpoints, comma-separated host:port or URLs (default: the configuration's naming.etcd.endpoints)")
	prefix := fs.String("prefix", "", "the key prefix of the naming view (default: the configuration's naming.etcd.prefix, else "+config.DefaultEtcdPrefix+")")
	timeout := fs.Duration("timeout", 10*time.Second, "how long the whole command may take")
	var file, service, partition, to *string
	switch sub {
	case "put":
		file = fs.String("file", "", "the naming file to store (default: the configuration's naming.file)")
	case "get":
	case "failover":
		service = fs.String("service", "", "the service (required)")
		partition = fs.String("partition", "", "the partition: its id, or its key's last segment such as 0:8, eu or singleton (required)")
		to = fs.String("to", "", "the address of the replica to promote to primary (required)")
	}
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	required := []struct {
		flag  string
		value *string
	}{{"-config", cfgPath}, {"-service", service}, {"-partition", partition}, {"-to", to}}
	for _, r := range required {
		if r.value != nil && *r.value == "" {
			return fs.fail(stderr, "%s is required", r.flag)
		}
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	// A configuration that follows etcd already says where: the flags need not repeat it.
	if cfg.Naming.Source == config.SourceEtcd {
		if *endpoints == "" {
			*endpoints = strings.Join(cfg.Naming.Etcd.Endpoints, ",")
		}
		if *prefix == "" {
			*prefix = cfg.Naming.Etcd.Prefix
		}
	}
	if *endpoints == "" {
		fmt.Fprintf(stderr, "partroute naming %s: no etcd endpoints: give -etcd, or use a configuration whose naming.source is etcd\n", sub)
		return 1
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	client, err := etcdsource.Dial(namingEndpoints(*endpoints), *timeout)
	if err != nil {
		fmt.Fprintln(stderr, "partroute naming:", err)
		return 1
	}
	defer client.Close()
	p := etcdsource.NormalizePrefix(*prefix)
	switch sub {
	case "put":
		err = namingPut(ctx, client, p, cfg, *file, stdout)
	case "get":
		err = namingGet(ctx, client, p, cfg, stdout)
	case "failover":
		err = namingFailover(ctx, client, p, cfg, *service, *partition, *to, stdout, stderr)
	}
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			err = fmt.Errorf("etcd at %s did not answer within %v (is it running, and is -etcd right?): %w", *endpoints, *timeout, err)
		}
		fmt.Fprintf(stderr, "partroute naming %s: %v\n", sub, err)
		return 1
	}
	return 0
}

func namingEndpoints(s string) []string {
	var out []string
	for _, e := range strings.Split(s, ",") {
		if e = strings.TrimSpace(e); e != "" {
			out = append(out, e)
		}
	}
	return out
}

// namingPut checks the naming file against the configuration and stores it, replacing what
// the prefix held.
func namingPut(ctx context.Context, c *clientv3.Client, prefix string, cfg *config.Config, file string, stdout io.Writer) error {
	if file == "" {
		file = cfg.Naming.File
	}
	if file == "" {
		return errors.New("no naming file: give -file")
	}
	view, err := resolver.LoadViewFile(file, cfg)
	if err != nil {
		// The file's own errors name the file and each line; nothing was written.
		return err
	}
	res, err := etcdsource.Write(ctx, c, prefix, view)
	if err != nil {
		return err
	}
	// Reading back gives the version partroute reports for this content (the hash of what is
	// stored, not of the file), so that the operator can watch partroute_naming_view_info for it.
	ct, err := etcdsource.Read(ctx, c, prefix)
	if err != nil {
		return err
	}
	stored, err := ct.View(cfg)
	if err != nil {
		return fmt.Errorf("written, but what is stored now does not check out (another writer?): %w", err)
	}
	fmt.Fprintf(stdout, "%s: %d partition keys written, %d unchanged, %d deleted under %s at revision %d; view version %s\n",
		file, res.Written, res.Unchanged, res.Deleted, prefix, res.Revision, stored.Version)
	return nil
}

// namingGet prints the view stored under the prefix as a naming file.
func namingGet(ctx context.Context, c *clientv3.Client, prefix string, cfg *config.Config, stdout io.Writer) error {
	ct, err := etcdsource.Read(ctx, c, prefix)
	if err != nil {
		return err
	}
	view, err := ct.View(cfg)
	if err != nil {
		return err
	}
	out, err := resolver.FormatView(cfg, view)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "# naming view from etcd prefix %s at revision %d, version %s\n", prefix, ct.Revision, view.Version)
	_, err = stdout.Write(out)
	return err
}

// namingFailover promotes a replica and reports what changed.
func namingFailover(ctx context.Context, c *clientv3.Client, prefix string, cfg *config.Config, service, partition, to string, stdout, stderr io.Writer) error {
	res, err := etcdsource.Failover(ctx, c, prefix, cfg, service, partition, to)
	if err != nil {
		return err
	}
	if res.ToUnhealthy {
		fmt.Fprintf(stderr, "warning: %s is marked unhealthy: writes to partition %s get 503 partition_unavailable until it is marked healthy\n", to, res.PartitionID)
	}
	switch {
	case res.Unchanged:
		fmt.Fprintf(stdout, "%s: %s is already the primary of partition %s; nothing written\n", prefix+res.Key, to, res.PartitionID)
	case res.From == "":
		fmt.Fprintf(stdout, "%s: %s is now the primary of partition %s, which had none; revision %d\n", prefix+res.Key, to, res.PartitionID, res.Revision)
	default:
		fmt.Fprintf(stdout, "%s: %s is now the primary of partition %s; %s is now a secondary; revision %d\n", prefix+res.Key, to, res.PartitionID, res.From, res.Revision)
	}
	return nil
}
