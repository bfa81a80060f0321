package extproc

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/readyourwrites"
)

// rywSecret is the secret of the keys file of these tests.
var rywSecret = []byte("0123456789abcdef0123456789abcdef")

// newRYWFixture is the example configuration with read-your-writes on for users (reads: any)
// for 2s, carried by the cookie and the x-ryw header, and a keyring of the same key to look at
// tokens with.
func newRYWFixture(tb testing.TB) (*fixture, *readyourwrites.Keyring) {
	tb.Helper()
	keys := filepath.Join(tb.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("signingKey: k1\nkeys:\n  - {id: k1, secret: "+base64.StdEncoding.EncodeToString(rywSecret)+"}\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	cfg := loadExampleConfig(tb,
		"replicas: {reads: any}", "replicas: {reads: any, readYourWrites: 2s}",
		"unmatched: passthrough", "unmatched: passthrough\nreadYourWrites: {keysFile: "+keys+", header: x-ryw}",
	)
	f := newFixtureWith(tb, cfg, loadExampleView(tb, cfg))
	f.metrics.Init(cfg)
	ring, err := readyourwrites.NewKeyring("k1", []readyourwrites.Key{{ID: "k1", Secret: rywSecret}})
	if err != nil {
		tb.Fatal(err)
	}
	return f, ring
}

// rywMetadata returns the partroute.ryw metadata of a response, nil when it has none.
func rywMetadata(resp *extprocv3.ProcessingResponse) *structpb.Struct {
	return resp.GetDynamicMetadata().GetFields()[contract.RYWNamespace].GetStructValue()
}

// tokensCounted is the value of partroute_readyourwrites_tokens_total for users and outcome.
func tokensCounted(f *fixture, o readyourwrites.Outcome) float64 {
	return testutil.ToFloat64(f.metrics.tokens.WithLabelValues("users", o.String()))
}

// A write gets the token in partroute.ryw beside its envoy.lb criteria; reads get none, and go
// to the primary with the token, to any replica with a tampered one.
func TestReadYourWritesAnswers(t *testing.T) {
	f, ring := newRYWFixture(t)
	before := time.Now()
	resp := f.decide(t, requestHeaders("PUT", "api.example.com", "/api/users/12"))
	md := resp.GetDynamicMetadata()
	if lb := md.GetFields()[contract.LBNamespace].GetStructValue(); !proto.Equal(lb, contract.LBFields("users-1", "primary")) {
		t.Errorf("envoy.lb %v, want users-1 primary", lb)
	}
	if len(md.GetFields()) != 2 {
		t.Errorf("metadata namespaces %v, want envoy.lb and %s", md, contract.RYWNamespace)
	}
	ryw := rywMetadata(resp)
	token := ryw.GetFields()[contract.RYWKeyToken].GetStringValue()
	cookie := ryw.GetFields()[contract.RYWKeyCookie].GetStringValue()
	if len(ryw.GetFields()) != 2 || token == "" {
		t.Fatalf("%s metadata %v, want the cookie and the token", contract.RYWNamespace, ryw)
	}
	if want := "partroute-ryw=" + token + "; Path=/; Max-Age=2; HttpOnly; SameSite=Lax"; cookie != want {
		t.Errorf("cookie %q, want %q", cookie, want)
	}
	c, err := ring.Inspect(token)
	if err != nil || c.Service != "users" || c.Partition != "users-1" || c.Expiry.Before(before.Add(2*time.Second).Truncate(time.Millisecond)) || c.Expiry.After(time.Now().Add(2*time.Second)) {
		t.Errorf("token claims %+v, %v", c, err)
	}
	// The envoy.lb criteria hold only partition and role, however the answer is built.
	checkRouted(t, &extprocv3.ProcessingResponse{Response: resp.GetResponse(), DynamicMetadata: &structpb.Struct{Fields: map[string]*structpb.Value{
		contract.LBNamespace: md.GetFields()[contract.LBNamespace],
	}}}, false, routed{partition: "users-1", role: "primary", key: "12"})

	// Reads: no token is minted, and the answer is exactly what it is without the feature.
	checkRouted(t, f.decide(t, requestHeaders("GET", "api.example.com", "/api/users/12")), false,
		routed{partition: "users-1", roleHeader: "any", key: "12"})
	checkRouted(t, f.decide(t, requestHeaders("GET", "api.example.com", "/api/users/13", "cookie", "partroute-ryw="+token)), false,
		routed{partition: "users-1", role: "primary", key: "13"})
	checkRouted(t, f.decide(t, requestHeaders("GET", "api.example.com", "/api/users/14", "x-ryw", token)), false,
		routed{partition: "users-1", role: "primary", key: "14"})
	tampered := strings.Replace(token, "v1.k1.", "v1.k1.A", 1)
	checkRouted(t, f.decide(t, requestHeaders("GET", "api.example.com", "/api/users/12", "x-ryw", tampered)), false,
		routed{partition: "users-1", roleHeader: "any", key: "12"})
	// Another partition's read ignores it.
	checkRouted(t, f.decide(t, requestHeaders("GET", "api.example.com", "/api/users/1", "x-ryw", token)), false,
		routed{partition: "users-0", roleHeader: "any", key: "1"})

	for _, c := range []struct {
		o    readyourwrites.Outcome
		want float64
	}{
		{readyourwrites.Minted, 1}, {readyourwrites.Accepted, 2}, {readyourwrites.Forged, 1}, {readyourwrites.Foreign, 1},
		{readyourwrites.Expired, 0}, {readyourwrites.UnknownKey, 0}, {readyourwrites.Malformed, 0},
	} {
		if got := tokensCounted(f, c.o); got != c.want {
			t.Errorf("tokens{outcome=%s} = %v, want %v", c.o, got, c.want)
		}
	}
	// Only the services with the window have token series; no request of theirs is an error.
	if n := testutil.CollectAndCount(f.metrics.tokens); n != len(readyourwrites.Outcomes()) {
		t.Errorf("%d token series, want %d: one per outcome for users alone", n, len(readyourwrites.Outcomes()))
	}
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("users", "ok")); got != 6 {
		t.Errorf("users requests ok = %v, want all 6", got)
	}
}

