package extproc

import (
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/partroute/partroute/keying"
)

// protoHeaders lets keying read Envoy's header list in place. It is used through a pointer so
// that storing it in the keying.Headers interface does not allocate.
type protoHeaders []*corev3.HeaderValue

func (h *protoHeaders) Len() int { return len(*h) }

// At returns header i. Envoy sends values in raw_value; value is read only when raw_value is
// empty, for older peers. The value aliases the request message, which outlives the decision.
func (h *protoHeaders) At(i int) (string, string) {
	hv := (*h)[i]
	if len(hv.RawValue) > 0 {
		return hv.Key, bytesToString(hv.RawValue)
	}
	return hv.Key, hv.Value
}

// bytesToString views b as a string without copying. The caller keeps b alive and unchanged
// for as long as the string is used: here, the lifetime of one request message.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// buildRequest fills req from a header map in one pass over the headers. When a name occurs
// more than once, the first occurrence is the one read, for the pseudo-headers as for the
// headers keying reads (keying.Get): every part of a decision reads the same entry.
func buildRequest(req *keying.Request, hm *corev3.HeaderMap) {
	if hm == nil {
		return
	}
	h := (*protoHeaders)(&hm.Headers)
	req.Headers = h
	host := ""
	var method, path, authority, hostSeen bool
	for i, n := 0, h.Len(); i < n; i++ {
		k, v := h.At(i)
		switch {
		case k == ":method" && !method:
			req.Method, method = v, true
		case k == ":path" && !path:
			req.Path, path = v, true
		case k == ":authority" && !authority:
			req.Authority, authority = v, true
		case k == "host" && !hostSeen:
			host, hostSeen = v, true
		}
	}
	if req.Authority == "" {
		req.Authority = host
	}
}
