package config_test

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
)

// Secrets of the keys files of these tests: 32 bytes, and 16.
var (
	secret32 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	secret16 = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef"))
)

// goodKeys is a keys file of two keys, signing with the newer.
var goodKeys = "signingKey: k2\nkeys:\n  - {id: k2, secret: " + secret32 + "}\n  - {id: k1, secret: " + base64.StdEncoding.EncodeToString([]byte("fedcba9876543210fedcba9876543210")) + "}\n"

// rywDir writes the keys files of a test into a directory of their own, with the
// configuration's path there, and returns that path.
func rywDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, text := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, "partroute.yaml")
}

// rywService is a service with a read policy that read-your-writes can strengthen.
const rywService = `  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 4}
    key: {sources: [{path: "/api/users/{id}"}]}
`

func TestReadYourWritesSettings(t *testing.T) {
	path := rywDir(t, map[string]string{"keys.yaml": goodKeys})
	c, err := config.Parse([]byte(head+rywService+`    replicas: {reads: secondary, readYourWrites: 2s}
  - name: other
    partitioning: {scheme: singleton}
    replicas: {reads: any}
readYourWrites: {keysFile: keys.yaml, header: X-Partroute-RYW, cookieSecure: true}
`), path)
	if err != nil {
		t.Fatal(err)
	}
	r := c.ReadYourWrites
	if r.KeysFile != filepath.Join(filepath.Dir(path), "keys.yaml") || r.Cookie != config.DefaultReadYourWritesCookie || r.Header != "x-partroute-ryw" || !r.CookieSecure {
		t.Errorf("readYourWrites = %+v", r)
	}
	if r.Keys == nil || r.Keys.SigningKey() != "k2" || strings.Join(r.Keys.KeyIDs(), ",") != "k2,k1" {
		t.Errorf("keys = %v", r.Keys)
	}
	if r.KeysSum == [32]byte{} {
		t.Error("KeysSum is not set")
	}
	if got := c.Services[0].ReadYourWrites; got != 2*time.Second {
		t.Errorf("users readYourWrites = %v", got)
	}
	if got := c.Services[1].ReadYourWrites; got != 0 {
		t.Errorf("other readYourWrites = %v, want 0 (off by default)", got)
	}

	// Without the section, nothing is loaded; the cookie alone, and the header alone, carry.
	c = mustParse(t, head+rywService)
	if c.ReadYourWrites != (config.ReadYourWrites{}) {
		t.Errorf("readYourWrites without the section = %+v", c.ReadYourWrites)
	}
	c, err = config.Parse([]byte(head+rywService+"readYourWrites: {keysFile: "+filepath.Join(filepath.Dir(path), "keys.yaml")+", cookie: \"\", header: x-ryw}\n"), "/elsewhere/partroute.yaml")
	if err != nil || c.ReadYourWrites.Cookie != "" || c.ReadYourWrites.Header != "x-ryw" {
		t.Errorf("header only, keys file by absolute path: %+v, %v", c.ReadYourWrites, err)
	}
}

