package e2e

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/readyourwrites"
	"github.com/partroute/partroute/resolver"
)

// rywConfig is one partroute instance's configuration: %[1]s is its ext_proc address, %[2]s its
// admin address. Both instances read the same keys file. users reads from secondaries, and
// from the primary for 10 s after a write; carts the same for 300 ms, so that the test sees a
// token expire.
const rywConfig = `
listen: {extproc: "%[1]s", admin: "%[2]s"}
naming: {source: file, file: naming.yaml}
readYourWrites: {keysFile: ryw-keys.yaml, header: x-partroute-ryw}
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{path: "/api/users/{id}"}], transform: int64}
    replicas: {reads: secondary, readYourWrites: 10s}
  - name: carts
    match: {pathPrefix: /api/carts}
    partitioning: {scheme: singleton}
    replicas: {reads: secondary, readYourWrites: 300ms}
`

// rywStack is a real Envoy in front of two partroute instances sharing a keys file, and one
// backend per replica, each saying which replica and role it plays.
type rywStack struct {
	t      *testing.T
	envoy  string
	admins [2]string
	keys   *readyourwrites.Keyring
	client *http.Client
	// envoyLog is Envoy's log, checked for warnings at the end.
	envoyLog *testkit.LogBuffer
}

func startRYWStack(t *testing.T) *rywStack {
	t.Helper()
	dir := t.TempDir()
	ports := testkit.FreePorts(t, 6)
	s := &rywStack{t: t, envoy: ports[4], admins: [2]string{ports[1], ports[3]}, client: &http.Client{Timeout: 10 * time.Second}}

	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ryw-keys.yaml"), "signingKey: e2e\nkeys:\n  - {id: e2e, secret: "+base64.StdEncoding.EncodeToString(secret)+"}\n")
	var err error
	if s.keys, err = readyourwrites.NewKeyring("e2e", []readyourwrites.Key{{ID: "e2e", Secret: secret}}); err != nil {
		t.Fatal(err)
	}

	specs := []loadtest.BackendSpec{
		{Addr: "127.0.0.1:0", Replica: "users-0-primary", Role: "primary", Partition: "users-0"},
		{Addr: "127.0.0.1:0", Replica: "users-0-secondary", Role: "secondary", Partition: "users-0"},
		{Addr: "127.0.0.1:0", Replica: "users-1-primary", Role: "primary", Partition: "users-1"},
		{Addr: "127.0.0.1:0", Replica: "users-1-secondary", Role: "secondary", Partition: "users-1"},
		{Addr: "127.0.0.1:0", Replica: "carts-primary", Role: "primary", Partition: "carts-0"},
		{Addr: "127.0.0.1:0", Replica: "carts-secondary", Role: "secondary", Partition: "carts-0"},
	}
	backends, err := loadtest.StartReplicas(specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)
	b := backends.All()
	// carts' primary sets a cookie of its own on every answer: partroute's must come beside
	// it, never in its place.
	cartsPrimary := ownCookieReplica(t, b[4])
	write(t, filepath.Join(dir, "naming.yaml"), fmt.Sprintf(`services:
  users:
    partitions:
      - {lowKey: 0, highKey: 4, id: users-0, replicas: [{address: %q, role: primary}, {address: %q, role: secondary}]}
      - {lowKey: 5, highKey: 9, id: users-1, replicas: [{address: %q, role: primary}, {address: %q, role: secondary}]}
  carts:
    partitions:
      - {id: carts-0, replicas: [{address: %q, role: primary}, {address: %q, role: secondary}]}
`, b[0].Addr, b[1].Addr, b[2].Addr, b[3].Addr, cartsPrimary, b[5].Addr))

	var cfg *config.Config
	var view *resolver.View
	for i := range 2 {
		path := filepath.Join(dir, fmt.Sprintf("partroute-%d.yaml", i))
		write(t, path, fmt.Sprintf(rywConfig, ports[2*i], ports[2*i+1]))
		if cfg, view, err = resolver.LoadConfigAndView(path, ""); err != nil {
			t.Fatal(err)
		}
		runPartroute(t, path, ports[2*i+1], time.Hour)
	}
	s.envoyLog = runEnvoy(t, dir, cfg, view, envoyconfig.Options{ListenAddress: s.envoy, AdminAddress: ports[5], ExtProcAddresses: []string{ports[0], ports[2]}},
		envoyconfig.ExtProcCluster)
	return s
}

