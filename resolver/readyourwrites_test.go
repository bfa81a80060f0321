package resolver_test

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/readyourwrites"
	"github.com/partroute/partroute/resolver"
)

// rywConfig has users with a window of 2s under reads: secondary, carried by the cookie and by
// a header; orders, under the same policy without read-your-writes; and strict, under reads:
// any with the window on, whose one partition has no primary.
const rywConfig = `
naming: {file: naming.yaml}
readYourWrites: {keysFile: keys.yaml, header: x-ryw}
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{path: "/api/users/{id}"}], transform: int64}
    replicas: {reads: secondary, readYourWrites: 2s}
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{path: "/api/orders/{id}"}], transform: int64}
    replicas: {reads: secondary}
  - name: strict
    match: {pathPrefix: /api/strict}
    partitioning: {scheme: singleton}
    replicas: {reads: any, readYourWrites: 2s}
`

const rywNaming = `
services:
  users:
    partitions:
      - {lowKey: 0, highKey: 4, id: users-0, replicas: [{address: 10.0.0.1:80, role: primary}, {address: 10.0.0.2:80, role: secondary}]}
      - {lowKey: 5, highKey: 9, id: users-1, replicas: [{address: 10.0.0.3:80, role: primary}, {address: 10.0.0.4:80, role: secondary}]}
  orders:
    partitions:
      - {lowKey: 0, highKey: 4, id: orders-0, replicas: [{address: 10.0.1.1:80, role: primary}, {address: 10.0.1.2:80, role: secondary}]}
      - {lowKey: 5, highKey: 9, id: orders-1, replicas: [{address: 10.0.1.3:80, role: primary}, {address: 10.0.1.4:80, role: secondary}]}
  strict:
    partitions:
      - {id: strict-0, replicas: [{address: 10.0.2.1:80, role: primary, healthy: false}, {address: 10.0.2.2:80, role: secondary}]}
`

// rywFixture is a resolver over rywConfig, and a keyring of the same keys to mint tokens of
// the test's own.
type rywFixture struct {
	cfg  *config.Config
	r    *resolver.Resolver
	keys *readyourwrites.Keyring
}

