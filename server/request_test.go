package server

import (
	"errors"
	"net/url"
	"testing"
)

// A URL that does not parse is refused with the parser's error kept, for a caller to tell it
// from the URLs that parse but are not requests partroute could be asked about.
func TestBuildRequestKeepsTheParseError(t *testing.T) {
	for _, tc := range []struct {
		url   string
		parse bool // the error is url.Parse's
	}{
		{url: "http://[::1/api", parse: true},
		{url: "http://host/%zz", parse: true},
		{url: "ftp://host/api", parse: false},
		{url: "api.example.com/api/users/12", parse: false},
	} {
		_, err := BuildRequest("GET", tc.url, nil, nil)
		if err == nil {
			t.Errorf("BuildRequest(%q) accepted the URL", tc.url)
			continue
		}
		var ue *url.Error
		if got := errors.As(err, &ue); got != tc.parse {
			t.Errorf("BuildRequest(%q): %v; errors.As *url.Error = %v, want %v", tc.url, err, got, tc.parse)
		}
	}
}
