package keying

// Headers is the read-only view of a request's headers that key sources need. Names are
// lower-case, as Envoy sends them; pseudo-headers (":path", ":method") are ordinary entries.
// The interface lets the gRPC handler hand over the protobuf header list without copying it.
type Headers interface {
	Len() int
	At(i int) (name, value string)
}

// Get returns the first value of the named header.
func Get(h Headers, name string) (string, bool) {
	if h == nil {
		return "", false
	}
	for i, n := 0, h.Len(); i < n; i++ {
		if k, v := h.At(i); k == name {
			return v, true
		}
	}
	return "", false
}

// HeaderList is a plain list of headers, for callers that build requests themselves (the CLI,
// tests).
type HeaderList []Header

// Header is one request header.
type Header struct{ Name, Value string }

// Len returns the number of headers.
func (l HeaderList) Len() int { return len(l) }

// At returns header i.
func (l HeaderList) At(i int) (string, string) { return l[i].Name, l[i].Value }

// Request is what key extraction and routing read of an HTTP request.
type Request struct {
	Method    string
	Authority string
	// Path is the request target as Envoy's :path carries it, with the query.
	Path    string
	Headers Headers
	// Body is the buffered request body, present only for services that key on it.
	Body []byte
}

// PathOnly returns the path without its query or fragment.
func PathOnly(target string) string {
	for i := 0; i < len(target); i++ {
		if target[i] == '?' || target[i] == '#' {
			return target[:i]
		}
	}
	return target
}

// Query returns the raw query of a request target, without the fragment.
func Query(target string) string {
	q := -1
	for i := 0; i < len(target); i++ {
		switch target[i] {
		case '?':
			if q < 0 {
				q = i + 1
			}
		case '#':
			if q < 0 {
				return ""
			}
			return target[q:i]
		}
	}
	if q < 0 {
		return ""
	}
	return target[q:]
}