func newRYWFixture(t testing.TB) *rywFixture {
	t.Helper()
	dir := t.TempDir()
	secret := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	keys := "signingKey: k1\nkeys:\n  - {id: k1, secret: " + secret + "}\n"
	if err := os.WriteFile(filepath.Join(dir, "keys.yaml"), []byte(keys), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse([]byte(rywConfig), filepath.Join(dir, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(rywNaming), filepath.Join(dir, "naming.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := readyourwrites.NewKeyring("k1", []readyourwrites.Key{{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}})
	if err != nil {
		t.Fatal(err)
	}
	return &rywFixture{cfg: cfg, r: resolver.New(&resolver.State{Config: cfg, Naming: view}), keys: ring}
}

// A write's decision mints a token of its service and partition, expiring a window from now; a
// read, a write to a service without the window, and a rejected write mint none.
func TestResolveMintsTokenOnWrite(t *testing.T) {
	f := newRYWFixture(t)
	ctx := context.Background()
	before := time.Now()
	d := f.r.Resolve(ctx, request("PUT", "h", "/api/users/7"))
	after := time.Now()
	if d.Err != nil || d.Role != resolver.RolePrimary || d.TokenOutcome != readyourwrites.Minted || d.Token() == "" {
		t.Fatalf("write: %+v", d)
	}
	c, err := f.keys.Inspect(d.Token())
	if err != nil {
		t.Fatal(err)
	}
	if c.Service != "users" || c.Partition != "users-1" {
		t.Errorf("token claims %+v, want users/users-1", c)
	}
	if lo, hi := before.Add(2*time.Second).Truncate(time.Millisecond), after.Add(2*time.Second); c.Expiry.Before(lo) || c.Expiry.After(hi) {
		t.Errorf("token expires at %v, want a window of 2s from the write: between %v and %v", c.Expiry, lo, hi)
	}
	for _, c := range []struct {
		name string
		req  *keying.Request
	}{
		{"a read", request("GET", "h", "/api/users/7")},
		{"a strong read", request("GET", "h", "/api/users/7", "x-partroute-consistency", "strong")},
		{"a write to a service without the window", request("PUT", "h", "/api/orders/7")},
		{"a write to a partition without a primary", request("PUT", "h", "/api/strict")},
	} {
		if d := f.r.Resolve(ctx, c.req); d.Token() != "" || (d.TokenOutcome != readyourwrites.None && d.TokenOutcome != readyourwrites.Accepted) {
			t.Errorf("%s: token %q, outcome %v", c.name, d.Token(), d.TokenOutcome)
		}
	}
}

// A read that carries a valid token of its partition goes to the primary; one that carries
// any other token follows the read policy, and never fails for it.
func TestResolveReadWithToken(t *testing.T) {
	f := newRYWFixture(t)
	ctx := context.Background()
	write := f.r.Resolve(ctx, request("POST", "h", "/api/users/7"))
	valid := write.Token()
	if valid == "" {
		t.Fatalf("the write minted no token: %+v", write)
	}
	soon := time.Now().Add(time.Minute)
	// One character of the MAC changed for another of base64url's, not the last (whose low
	// bits are padding): the token keeps its form and loses its signature.
	tampered := []byte(valid)
	if tampered[len(tampered)-3] == 'A' {
		tampered[len(tampered)-3] = 'B'
	} else {
		tampered[len(tampered)-3] = 'A'
	}
	cases := []struct {
		name string
		req  *keying.Request
		role resolver.Role
		want readyourwrites.Outcome
	}{
		{"the write's token, in the cookie", request("GET", "h", "/api/users/8", "cookie", "a=1; partroute-ryw="+valid), resolver.RolePrimary, readyourwrites.Accepted},
		{"the write's token, in the header", request("GET", "h", "/api/users/9", "x-ryw", valid), resolver.RolePrimary, readyourwrites.Accepted},
		{"HEAD is a read too", request("HEAD", "h", "/api/users/5", "x-ryw", valid), resolver.RolePrimary, readyourwrites.Accepted},
		{"the header before the cookie", request("GET", "h", "/api/users/9", "x-ryw", "junk", "cookie", "partroute-ryw="+valid), resolver.RoleSecondary, readyourwrites.Malformed},
		{"no token", request("GET", "h", "/api/users/8"), resolver.RoleSecondary, readyourwrites.None},
		{"another cookie's name", request("GET", "h", "/api/users/8", "cookie", "ryw="+valid), resolver.RoleSecondary, readyourwrites.None},
		{"expired", request("GET", "h", "/api/users/8", "x-ryw", f.keys.Mint("users", "users-1", time.Now().Add(-time.Millisecond))), resolver.RoleSecondary, readyourwrites.Expired},
		{"another partition", request("GET", "h", "/api/users/2", "x-ryw", valid), resolver.RoleSecondary, readyourwrites.Foreign},
		{"another service's partition", request("GET", "h", "/api/users/8", "x-ryw", f.keys.Mint("orders", "users-1", soon)), resolver.RoleSecondary, readyourwrites.Foreign},
		{"tampered", request("GET", "h", "/api/users/8", "x-ryw", string(tampered)), resolver.RoleSecondary, readyourwrites.Forged},
		{"another key's", request("GET", "h", "/api/users/8", "x-ryw", strings.Replace(valid, "v1.k1.", "v1.k2.", 1)), resolver.RoleSecondary, readyourwrites.UnknownKey},
		{"garbage", request("GET", "h", "/api/users/8", "cookie", "partroute-ryw=%00%ff;"), resolver.RoleSecondary, readyourwrites.Malformed},
		// A strong read or a write is decided as without a token, which is not even read.
		{"a strong read", request("GET", "h", "/api/users/2", "x-ryw", valid, "x-partroute-consistency", "strong"), resolver.RolePrimary, readyourwrites.None},
		{"a write with a token", request("PUT", "h", "/api/users/2", "x-ryw", valid), resolver.RolePrimary, readyourwrites.Minted},
		// A service without the window reads no token.
		{"a service without the window", request("GET", "h", "/api/orders/8", "x-ryw", f.keys.Mint("orders", "orders-1", soon)), resolver.RoleSecondary, readyourwrites.None},
		// Under reads: any, a read with a token needs the primary as a strong read does.
		{"reads: any", request("GET", "h", "/api/strict", "x-ryw", f.keys.Mint("strict", "strict-0", soon)), resolver.RolePrimary, readyourwrites.Accepted},
		{"reads: any, a foreign token", request("GET", "h", "/api/strict", "x-ryw", valid), resolver.RoleAny, readyourwrites.Foreign},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := f.r.Resolve(ctx, c.req)
			if d.Role != c.role || d.TokenOutcome != c.want {
				t.Errorf("role %v, token %v; want %v, %v (%+v)", d.Role, d.TokenOutcome, c.role, c.want, d.Err)
			}
			if d.Err != nil && c.name != "reads: any" {
				t.Errorf("rejected: %v", d.Err)
			}
		})
	}
}

// A read with a valid token of a partition that has no healthy primary is answered as a strong
// read is: 503, never a secondary that may not have the write.
func TestResolveReadWithTokenWithoutPrimary(t *testing.T) {
	f := newRYWFixture(t)
	d := f.r.Resolve(context.Background(), request("GET", "h", "/api/strict", "cookie", "partroute-ryw="+f.keys.Mint("strict", "strict-0", time.Now().Add(time.Minute))))
	if d.Err == nil || d.Err.Code != resolver.PartitionUnavailable || d.Role != resolver.RolePrimary || d.TokenOutcome != readyourwrites.Accepted {
		t.Errorf("%+v, %v; want partition_unavailable for the primary", d, d.Err)
	}
}

// Verifying a token costs no allocation: a client sending tokens by the thousand costs
// partroute CPU only.
func TestResolveReadWithTokenDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates, and empties sync.Pools at random")
	}
	f := newRYWFixture(t)
	ctx := context.Background()
	valid := f.keys.Mint("users", "users-1", time.Now().Add(time.Hour))
	for _, req := range []*keying.Request{
		request("GET", "h", "/api/users/8", "cookie", "partroute-ryw="+valid),
		request("GET", "h", "/api/users/8", "x-ryw", valid[:len(valid)-1]+"A"),
	} {
		if d := f.r.Resolve(ctx, req); d.Err != nil {
			t.Fatal(d.Err)
		}
		if allocs := testing.AllocsPerRun(100, func() { _ = f.r.Resolve(ctx, req) }); allocs != 0 {
			t.Errorf("Resolve allocates %v times per read with a token, want 0", allocs)
		}
	}
}
