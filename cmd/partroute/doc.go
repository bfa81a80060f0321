// Command partroute is the partroute binary: it validates configurations, answers "where would
// this request go?" without Envoy, and serves Envoy's ext_proc calls.
//
//	partroute validate -config FILE [-naming FILE]
//	partroute resolve -config FILE [-naming FILE] [-H 'name: value']... [-d BODY] METHOD URL
//	partroute serve -config FILE [flags]
//	partroute envoy-bootstrap -config FILE [-naming FILE] [flags]
//	partroute demo [-config FILE] [-once]
//	partroute version
package main
