package envoyconfig

import (
	"fmt"
	"regexp"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/partroute/partroute/config"
)

// routeMatch translates a service's match into an Envoy route match that accepts exactly the
// requests config.Config.Match gives to that service, so that Envoy picks the service's cluster
// for every request partroute routes to one of its partitions.
func routeMatch(m config.Match) (*routev3.RouteMatch, error) {
	rm := &routev3.RouteMatch{}
	switch pp := m.PathPrefix; {
	case pp == "":
		// Every request path starts with "/"; only the asterisk form of OPTIONS does not, and
		// that never addresses a partition.
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	case strings.HasSuffix(pp, "/"):
		// partroute matches a prefix that ends in "/" as plain text, and Envoy's
		// path_separated_prefix refuses one that ends in "/".
		rm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: pp}
	default:
		// path_separated_prefix matches the prefix itself or the prefix followed by "/", ignoring
		// the query string: the same whole-segment rule as partroute's.
		rm.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: pp}
	}
	if m.Authority != "" {
		re, err := authorityRegex(m.Authority)
		if err != nil {
			return nil, err
		}
		rm.Headers = []*routev3.HeaderMatcher{{
			Name: ":authority",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}},
			}},
		}}
	}
	return rm, nil
}

// authorityRegex returns the RE2 expression that Envoy matches against the whole :authority
// header for a service's authority, an exact host or "*.suffix".
//
// partroute compares the host part of the authority, case-insensitively, where the host part is
// everything before the last ":" (the port, whatever it holds, is ignored). The expression
// mirrors that for every authority with at most one ":", that is every host or host:port that
// a configured authority can match: a configured authority holds no ":", so it can never match
// an IPv6 literal. Authorities with several colons or stray brackets are malformed, and the two
// sides may disagree about them; either way such a request reaches no partition, because a
// cluster's subsets hold only its own service's partition ids.
//
// The host is written once, not repeated across alternatives, because Envoy refuses regexes
// whose compiled RE2 program exceeds a size limit (100 by default).
func authorityRegex(authority string) (string, error) {
	if strings.ContainsAny(authority, "[]:") {
		return "", fmt.Errorf("authority %q is not a host name: the Envoy route cannot match it the way partroute does", authority)
	}
	if suffix, ok := strings.CutPrefix(authority, "*"); ok {
		// One or more characters other than ":" before ".suffix": any non-empty label(s).
		return "(?i)[^:]+" + regexp.QuoteMeta(suffix) + "(?::[^:]*)?", nil
	}
	return "(?i)" + regexp.QuoteMeta(authority) + "(?::[^:]*)?", nil
}
