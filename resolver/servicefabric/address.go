package servicefabric

import (
	"encoding/json"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// maxAddressLen bounds a published address. Real ones are a few hundred bytes even with several
// listeners; anything longer is refused rather than parsed.
const maxAddressLen = 8192

// Address is the endpoint chosen from what a replica published.
type Address struct {
	// Listener is the name of the listener chosen; "" for the unnamed listener or a plain
	// address.
	Listener string
	// Scheme is "http" or "https" for a URL, "" for a plain host:port.
	Scheme string
	// HostPort is what Envoy connects to: host:port, the port defaulting to 80 for http and
	// 443 for https, an IPv6 host in brackets.
	HostPort string
	// Path is the URL's path, which partroute does not add to requests (see
	// docs/servicefabric.md on listeners that publish a path).
	Path string
}

// ParseAddress chooses the endpoint of a published address and converts it to host:port.
//
// A reliable service publishes {"Endpoints": {"<listener>": "<url>", ...}}. With listener set,
// the listener of that name is taken (an exact match first, then one that differs only in
// case, as Service Fabric's reverse proxy compares names) and must be an http or https URL.
// With listener empty, the first listener in ordinal name order whose URL is http or https is
// taken, which is what the reverse proxy does when a request names no ListenerName.
//
// A guest executable may publish a plain address instead: an http or https URL, or host:port.
// It is taken whatever listener says, since such a service has only the one.
//
// Anything else is an *AddressError.
func ParseAddress(published, listener string) (Address, error) {
	s := strings.TrimSpace(published)
	switch {
	case s == "":
		return Address{}, addressErrorf(published, "is empty")
	case len(s) > maxAddressLen:
		return Address{}, addressErrorf(published, "is longer than %d bytes", maxAddressLen)
	case s[0] == '{':
		return fromListeners(published, s, listener)
	case strings.Contains(s, "://"):
		return fromURL(published, "", s)
	}
	return fromHostPort(published, s)
}

func fromListeners(published, s, listener string) (Address, error) {
	var doc struct {
		Endpoints map[string]string `json:"Endpoints"`
	}
	if err := json.Unmarshal([]byte(s), &doc); err != nil {
		return Address{}, addressErrorf(published, "is not the JSON object {\"Endpoints\": {\"<listener>\": \"<url>\"}}: %v", err)
	}
	if len(doc.Endpoints) == 0 {
		return Address{}, addressErrorf(published, "has no listener under \"Endpoints\"")
	}
	names := make([]string, 0, len(doc.Endpoints))
	for name := range doc.Endpoints {
		names = append(names, name)
	}
	// Ordinal order, as the reverse proxy's map of listeners keeps them.
	sort.Strings(names)
	if listener != "" {
		chosen, found := "", false
		if _, ok := doc.Endpoints[listener]; ok {
			chosen, found = listener, true
		} else {
			for _, name := range names {
				if strings.EqualFold(name, listener) {
					chosen, found = name, true
					break
				}
			}
		}
		if !found {
			return Address{}, addressErrorf(published, "has no listener %s; it has %s", quote(listener), listenerList(names))
		}
		return fromURL(published, chosen, doc.Endpoints[chosen])
	}
	// An http listener that cannot be used (a bad port, say) is passed over like a non-http
	// one, but its reason is the one reported when no listener qualifies: it is the likelier
	// mistake.
	var first error
	for _, name := range names {
		if isHTTPURL(doc.Endpoints[name]) {
			a, err := fromURL(published, name, doc.Endpoints[name])
			if err == nil {
				return a, nil
			}
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		return Address{}, first
	}
	return Address{}, addressErrorf(published, "has no http or https URL among its listeners %s", listenerList(names))
}

func listenerList(names []string) string {
	const show = 8
	parts := make([]string, 0, show+1)
	for i, n := range names {
		if i == show {
			parts = append(parts, "...")
			break
		}
		parts = append(parts, quote(n))
	}
	return "[" + strings.Join(parts, " ") + "]"
}

func isHTTPURL(s string) bool {
	scheme, _, ok := strings.Cut(strings.TrimSpace(s), "://")
	return ok && (strings.EqualFold(scheme, "http") || strings.EqualFold(scheme, "https"))
}

func fromURL(published, listener, raw string) (Address, error) {
	raw = strings.TrimSpace(raw)
	where := ""
	if listener != "" {
		where = "listener " + quote(listener) + " "
	}
	u, err := url.Parse(raw)
	if err != nil {
		return Address{}, addressErrorf(published, "%shas %s, which is not a URL", where, quote(raw))
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return Address{}, addressErrorf(published, "%shas %s, which is not an http or https URL", where, quote(raw))
	}
	if u.Opaque != "" || u.Host == "" {
		return Address{}, addressErrorf(published, "%shas %s, which has no host", where, quote(raw))
	}
	if u.User != nil {
		return Address{}, addressErrorf(published, "%shas %s, which carries user information", where, quote(raw))
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "80"
		if scheme == "https" {
			port = "443"
		}
	}
	hp, reason := hostPort(host, port)
	if reason != "" {
		return Address{}, addressErrorf(published, "%shas %s, whose %s", where, quote(raw), reason)
	}
	return Address{Listener: listener, Scheme: scheme, HostPort: hp, Path: u.EscapedPath()}, nil
}

func fromHostPort(published, s string) (Address, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return Address{}, addressErrorf(published, "is neither the JSON object of listeners, an http or https URL, nor host:port")
	}
	hp, reason := hostPort(host, port)
	if reason != "" {
		return Address{}, addressErrorf(published, "is host:port, but its %s", reason)
	}
	return Address{HostPort: hp}, nil
}

// hostPort checks a host and a port and joins them, or says what is wrong with them.
func hostPort(host, port string) (string, string) {
	if host == "" {
		return "", "host is empty"
	}
	for i := 0; i < len(host); i++ {
		// Visible ASCII only: the address becomes an Envoy socket address and a header-safe
		// string. Percent signs (IPv6 zones, escapes) and brackets inside the host are refused.
		if c := host[i]; c <= ' ' || c >= 0x7f || strings.IndexByte("%[]\"'\\<>/?#@", c) >= 0 {
			return "", "host " + quote(host) + " has a character that cannot appear in a host name or IP address"
		}
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '0' {
		return "", "port " + quote(port) + " is not a number from 1 to 65535"
	}
	return net.JoinHostPort(host, port), ""
}
