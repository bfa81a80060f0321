package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCLIOtherNamingSources checks validate and resolve on a configuration whose naming view
// lives in etcd: validate checks the configuration alone, resolve asks for a naming file.
func TestCLIOtherNamingSources(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "partroute.yaml")
	if err := os.WriteFile(cfg, []byte(`naming: {source: etcd, etcd: {endpoints: ["127.0.0.1:2379"]}}
services:
  - name: settings
    match: {pathPrefix: /s}
    partitioning: {scheme: singleton}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := run([]string{"validate", "-config", cfg}, &out, &errOut); code != 0 {
		t.Fatalf("validate exit %d: %s", code, errOut.String())
	}
	if !strings.Contains(out.String(), "settings: match pathPrefix=/s; singleton; reads primary\n") || !strings.Contains(out.String(), "naming: etcd source") {
		t.Errorf("validate output:\n%s", out.String())
	}

	out.Reset()
	errOut.Reset()
	if code := run([]string{"resolve", "-config", cfg, "GET", "/s"}, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), "give a naming file with -naming FILE") {
		t.Errorf("resolve without a naming file: exit %d, %q", code, errOut.String())
	}

	naming := filepath.Join(dir, "view.yaml")
	if err := os.WriteFile(naming, []byte("services:\n  settings:\n    partitions:\n      - replicas: [{address: 10.0.0.1:80, role: primary}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if code := run([]string{"resolve", "-config", cfg, "-naming", naming, "PUT", "/s"}, &out, &errOut); code != 0 || !strings.Contains(out.String(), `"address": "10.0.0.1:80"`) {
		t.Errorf("resolve with -naming: exit %d, %s %s", code, out.String(), errOut.String())
	}
}
