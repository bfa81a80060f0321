package servicefabric

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
)

func TestParseAddress(t *testing.T) {
	// Three listeners as a reliable service publishes them: slashes escaped, names in no
	// particular order.
	const three = `{"Endpoints":{"Zed":"http:\/\/10.0.1.4:8080","Admin":"tcp:\/\/10.0.1.4:9000","Api":"https:\/\/10.0.1.4:8443\/api\/6f0c"}}`
	for _, tc := range []struct {
		name, published, listener string
		want                      Address
	}{
		{"unnamed listener", `{"Endpoints":{"":"http:\/\/10.0.0.4:8080"}}`, "", Address{Scheme: "http", HostPort: "10.0.0.4:8080"}},
		{"first http listener in name order", three, "", Address{Listener: "Api", Scheme: "https", HostPort: "10.0.1.4:8443", Path: "/api/6f0c"}},
		{"named listener", three, "Zed", Address{Listener: "Zed", Scheme: "http", HostPort: "10.0.1.4:8080"}},
		{"listener name in another case", three, "zED", Address{Listener: "Zed", Scheme: "http", HostPort: "10.0.1.4:8080"}},
		{"exact name before a case-insensitive one", `{"Endpoints":{"API":"http:\/\/a:1","Api":"http:\/\/b:2"}}`, "Api", Address{Listener: "Api", Scheme: "http", HostPort: "b:2"}},
		{"non-http listeners skipped", `{"Endpoints":{"A":"net.tcp:\/\/h:1","B":"sf:\/\/x","C":"HTTP:\/\/h:3"}}`, "", Address{Listener: "C", Scheme: "http", HostPort: "h:3"}},
		{"default http port", `{"Endpoints":{"":"http:\/\/node-1\/"}}`, "", Address{Scheme: "http", HostPort: "node-1:80", Path: "/"}},
		{"default https port", `{"Endpoints":{"":"https:\/\/node-1"}}`, "", Address{Scheme: "https", HostPort: "node-1:443"}},
		{"ipv6", `{"Endpoints":{"":"http:\/\/[fd00::4]:8080"}}`, "", Address{Scheme: "http", HostPort: "[fd00::4]:8080"}},
		{"unescaped slashes and spaces", ` { "Endpoints" : { "" : "http://10.0.0.4:8080" } } `, "", Address{Scheme: "http", HostPort: "10.0.0.4:8080"}},
		{"guest host:port", "10.0.2.4:7000", "", Address{HostPort: "10.0.2.4:7000"}},
		{"guest host:port with a listener configured", "10.0.2.4:7000", "Api", Address{HostPort: "10.0.2.4:7000"}},
		{"guest ipv6 host:port", "[::1]:7000", "", Address{HostPort: "[::1]:7000"}},
		{"guest url", "http://settings-node-2:7001/", "", Address{Scheme: "http", HostPort: "settings-node-2:7001", Path: "/"}},
		{"guest https url", "HTTPS://Node_3", "", Address{Scheme: "https", HostPort: "Node_3:443"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAddress(tc.published, tc.listener)
			if err != nil {
				t.Fatalf("ParseAddress(%q, %q): %v", tc.published, tc.listener, err)
			}
			if got != tc.want {
				t.Errorf("ParseAddress(%q, %q) = %+v, want %+v", tc.published, tc.listener, got, tc.want)
			}
		})
	}
}

