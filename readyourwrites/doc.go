// Package readyourwrites mints and verifies read-your-writes tokens: a token tells any
// partroute instance that holds the same keys that its client wrote to a partition of a
// service until an expiry, so that the client's reads of that partition go to the primary
// until then, with no state shared between the instances.
//
// A token is
//
//	v1.<key id>.<payload>.<mac>
//
// where payload is the unpadded base64url encoding of the expiry (Unix milliseconds, 8 bytes
// big-endian), the length of the service name (a uvarint), the service name and the partition
// id; and mac is the unpadded base64url encoding of HMAC-SHA256, under the key named by the key
// id, of everything before the last dot ("v1.<key id>.<payload>"), so that the version, the key
// id and the claims are all signed. Every part is made of cookie-safe characters. Tokens are
// compared with one encoding only (strict base64), so that an accepted token has exactly the
// text it was minted with.
//
// A Keyring holds the keys tokens verify with, one of them the signing key: tokens signed by
// any key of the ring verify, so that keys rotate (docs/replicas.md).
//
// Everything here is a pure function of its inputs, the time included: callers pass the clock.
// Verify never panics, allocates nothing, and bounds its work by MaxTokenLen, because its input
// comes from clients.
package readyourwrites