func TestReadYourWritesErrors(t *testing.T) {
	files := map[string]string{
		"keys.yaml":         goodKeys,
		"nosigning.yaml":    "keys:\n  - {id: k1, secret: " + secret32 + "}\n",
		"wrongsigning.yaml": "signingKey: k3 #k\nkeys:\n  - {id: k1, secret: " + secret32 + "}\n",
		"short.yaml":        "signingKey: k1\nkeys:\n  - {id: k1, secret: " + secret32 + "}\n  - {id: k0, secret: " + secret16 + "} #k\n",
		"notbase64.yaml":    "signingKey: k1\nkeys:\n  - id: k1\n    secret: not*base64 #k\n",
		"empty.yaml":        "signingKey: k1\n",
		"unknown.yaml":      "signingKey: k1\nkeys:\n  - {id: k1, secret: " + secret32 + ", note: old} #k\n",
		"badid.yaml":        "signingKey: k.1\nkeys:\n  - {id: k.1, secret: " + secret32 + "} #k\n",
		"notyaml.yaml":      "keys: [\n",
	}
	path := rywDir(t, files)
	dir := filepath.Dir(path)
	section := func(keys string) string { return "readYourWrites: {keysFile: " + keys + "} #a\n" }
	window := func(w string) string {
		return head + rywService + "    replicas: {reads: secondary, readYourWrites: " + w + "} #a\n" + section("keys.yaml")
	}
	keysErr := func(file, fragment string) []wantErr {
		return []wantErr{{"readYourWrites.keysFile", filepath.Join(dir, file) + fragment, "#a"}}
	}
	cases := []struct {
		name string
		doc  string
		want []wantErr
	}{
		{"a window without the section", head + rywService + "    replicas: {reads: secondary, readYourWrites: 2s} #a\n",
			[]wantErr{{"services[0].replicas.readYourWrites", "needs the readYourWrites section and its keysFile", "#a"}}},
		{"a negative window", window("-1s"),
			[]wantErr{{"services[0].replicas.readYourWrites", "-1s is negative; 0 turns read-your-writes off", "#a"}}},
		{"an absurd window", window("1h"),
			[]wantErr{{"services[0].replicas.readYourWrites", "1h0m0s is above the maximum of 1m0s", "#a"}}},
		{"a window below the token's resolution", window("500us"),
			[]wantErr{{"services[0].replicas.readYourWrites", "500µs is below 1ms, the resolution of a token's expiry", "#a"}}},
		{"a window without a unit", window("2"),
			[]wantErr{{"services[0].replicas.readYourWrites", "into time.Duration", "#a"}}},
		{"a window under reads: primary", head + rywService + "    replicas: {readYourWrites: 2s} #a\n" + section("keys.yaml"),
			[]wantErr{{"services[0].replicas.readYourWrites", "does nothing under reads: primary", "#a"}}},
		{"no keys file", head + rywService + "readYourWrites: {cookie: ryw} #a\n",
			[]wantErr{{"readYourWrites.keysFile", "is required", "#a"}}},
		{"a keys file that does not exist", head + section("missing.yaml"),
			[]wantErr{{"readYourWrites.keysFile", "open " + filepath.Join(dir, "missing.yaml") + ": no such file or directory", "#a"}}},
		{"a keys file with no signing key", head + section("nosigning.yaml"), keysErr("nosigning.yaml", ": signingKey: is required")},
		{"a signing key not in the file", head + section("wrongsigning.yaml"), keysErr("wrongsigning.yaml", `:1: signingKey: "k3" is not the id of any of the keys`)},
		{"a short secret", head + section("short.yaml"), keysErr("short.yaml", ":4: keys[1].secret: is 16 bytes, below the minimum of 32 (openssl rand -base64 32 makes one)")},
		{"a secret not in base64", head + section("notbase64.yaml"), keysErr("notbase64.yaml", ":4: keys[0].secret: is not base64 (openssl rand -base64 32 makes a secret)")},
		{"a keys file without keys", head + section("empty.yaml"), keysErr("empty.yaml", ": keys: is empty")},
		{"an unknown field in the keys file", head + section("unknown.yaml"), keysErr("unknown.yaml", ":3: keys[0].note: unknown field; known fields here: id, secret")},
		{"a key id with a dot", head + section("badid.yaml"), keysErr("badid.yaml", `:3: keys[0].id: "k.1" is not 1 to 32 letters, digits`)},
		{"a keys file that is not YAML", head + section("notyaml.yaml"), keysErr("notyaml.yaml", ": not valid YAML")},
		{"no carrier", head + "readYourWrites: {keysFile: keys.yaml, cookie: \"\"} #a\n",
			[]wantErr{{"readYourWrites", "neither cookie nor header is set", "#a"}}},
		{"a bad cookie name", head + "readYourWrites:\n  keysFile: keys.yaml\n  cookie: \"a;b\" #a\n",
			[]wantErr{{"readYourWrites.cookie", `"a;b" is not a cookie name`, "#a"}}},
		{"a header of Envoy's", head + "readYourWrites:\n  keysFile: keys.yaml\n  header: x-envoy-ryw #a\n",
			[]wantErr{{"readYourWrites.header", "cannot be set by an ext_proc server", "#a"}}},
		{"the cookie header", head + "readYourWrites:\n  keysFile: keys.yaml\n  header: Set-Cookie #a\n",
			[]wantErr{{"readYourWrites.header", `"set-cookie" is the cookie's own header`, "#a"}}},
		{"a header partroute already uses", head + "readYourWrites:\n  keysFile: keys.yaml\n  header: x-partition-id #a\n",
			[]wantErr{{"readYourWrites.header", `"x-partition-id" is already the name of headers.partition`, "#a"}}},
		{"cookieSecure without a cookie", head + "readYourWrites:\n  keysFile: keys.yaml\n  header: x-ryw\n  cookie: \"\"\n  cookieSecure: true #a\n",
			[]wantErr{{"readYourWrites.cookieSecure", "does not apply without a cookie", "#a"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkErrorsAt(t, c.doc, path, c.want)
		})
	}
}

// checkErrorsAt is checkErrors for a configuration at path, whose relative paths resolve there.
func checkErrorsAt(t *testing.T, doc, path string, want []wantErr) {
	t.Helper()
	_, err := config.Parse([]byte(doc), path)
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse = %v, want *config.Errors", err)
	}
	got := errs.List
	if len(got) != len(want) {
		t.Errorf("%d errors, want %d:\n%s", len(got), len(want), describe(got))
	}
	for i := 0; i < len(got) && i < len(want); i++ {
		g, w := got[i], want[i]
		line := lineOf(t, doc, w.mark)
		if g.Path != w.path || !strings.Contains(g.Message, w.fragment) || g.Line != line {
			t.Errorf("error %d = %q (line %d), want path %q, line %d, message containing %q", i, g.Path+": "+g.Message, g.Line, w.path, line, w.fragment)
		}
	}
}

// No error about a keys file ever holds a secret, whatever is wrong with it.
func TestKeysFileErrorsHoldNoSecret(t *testing.T) {
	const secret = "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA=="
	for name, text := range map[string]string{
		"wrong signing key": "signingKey: k2\nkeys:\n  - {id: k1, secret: " + secret + "}\n",
		"short":             "signingKey: k1\nkeys:\n  - {id: k1, secret: " + secret[:20] + "}\n",
		"not base64":        "signingKey: k1\nkeys:\n  - {id: k1, secret: " + secret + "!}\n",
		"not YAML":          "signingKey: k1\nkeys:\n  - {id: k1, secret: " + secret + "\n",
	} {
		path := rywDir(t, map[string]string{"keys.yaml": text})
		_, err := config.Parse([]byte(head+"readYourWrites: {keysFile: keys.yaml}\n"), path)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), secret[:16]) {
			t.Errorf("%s: the error shows the secret: %v", name, err)
		}
	}
}
