package extproc

import (
	"strconv"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// observingNaming is the example view plus a record of the upstream responses it is told of,
// as a naming source that re-resolves on failure would be.
type observingNaming struct {
	*resolver.View
	seen []string
}

func (o *observingNaming) ObserveUpstream(svc *config.Service, index, status int, headers keying.Headers) bool {
	sf, _ := keying.Get(headers, "x-servicefabric")
	o.seen = append(o.seen, svc.Name+"/"+o.View.Services[svc.Name].Partitions[index].ID+" "+strconv.Itoa(status)+" "+sf)
	return true
}

func responseHeaders(status string, extra ...string) *extprocv3.ProcessingRequest {
	hm := &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: ":status", RawValue: []byte(status)}}}
	for i := 0; i+1 < len(extra); i += 2 {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: extra[i], RawValue: []byte(extra[i+1])})
	}
	return &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{Headers: hm}}}
}

func TestResponseHeadersReachTheNamingSource(t *testing.T) {
	cfg := loadExampleConfig(t)
	naming := &observingNaming{View: loadExampleView(t, cfg)}
	f := newFixtureWith(t, cfg, naming)

	out := f.process(t, requestHeaders("PUT", "a.example.com", "/api/users/12"), responseHeaders("503", "x-servicefabric", "ResourceNotFound"))
	if len(out) != 2 || out[1].GetResponseHeaders() == nil || out[1].GetResponseHeaders().GetResponse() != nil {
		t.Fatalf("responses %v: want the routed request's answer, then an empty response_headers answer", out)
	}
	if len(naming.seen) != 1 || naming.seen[0] != "users/users-1 503 ResourceNotFound" {
		t.Errorf("naming source saw %q, want the 503 of users-1 with its X-ServiceFabric header", naming.seen)
	}

	// Rejected and unmatched requests have no partition to report on.
	f.process(t, requestHeaders("PUT", "a.example.com", "/api/users/99"), responseHeaders("503"))
	f.process(t, requestHeaders("GET", "www.test", "/index.html"), responseHeaders("404"))
	// A response without a readable status is ignored.
	f.process(t, requestHeaders("PUT", "a.example.com", "/api/users/12"), responseHeaders("five hundred"))
	if len(naming.seen) != 1 {
		t.Errorf("naming source saw %q, want only the first response", naming.seen)
	}

	// A body-keyed request remembers the decision made on its body.
	bodyCfg := loadExampleConfig(t, "key:\n      sources: [{path: \"/api/users/{id}\"}, {header: x-user-id}, {query: user}]", "key:\n      sources: [{jsonBody: /user/id}]")
	bodyNaming := &observingNaming{View: loadExampleView(t, bodyCfg)}
	bf := newFixtureWith(t, bodyCfg, bodyNaming)
	bf.process(t, headersMessage(false, false, "PUT", "a.example.com", "/api/users"), requestBody(`{"user": {"id": 30}}`), responseHeaders("410"))
	if len(bodyNaming.seen) != 1 || bodyNaming.seen[0] != "users/users-3 410 " {
		t.Errorf("body-keyed request: naming source saw %q", bodyNaming.seen)
	}
}
