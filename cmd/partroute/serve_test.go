package main

import (
	"bytes"
	"encoding/json"
	"io"
	"path/filepath"
	"strings"
	"testing"
)

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "k", "v")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "hello" || line["level"] != "DEBUG" {
		t.Errorf("json debug log %q: %v", buf.String(), err)
	}
	buf.Reset()
	if log, err = newLogger(&buf, "warn", "text"); err != nil {
		t.Fatal(err)
	}
	log.Info("quiet")
	log.Warn("loud")
	if strings.Contains(buf.String(), "quiet") || !strings.Contains(buf.String(), "msg=loud") {
		t.Errorf("text log at warn: %q", buf.String())
	}
	for _, c := range [][2]string{{"verbose", "text"}, {"info", "xml"}} {
		if _, err := newLogger(&buf, c[0], c[1]); err == nil {
			t.Errorf("newLogger(%q, %q) accepted", c[0], c[1])
		}
	}
}

func TestRunServeUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage: partroute serve"},
		{[]string{"-config", missing, "extra"}, "usage: partroute serve"},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
		{[]string{"-config", missing, "-log-level", "loud"}, "-log-level"},
		{[]string{"-config", missing}, "missing.yaml"},
	} {
		var stderr bytes.Buffer
		if code := runServe(c.args, io.Discard, &stderr); code != 1 {
			t.Errorf("runServe(%q) = %d, want 1", c.args, code)
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("runServe(%q) said %q, want it to mention %q", c.args, stderr.String(), c.want)
		}
	}
}