// ownCookieReplica serves b's answers on a port of its own, adding a Set-Cookie of the
// replica's, and returns its address.
func ownCookieReplica(t *testing.T, b *loadtest.Backend) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Add("Set-Cookie", "replica-session=abc; Path=/")
		b.ServeHTTP(w, r)
	})}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { _ = srv.Close() })
	return lis.Addr().String()
}

// rywAnswer is what one request through Envoy came back with.
type rywAnswer struct {
	status        int
	replica, role string
	// cookies are the response's Set-Cookie headers; token is partroute's token from its
	// cookie, and tokenHeader from the token header.
	cookies            []string
	token, tokenHeader string
}

// do sends one request through Envoy; headers alternate names and values.
func (s *rywStack) do(method, target string, headers ...string) rywAnswer {
	s.t.Helper()
	req, err := http.NewRequest(method, "http://"+s.envoy+target, http.NoBody)
	if err != nil {
		s.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	a := rywAnswer{status: resp.StatusCode, replica: resp.Header.Get(loadtest.ReplicaHeader), role: resp.Header.Get(loadtest.ReplicaRoleHeader),
		cookies: resp.Header.Values("Set-Cookie"), tokenHeader: resp.Header.Get("x-partroute-ryw")}
	for _, c := range a.cookies {
		if v, ok := strings.CutPrefix(c, config.DefaultReadYourWritesCookie+"="); ok {
			a.token, _, _ = strings.Cut(v, ";")
		}
	}
	if a.status != http.StatusOK {
		s.t.Errorf("%s %s: status %d", method, target, a.status)
	}
	return a
}

// tokens is the sum over both instances of partroute_readyourwrites_tokens_total for a
// service and outcome, and how many of them counted some.
func (s *rywStack) tokens(service string, o readyourwrites.Outcome) (sum float64, instances int) {
	s.t.Helper()
	for _, admin := range s.admins {
		resp, err := s.client.Get("http://" + admin + "/metrics")
		if err != nil {
			s.t.Fatal(err)
		}
		text, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		v := metricValue(string(text), fmt.Sprintf(`partroute_readyourwrites_tokens_total{outcome=%q,service=%q}`, o.String(), service))
		if v < 0 {
			s.t.Fatalf("%s serves no token series for %s, %s", admin, service, o)
		}
		sum += v
		if v > 0 {
			instances++
		}
	}
	return sum, instances
}

// A write gets a token (the cookie, beside the replica's own, and the header); reads of its
// partition that carry it go to the primary through either partroute instance, others to the
// secondary; a tampered, foreign or expired token is ignored and counted.
func TestReadYourWritesThroughEnvoy(t *testing.T) {
	s := startRYWStack(t)

	w := s.do("PUT", "/api/users/7")
	if w.replica != "users-1-primary" || w.token == "" || w.tokenHeader != w.token {
		t.Fatalf("write: served by %s, cookies %q, token header %q; want the primary and a token in both", w.replica, w.cookies, w.tokenHeader)
	}
	if want := config.DefaultReadYourWritesCookie + "=" + w.token + "; Path=/; Max-Age=10; HttpOnly; SameSite=Lax"; len(w.cookies) != 1 || w.cookies[0] != want {
		t.Errorf("write: Set-Cookie %q, want [%q]", w.cookies, want)
	}
	if c, err := s.keys.Inspect(w.token); err != nil || c.Service != "users" || c.Partition != "users-1" {
		t.Errorf("the write's token: %+v, %v", c, err)
	}

	// At once, reads of the partition with the token go to the primary, without it to the
	// secondary; a read gets no token.
	for _, c := range []struct {
		name, target, replica string
		headers               []string
	}{
		{"with the cookie", "/api/users/8", "users-1-primary", []string{"Cookie", "theme=dark; " + config.DefaultReadYourWritesCookie + "=" + w.token}},
		{"with the header", "/api/users/9", "users-1-primary", []string{"x-partroute-ryw", w.token}},
		{"without a token", "/api/users/8", "users-1-secondary", nil},
		{"another partition with the token", "/api/users/2", "users-0-secondary", []string{"x-partroute-ryw", w.token}},
	} {
		r := s.do("GET", c.target, c.headers...)
		if r.replica != c.replica {
			t.Errorf("read %s: served by %s, want %s", c.name, r.replica, c.replica)
		}
		if len(r.cookies) != 0 || r.tokenHeader != "" {
			t.Errorf("read %s: got a token (Set-Cookie %q, header %q)", c.name, r.cookies, r.tokenHeader)
		}
	}

	// The token is the same to every instance: reads spread over both by Envoy all reach the
	// primary, and both instances count tokens they accepted.
	acceptedBefore, _ := s.tokens("users", readyourwrites.Accepted)
	const spread = 20
	for i := range spread {
		if r := s.do("GET", fmt.Sprintf("/api/users/%d", 5+i%5), "x-partroute-ryw", w.token); r.replica != "users-1-primary" {
			t.Errorf("read %d with the token: served by %s, want the primary", i, r.replica)
		}
	}
	accepted, instances := s.tokens("users", readyourwrites.Accepted)
	if accepted-acceptedBefore != spread || instances != 2 {
		t.Errorf("accepted tokens: %v more, counted by %d instance(s); want %d, by both", accepted-acceptedBefore, instances, spread)
	}
	if minted, _ := s.tokens("users", readyourwrites.Minted); minted != 1 {
		t.Errorf("minted %v tokens, want 1", minted)
	}
	if foreign, _ := s.tokens("users", readyourwrites.Foreign); foreign != 1 {
		t.Errorf("foreign tokens %v, want 1", foreign)
	}

	// A tampered token is ignored: the read follows the policy, and is counted.
	tampered := []byte(w.token)
	i := len(tampered) - 10
	tampered[i] = map[bool]byte{true: 'B', false: 'A'}[tampered[i] == 'A']
	if r := s.do("GET", "/api/users/8", "Cookie", config.DefaultReadYourWritesCookie+"="+string(tampered)); r.replica != "users-1-secondary" {
		t.Errorf("read with a tampered token: served by %s, want the secondary", r.replica)
	}
	if forged, _ := s.tokens("users", readyourwrites.Forged); forged != 1 {
		t.Errorf("forged tokens %v, want 1", forged)
	}

	// carts' window is 300 ms: a read at once goes to the primary, one past the token's expiry
	// to the secondary. The replica's own cookie is kept beside partroute's.
	cw := s.do("POST", "/api/carts")
	if cw.replica != "carts-primary" || cw.token == "" || len(cw.cookies) != 2 || cw.cookies[0] != "replica-session=abc; Path=/" {
		t.Fatalf("carts write: served by %s, Set-Cookie %q; want the primary, its own cookie and partroute's", cw.replica, cw.cookies)
	}
	claims, err := s.keys.Inspect(cw.token)
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	r := s.do("GET", "/api/carts", "x-partroute-ryw", cw.token)
	if !sent.Before(claims.Expiry) {
		t.Fatalf("the read was sent %v after the token's expiry: the machine is too slow for a window of 300ms", sent.Sub(claims.Expiry))
	}
	if r.replica != "carts-primary" {
		t.Errorf("carts read within the window: served by %s, want the primary", r.replica)
	}
	// Waiting for the expiry to pass is the thing under test; the deadline is the token's own.
	testkit.WaitFor(t, "the carts token's expiry to pass", 5*time.Second, func() bool { return time.Now().After(claims.Expiry) })
	if r := s.do("GET", "/api/carts", "x-partroute-ryw", cw.token); r.replica != "carts-secondary" {
		t.Errorf("carts read past the window: served by %s, want the secondary", r.replica)
	}
	if expired, _ := s.tokens("carts", readyourwrites.Expired); expired != 1 {
		t.Errorf("expired tokens %v, want 1", expired)
	}
	checkEnvoyLog(t, s.envoyLog)
}