// A carrier left out is left out of the metadata: with the header alone, no cookie.
func TestReadYourWritesHeaderOnly(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("signingKey: k1\nkeys:\n  - {id: k1, secret: "+base64.StdEncoding.EncodeToString(rywSecret)+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := loadExampleConfig(t,
		"replicas: {reads: secondary}", "replicas: {reads: secondary, readYourWrites: 300ms}",
		"unmatched: passthrough", "unmatched: passthrough\nreadYourWrites: {keysFile: "+keys+", header: x-ryw, cookie: \"\"}",
	)
	f := newFixtureWith(t, cfg, loadExampleView(t, cfg))
	ryw := rywMetadata(f.decide(t, requestHeaders("POST", "h", "/api/sessions", "x-session", "abc")))
	if len(ryw.GetFields()) != 1 || ryw.GetFields()[contract.RYWKeyToken].GetStringValue() == "" {
		t.Errorf("%s metadata %v, want the token alone", contract.RYWNamespace, ryw)
	}
}

// A rejected write mints nothing, and a write to a service without the window carries no
// partroute.ryw metadata.
func TestReadYourWritesNotOnOtherAnswers(t *testing.T) {
	f, _ := newRYWFixture(t)
	checkRejection(t, f.decide(t, requestHeaders("PUT", "api.example.com", "/api/users/99")), 400, "partition_key_out_of_range")
	if md := rywMetadata(f.decide(t, requestHeaders("PUT", "h", "/api/regions/eu"))); md != nil {
		t.Errorf("a write to regions carries %v", md)
	}
	if got := tokensCounted(f, readyourwrites.Minted); got != 0 {
		t.Errorf("minted %v tokens, want 0", got)
	}
}

// Init follows the configuration: a reload that turns the window off deletes the service's
// token series.
func TestReadYourWritesSeriesFollowTheConfiguration(t *testing.T) {
	f, _ := newRYWFixture(t)
	if n := testutil.CollectAndCount(f.metrics.tokens); n != len(readyourwrites.Outcomes()) {
		t.Fatalf("%d token series after Init", n)
	}
	f.metrics.Init(loadExampleConfig(t))
	if n := testutil.CollectAndCount(f.metrics.tokens); n != 0 {
		t.Errorf("%d token series after a configuration without read-your-writes, want 0", n)
	}
	// A token counted for the removed service, decided before the reload, brings none back.
	f.metrics.countToken("users", readyourwrites.Accepted)
	if n := testutil.CollectAndCount(f.metrics.tokens); n != 0 {
		t.Errorf("%d token series after a late count, want 0", n)
	}
}

// A write of a service with both ordered selection and read-your-writes answers with the three
// namespaces: the criteria, the host list and the token.
func TestOrderedSelectionWithReadYourWrites(t *testing.T) {
	keys := filepath.Join(t.TempDir(), "keys.yaml")
	if err := os.WriteFile(keys, []byte("signingKey: k1\nkeys:\n  - {id: k1, secret: "+base64.StdEncoding.EncodeToString(rywSecret)+"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := loadExampleConfig(t,
		"replicas: {reads: any}", "replicas: {reads: any, readYourWrites: 2s, selection: ordered}",
		"unmatched: passthrough", "unmatched: passthrough\nreadYourWrites: {keysFile: "+keys+", header: x-ryw}",
	)
	f := newFixtureWith(t, cfg, loadExampleView(t, cfg))
	resp := f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/12"))
	md := resp.GetDynamicMetadata().GetFields()
	if md[contract.LBNamespace] == nil || md[contract.HostsNamespace].GetStructValue().GetFields()[contract.KeyHosts].GetStringValue() != "127.0.0.1:8084" || rywMetadata(resp) == nil {
		t.Errorf("metadata %v: want envoy.lb, the primary's host list and the token", resp.GetDynamicMetadata())
	}
}
