package keying

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// SourceKind names where a key source reads the key.
type SourceKind uint8

// The key sources.
const (
	SourcePath SourceKind = iota + 1
	SourceHeader
	SourceQuery
	SourceCookie
	SourceJSONBody
)

// String returns the source kind's configuration name.
func (k SourceKind) String() string {
	switch k {
	case SourcePath:
		return "path"
	case SourceHeader:
		return "header"
	case SourceQuery:
		return "query"
	case SourceCookie:
		return "cookie"
	case SourceJSONBody:
		return "jsonBody"
	}
	return "unknown"
}

// Source is one place a key may come from.
type Source struct {
	Kind SourceKind
	// Name is the header, query parameter or cookie name, the path template or the JSON
	// pointer, as configured.
	Name     string
	template *PathTemplate
	pointer  []string
}

// NewSource builds a source of the given kind from its configured argument.
func NewSource(kind SourceKind, arg string) (Source, error) {
	s := Source{Kind: kind, Name: arg}
	if arg == "" {
		return s, fmt.Errorf("%s source needs a value", kind)
	}
	switch kind {
	case SourcePath:
		t, err := ParsePathTemplate(arg)
		if err != nil {
			return s, err
		}
		s.template = t
	case SourceHeader:
		s.Name = strings.ToLower(arg)
		if !isToken(s.Name) || s.Name[0] == ':' {
			return s, fmt.Errorf("header %q is not a valid header name", arg)
		}
	case SourceQuery, SourceCookie:
		if strings.ContainsAny(arg, "&=;# ") {
			return s, fmt.Errorf("%s name %q holds a separator character", kind, arg)
		}
	case SourceJSONBody:
		p, err := parseJSONPointer(arg)
		if err != nil {
			return s, err
		}
		s.pointer = p
	default:
		return s, fmt.Errorf("unknown key source kind %d", kind)
	}
	return s, nil
}

// String describes the source for messages, for example `header "x-user-id"`.
func (s Source) String() string { return s.Kind.String() + " " + strconv.Quote(s.Name) }

// isToken reports whether s is an HTTP header field name (RFC 9110 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		case c == ':' && i == 0:
		default:
			return false
		}
	}
	return true
}

// lookup reads the source's value from the request. found is false when the source does not
// apply (no such header, path does not match). A value that is present but unusable, such as
// broken percent-encoding, is reported with a reason.
func (s *Source) lookup(req *Request) (value string, found bool, invalid string) {
	switch s.Kind {
	case SourcePath:
		raw, ok := s.template.Match(req.Path)
		if !ok {
			return "", false, ""
		}
		if strings.IndexByte(raw, '%') < 0 {
			return raw, true, ""
		}
		v, err := url.PathUnescape(raw)
		if err != nil {
			return "", true, "path segment {" + s.template.name + "} has invalid percent-encoding"
		}
		return nonEmpty(v)
	case SourceHeader:
		v, ok := Get(req.Headers, s.Name)
		if !ok || v == "" {
			return "", false, ""
		}
		return v, true, ""
	case SourceQuery:
		return queryParam(Query(req.Path), s.Name)
	case SourceCookie:
		return cookieValue(req.Headers, s.Name)
	case SourceJSONBody:
		return jsonPointerValue(req.Body, s.pointer)
	}
	return "", false, ""
}

func nonEmpty(v string) (string, bool, string) {
	if v == "" {
		return "", false, ""
	}
	return v, true, ""
}

// queryParam returns the first value of the named parameter in a raw query string.
func queryParam(query, name string) (string, bool, string) {
	for query != "" {
		var pair string
		if i := strings.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			pair, query = query, ""
		}
		k, v, _ := strings.Cut(pair, "=")
		if k != name {
			continue
		}
		if strings.IndexByte(v, '%') < 0 && strings.IndexByte(v, '+') < 0 {
			return nonEmpty(v)
		}
		d, err := url.QueryUnescape(v)
		if err != nil {
			return "", true, "query parameter " + strconv.Quote(name) + " has invalid percent-encoding"
		}
		return nonEmpty(d)
	}
	return "", false, ""
}

// Cookie returns the value of the named cookie from the request's "cookie" headers, unquoted;
// an empty value is none.
func Cookie(h Headers, name string) (string, bool) {
	v, ok, _ := cookieValue(h, name)
	return v, ok
}

// cookieValue returns the named cookie from every "cookie" header; HTTP/2 clients may split
// cookies over several headers.
func cookieValue(h Headers, name string) (string, bool, string) {
	if h == nil {
		return "", false, ""
	}
	for i, n := 0, h.Len(); i < n; i++ {
		k, line := h.At(i)
		if k != "cookie" {
			continue
		}
		for line != "" {
			var pair string
			if j := strings.IndexByte(line, ';'); j >= 0 {
				pair, line = line[:j], line[j+1:]
			} else {
				pair, line = line, ""
			}
			k, v, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || k != name {
				continue
			}
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return nonEmpty(v)
		}
	}
	return "", false, ""
}

// parseJSONPointer splits an RFC 6901 JSON pointer into its unescaped reference tokens.
func parseJSONPointer(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("JSON pointer %q must start with /", p)
	}
	tokens := strings.Split(p[1:], "/")
	for i, t := range tokens {
		for j := 0; j < len(t); j++ {
			if t[j] == '~' && (j+1 >= len(t) || (t[j+1] != '0' && t[j+1] != '1')) {
				return nil, fmt.Errorf("JSON pointer %q has a ~ that is not ~0 or ~1", p)
			}
		}
		tokens[i] = strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~")
	}
	return tokens, nil
}

// jsonPointerValue reads a string or number at pointer in a JSON body. Numbers keep their
// exact text, so a 64-bit key survives without passing through float64.
func jsonPointerValue(body []byte, pointer []string) (string, bool, string) {
	if len(bytes.TrimSpace(body)) == 0 {
		return "", false, ""
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var doc any
	if err := dec.Decode(&doc); err != nil {
		return "", true, "request body is not valid JSON"
	}
	if dec.More() {
		return "", true, "request body holds more than one JSON value"
	}
	cur := doc
	for _, tok := range pointer {
		switch node := cur.(type) {
		case map[string]any:
			v, ok := node[tok]
			if !ok {
				return "", false, ""
			}
			cur = v
		case []any:
			// RFC 6901 array indexes are digits without a sign or a leading zero: "-0" and
			// "01" name no element.
			i, ok := ParseInt64(tok)
			if !ok || tok[0] == '-' || i >= int64(len(node)) || (len(tok) > 1 && tok[0] == '0') {
				return "", false, ""
			}
			cur = node[i]
		default:
			return "", false, ""
		}
	}
	switch v := cur.(type) {
	case string:
		return nonEmpty(v)
	case json.Number:
		return v.String(), true, ""
	case nil:
		return "", false, ""
	default:
		return "", true, "JSON body field is not a string or a number"
	}
}