func TestParseAddressRejects(t *testing.T) {
	const three = `{"Endpoints":{"Zed":"http:\/\/10.0.1.4:8080","Admin":"tcp:\/\/10.0.1.4:9000"}}`
	for _, tc := range []struct {
		name, published, listener, want string
	}{
		{"empty", "", "", "is empty"},
		{"blank", "   ", "", "is empty"},
		{"truncated json", `{"Endpoints":{"":"http:\/\/10.0.0.8:8080"`, "", "is not the JSON object"},
		{"json trailing garbage", `{"Endpoints":{"":"http://a:1"}}x`, "", "is not the JSON object"},
		{"json wrong shape", `{"Endpoints":["http://a:1"]}`, "", "is not the JSON object"},
		{"json no endpoints", `{"Listeners":{"":"http://a:1"}}`, "", `has no listener under "Endpoints"`},
		{"no such listener", three, "Api", `has no listener "Api"; it has ["Admin" "Zed"]`},
		{"listener not http", three, "admin", `listener "Admin" has "tcp://10.0.1.4:9000", which is not an http or https URL`},
		{"no http listener", `{"Endpoints":{"Replication":"net.tcp:\/\/10.0.0.9:20001"}}`, "", `has no http or https URL among its listeners ["Replication"]`},
		{"bad port", `{"Endpoints":{"":"http:\/\/10.0.0.11:99999"}}`, "", `port "99999" is not a number from 1 to 65535`},
		{"bad port named", `{"Endpoints":{"x":"http:\/\/10.0.0.11:99999"}}`, "x", `port "99999" is not a number from 1 to 65535`},
		{"port zero", "http://h:0", "", `port "0"`},
		{"user info", "http://user:pw@h:80", "", "carries user information"},
		{"no host", "http:///path", "", "has no host"},
		{"tcp url", "tcp://h:80", "", "not an http or https URL"},
		{"plain words", "not an address", "", "is neither"},
		{"host only", "10.0.2.4", "", "is neither"},
		{"host:port bad port", "10.0.2.4:http", "", `port "http"`},
		{"host with a percent", "[fe80::1%25en0]:80", "", "cannot appear in a host name"},
		{"control character", "h\x00st:80", "", "cannot appear in a host name"},
		{"too long", "http://" + strings.Repeat("a", maxAddressLen) + ":80", "", "longer than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseAddress(tc.published, tc.listener)
			var ae *AddressError
			if !errors.As(err, &ae) {
				t.Fatalf("ParseAddress(%q, %q) = %+v, %v; want an *AddressError", tc.published, tc.listener, got, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

// FuzzParseAddress checks that no published address makes the parser panic, and that whatever
// it accepts is a host:port Envoy can take: a host of visible characters and a port from 1 to
// 65535.
func FuzzParseAddress(f *testing.F) {
	for _, seed := range []string{
		`{"Endpoints":{"":"http:\/\/10.0.0.4:8080"}}`,
		`{"Endpoints":{"Zed":"http:\/\/10.0.1.4:8080","Admin":"tcp:\/\/10.0.1.4:9000","Api":"https:\/\/10.0.1.4:8443\/api"}}`,
		`{"Endpoints":{"":"http:\/\/[fd00::4]:8080"}}`,
		"10.0.2.4:7000", "http://node:7001/", "[::1]:80", "", "{", `{"Endpoints":null}`, "http://[::1", "http://h:65536",
	} {
		f.Add(seed, "")
		f.Add(seed, "Api")
	}
	f.Fuzz(func(t *testing.T, published, listener string) {
		a, err := ParseAddress(published, listener)
		if err != nil {
			var ae *AddressError
			if !errors.As(err, &ae) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		host, port, err := net.SplitHostPort(a.HostPort)
		if err != nil || host == "" {
			t.Fatalf("accepted %q as %q, which is not host:port", published, a.HostPort)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			t.Fatalf("accepted %q with port %q", published, port)
		}
		for i := 0; i < len(host); i++ {
			if host[i] <= ' ' || host[i] >= 0x7f {
				t.Fatalf("accepted %q with host %q", published, host)
			}
		}
		if a.Scheme != "" && a.Scheme != "http" && a.Scheme != "https" {
			t.Fatalf("accepted %q with scheme %q", published, a.Scheme)
		}
	})
}

// FuzzDecodeResolution checks that no gateway answer makes the ResolvePartition decoder panic,
// and that an accepted one satisfies what the source relies on.
func FuzzDecodeResolution(f *testing.F) {
	for _, seed := range []string{
		`{"Name":"fabric:/shop/users","PartitionInformation":{"ServicePartitionKind":"Int64Range","Id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","LowKey":"0","HighKey":"8"},"Endpoints":[{"Kind":"StatefulPrimary","Address":"{\"Endpoints\":{\"\":\"http:\\/\\/10.0.0.4:8080\"}}"}],"Version":"132587449886596373"}`,
		`{"PartitionInformation":{"ServicePartitionKind":"Named","Id":"0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a10","Name":"eu"},"Endpoints":[]}`,
		`{"PartitionInformation":{"ServicePartitionKind":"Singleton","Id":"5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e20"},"Endpoints":[{"Kind":"Stateless","Address":"10.0.2.4:7000"}]}`,
		`{"PartitionInformation":{"ServicePartitionKind":"Int64Range","Id":"1b4e28ba-2fa1-11d2-883f-0016d3cca427","LowKey":-1,"HighKey":1e3},"Endpoints":null}`,
		`{}`, `null`, `[]`, `{"PartitionInformation":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r, err := decodeResolution(body)
		if err != nil {
			return
		}
		p := r.Partition
		if !validGUID(p.ID) || p.ID != strings.ToLower(p.ID) {
			t.Fatalf("accepted partition id %q", p.ID)
		}
		switch p.Kind {
		case KindInt64Range:
			if p.LowKey > p.HighKey {
				t.Fatalf("accepted [%d, %d]", p.LowKey, p.HighKey)
			}
		case KindNamed:
			if p.Name == "" {
				t.Fatal("accepted a named partition without a name")
			}
		case KindSingleton:
		default:
			t.Fatalf("accepted kind %q", p.Kind)
		}
		for _, e := range r.Endpoints {
			_, _ = ParseAddress(e.Address, "")
		}
	})
}
