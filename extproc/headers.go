package extproc

import (
	"unsafe"

	"github.com/partroute/partroute/keying"
)

// bytesToString views b as a string without copying. The caller keeps b alive and unchanged
// for as long as the string is used: here, the lifetime of one request message.
func bytesToString(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// buildRequest fills req from a message's headers in one pass over them. When a name occurs
// more than once, the first occurrence is the one read, for the pseudo-headers as for the
// headers keying reads (keying.Get): every part of a decision reads the same entry.
func buildRequest(req *keying.Request, h *messageHeaders) {
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
