package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemoOnce runs the quick start's demo on the embedded example files, with the example's
// own ports, and checks where its sample requests landed. The bootstrap the demo runs Envoy
// with must be the shipped envoy-config/envoy.yaml, which this puts in front of a real Envoy.
func TestDemoOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out bytes.Buffer
	if err := demo(ctx, demoOptions{envoyListen: "127.0.0.1:10000", envoyAdmin: "127.0.0.1:9902", once: true}, &out); err != nil {
		t.Fatalf("demo: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, row := range []string{
		`PUT api.example.com/api/users/0 +200 +users-0 +primary +127.0.0.1:8081`,
		`PUT api.example.com/api/users/9 +200 +users-1 +primary +127.0.0.1:8084`,
		`GET api.example.com/api/users/9 +200 +users-1 +any +127.0.0.1:808[45]`,
		`GET api.example.com/api/users/330 +400 .*partition_key_out_of_range`,
		`GET demo.local/api/sessions \[cookie: session=alice\] +200 +sessions/-9223372036854775808:-1 +secondary +127.0.0.1:8072`,
		`PUT demo.local/api/regions/eu +200 +regions/eu +primary +127.0.0.1:8091`,
		`PUT demo.local/api/settings/theme +200 +settings +primary +127.0.0.1:8099`,
	} {
		if !regexp.MustCompile(row).MatchString(text) {
			t.Errorf("demo output lacks a row matching %q:\n%s", row, text)
		}
	}

	m := regexp.MustCompile(`files: (\S+) `).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("demo output names no work folder:\n%s", text)
	}
	t.Cleanup(func() { os.RemoveAll(m[1]) })
	used, err := os.ReadFile(filepath.Join(m[1], "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := os.ReadFile(filepath.Join("..", "..", "envoy-config", "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if withoutComments(string(used)) != withoutComments(string(shipped)) {
		t.Errorf("the demo ran Envoy with a bootstrap other than envoy-config/envoy.yaml; regenerate it with: go run ./cmd/partroute envoy-bootstrap -config envoy-config/examples/partroute.yaml -o envoy-config/envoy.yaml")
	}
}

func withoutComments(s string) string {
	var keep []string
	for _, line := range strings.Split(s, "\n") {
		if !strings.HasPrefix(line, "#") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}
