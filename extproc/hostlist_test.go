package extproc

import (
	"testing"

	"github.com/partroute/partroute/contract"
)

// orderedFixture decides with the example configuration whose users service has
// replicas.selection: ordered, and a naming view giving its partition users-1 two secondaries.
func orderedFixture(t *testing.T) *fixture {
	t.Helper()
	cfg := loadExampleConfig(t, "replicas: {reads: any}", "replicas: {reads: any, selection: ordered}")
	view := loadExampleView(t, cfg, "- {address: 127.0.0.1:8085, role: secondary}",
		"- {address: 127.0.0.1:8085, role: secondary}\n          - {address: 127.0.0.1:8089, role: secondary}")
	return newFixtureWith(t, cfg, view)
}

// hostList returns the host list of a routed answer and whether it has the namespace at all,
// after checking that the envoy.lb criteria are still there.
func hostList(t *testing.T, f *fixture, method, path string) (string, bool) {
	t.Helper()
	resp := f.decide(t, requestHeaders(method, "a.example.com", path))
	md := resp.GetDynamicMetadata().GetFields()
	if md[contract.LBNamespace].GetStructValue().GetFields()[contract.KeyPartition].GetStringValue() == "" {
		t.Fatalf("%s %s: no envoy.lb partition in %v", method, path, md)
	}
	ns, ok := md[contract.HostsNamespace]
	return ns.GetStructValue().GetFields()[contract.KeyHosts].GetStringValue(), ok
}

// A read of a service with ordered selection lists the partition's healthy secondaries from a
// random one, then its primary; a write lists the primary alone. The subset criteria stay.
func TestOrderedSelectionSendsTheHostList(t *testing.T) {
	f := orderedFixture(t)
	firsts := map[string]int{}
	for range 60 {
		list, ok := hostList(t, f, "GET", "/api/users/12")
		switch list {
		case "127.0.0.1:8085,127.0.0.1:8089,127.0.0.1:8084":
			firsts["8085"]++
		case "127.0.0.1:8089,127.0.0.1:8085,127.0.0.1:8084":
			firsts["8089"]++
		default:
			t.Fatalf("read host list %q (namespace present: %v), want both secondaries in some order, then the primary", list, ok)
		}
	}
	// 60 fair draws all alike happen once in 2^59.
	if len(firsts) != 2 {
		t.Errorf("the reads' lists all started at the same secondary: %v", firsts)
	}
	if list, _ := hostList(t, f, "PUT", "/api/users/12"); list != "127.0.0.1:8084" {
		t.Errorf("write host list %q, want the primary 127.0.0.1:8084 alone", list)
	}
	// users-0 has one healthy secondary and one unhealthy one, which is left out.
	if list, _ := hostList(t, f, "GET", "/api/users/3"); list != "127.0.0.1:8082,127.0.0.1:8081" {
		t.Errorf("read host list of users-0 %q, want its healthy secondary, then its primary", list)
	}
}

// A service with the default selection sends no host list: its answers are as they were.
func TestSubsetSelectionSendsNoHostList(t *testing.T) {
	f := orderedFixture(t)
	resp := f.decide(t, requestHeaders("GET", "api.test", "/api/sessions/current", "cookie", "session=x"))
	if _, ok := resp.GetDynamicMetadata().GetFields()[contract.HostsNamespace]; ok {
		t.Errorf("a service with subset selection got a host list: %v", resp.GetDynamicMetadata())
	}
	f = newFixture(t)
	if _, ok := hostList(t, f, "GET", "/api/users/12"); ok {
		t.Error("the users service without selection: ordered got a host list")
	}
}
