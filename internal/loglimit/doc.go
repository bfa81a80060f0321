// Package loglimit bounds what a client can make partroute log. A line that a client can
// cause (a message it sent, an error it reported) is written at most once per interval, with
// the count of those held back since the last one written, and the client's text in it is cut
// to a bounded length. The ext_proc handler and the xDS server log through it every line a
// peer can repeat at will.
package loglimit
