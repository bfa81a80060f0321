package extproc

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"

	"github.com/partroute/partroute/keying"
)

// Every header, pseudo-header or not, is read at its first occurrence: a request with two
// :path entries is matched by the first, as a key header with two values gives the first.
func TestBuildRequestReadsTheFirstOccurrence(t *testing.T) {
	type want struct{ method, path, authority, key string }
	for _, c := range []struct {
		name    string
		headers []string
		want    want
	}{
		{"one of each", []string{":method", "GET", ":path", "/a", ":authority", "a.test", "x-key", "1"}, want{"GET", "/a", "a.test", "1"}},
		{"two :path", []string{":path", "/first", ":path", "/second"}, want{"", "/first", "", ""}},
		{"two :method", []string{":method", "GET", ":method", "DELETE"}, want{"GET", "", "", ""}},
		{"two :authority", []string{":authority", "first.test", ":authority", "second.test"}, want{"", "", "first.test", ""}},
		{"two host, no :authority", []string{"host", "first.test", "host", "second.test"}, want{"", "", "first.test", ""}},
		{":authority wins over host", []string{"host", "h.test", ":authority", "a.test"}, want{"", "", "a.test", ""}},
		{"an empty :authority falls back to host", []string{":authority", "", "host", "h.test"}, want{"", "", "h.test", ""}},
		{"an empty first :path is the path", []string{":path", "", ":path", "/second"}, want{"", "", "", ""}},
		{"two key headers", []string{"x-key", "1", "x-key", "2"}, want{"", "", "", "1"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			hm := &corev3.HeaderMap{}
			for i := 0; i < len(c.headers); i += 2 {
				hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: c.headers[i], RawValue: []byte(c.headers[i+1])})
			}
			m := decodeRequest(t, &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{Headers: hm}}})
			var req keying.Request
			buildRequest(&req, &m.headers)
			key, _ := keying.Get(req.Headers, "x-key")
			if got := (want{req.Method, req.Path, req.Authority, key}); got != c.want {
				t.Errorf("got %+v, want %+v", got, c.want)
			}
		})
	}
}
