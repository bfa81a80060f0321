// Package certreload serves a listener's TLS from files that rotate: its certificate, key and
// client CA are read at start, followed with filewatch at the server's poll interval, and
// swapped in for new handshakes when they change, while established connections keep the
// session they have. New content that does not load (a broken file, a key that does not
// match its certificate) keeps the previous certificate; it is logged and counted once per
// content. The package also counts failed handshakes by a bounded reason, for gRPC servers
// (TransportCredentials) and for plain listeners such as the admin one, and never logs them
// one by one: a scanner or a misconfigured client would fill the log.
package certreload
