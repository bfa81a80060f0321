package readyourwrites

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Version is the prefix of every token this package mints, and the only one it verifies. A
// future format takes another prefix, so that instances of two releases can tell their tokens
// apart during an upgrade.
const Version = "v1"

// MaxTokenLen is the longest token Verify reads; a longer one is Malformed before any work is
// done on it. It leaves room for a partition id of several hundred bytes. Mint gives no token
// for claims that would not fit.
const MaxTokenLen = 1024

const (
	prefix = Version + "."
	// macText is the length of the MAC's encoding.
	macText = 43 // base64.RawURLEncoding.EncodedLen(sha256.Size)
	// maxPayload is the most a payload within MaxTokenLen decodes to.
	maxPayload = (MaxTokenLen - len(prefix) - 1 - 2 - macText) * 3 / 4
	// expiryLen is the payload's expiry, Unix milliseconds in 8 bytes.
	expiryLen = 8
)

// b64 is the one encoding of every part: unpadded, URL- and cookie-safe, and strict, so that
// no two texts decode to the same bytes.
var b64 = base64.RawURLEncoding.Strict()

// Outcome is what became of a token: minted for a write, or the result of verifying one a
// read carried.
type Outcome uint8

// The outcomes. Every one but Accepted leaves the read to the service's read policy.
const (
	// None is no token: the request carried none, or needed none.
	None Outcome = iota
	// Minted is a token minted for a write.
	Minted
	// Accepted is a token that verified, for the read's service and partition, unexpired.
	Accepted
	// Expired is a token that verified but whose expiry has passed.
	Expired
	// Foreign is a token that verified but names another service or partition.
	Foreign
	// Forged is a token of a known key whose MAC does not verify: altered, or signed with
	// another secret under the same key id.
	Forged
	// UnknownKey is a token whose key id is none of the ring's: signed by a key that has
	// been retired, or by another deployment.
	UnknownKey
	// Malformed is anything that is not a token of this format.
	Malformed
	// NumOutcomes is the number of outcomes, None included.
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{"none", "minted", "accepted", "expired", "foreign", "forged", "unknown_key", "malformed"}

// String returns the outcome's name, the outcome label of the metric that counts tokens.
func (o Outcome) String() string {
	if o < NumOutcomes {
		return outcomeNames[o]
	}
	return "unknown"
}

// Outcomes returns every outcome but None.
func Outcomes() []Outcome {
	out := make([]Outcome, 0, NumOutcomes-1)
	for o := Minted; o < NumOutcomes; o++ {
		out = append(out, o)
	}
	return out
}

// Claims are what a token says: a client wrote to a partition of a service, and its reads
// there should go to the primary until the expiry.
type Claims struct {
	Service, Partition string
	// Expiry is kept to the millisecond.
	Expiry time.Time
	// KeyID is the id of the key that signed the token.
	KeyID string
}

// Mint returns a token of the claims (their KeyID is ignored), signed with the ring's signing
// key, or "" when the service and partition are too long for a token of MaxTokenLen.
func (r *Keyring) Mint(service, partition string, expiry time.Time) string {
	k := r.signing
	n := expiryLen + uvarintLen(len(service)) + len(service) + len(partition)
	if len(prefix)+len(k.id)+1+b64.EncodedLen(n)+1+macText > MaxTokenLen {
		return ""
	}
	// Within MaxTokenLen, every part fits the state's buffers: nothing grows them.
	st := k.get()
	defer k.put(st)
	payload := st.payload[:0]
	payload = binary.BigEndian.AppendUint64(payload, uint64(expiry.UnixMilli()))
	payload = binary.AppendUvarint(payload, uint64(len(service)))
	payload = append(payload, service...)
	payload = append(payload, partition...)
	text := st.text[:0]
	text = append(text, prefix...)
	text = append(text, k.id...)
	text = append(text, '.')
	text = b64.AppendEncode(text, payload)
	sum := st.sign(text)
	text = append(text, '.')
	text = b64.AppendEncode(text, sum)
	return string(text)
}

// uvarintLen is the length of n as a uvarint.
func uvarintLen(n int) int {
	l := 1
	for ; n >= 0x80; n >>= 7 {
		l++
	}
	return l
}

// Verify tells what token is worth for a read of partition of service at now: Accepted when
// it verifies with one of the ring's keys, names that service and partition, and has not
// expired. It never panics and allocates nothing.
func (r *Keyring) Verify(token, service, partition string, now time.Time) Outcome {
	st, k, outcome := r.check(token)
	if st == nil {
		return outcome
	}
	defer k.put(st)
	c, ok := st.claims()
	switch {
	case !ok:
		return Malformed
	case string(c.service) != service || string(c.partition) != partition:
		return Foreign
	case now.UnixMilli() >= c.expiry:
		return Expired
	}
	return Accepted
}

// check verifies a token's form and MAC. It returns the MAC state holding the token, to be
// put back into the key's pool, when the MAC verifies, and otherwise the outcome.
func (r *Keyring) check(token string) (*macState, *key, Outcome) {
	if len(token) > MaxTokenLen || len(token) < len(prefix)+macText+4 || !strings.HasPrefix(token, prefix) {
		return nil, nil, Malformed
	}
	dot := len(token) - macText - 1
	if token[dot] != '.' {
		return nil, nil, Malformed
	}
	// "<key id>.<payload>" lies between the prefix and the MAC's dot.
	id, payload, ok := strings.Cut(token[len(prefix):dot], ".")
	if !ok || !validKeyID(id) || payload == "" {
		return nil, nil, Malformed
	}
	k := r.find(id)
	if k == nil {
		return nil, nil, UnknownKey
	}
	st := k.get()
	st.text = append(st.text[:0], token...)
	if n, err := b64.Decode(st.want[:], st.text[dot+1:]); err != nil || n != sha256.Size {
		k.put(st)
		return nil, nil, Malformed
	}
	if !hmac.Equal(st.sign(st.text[:dot]), st.want[:]) {
		k.put(st)
		return nil, nil, Forged
	}
	return st, k, None
}

// rawClaims are the claims of the token in a MAC state, pointing into its buffers.
type rawClaims struct {
	expiry             int64
	service, partition []byte
}

// claims decodes the payload of the token in st.text, which check has verified.
func (st *macState) claims() (rawClaims, bool) {
	dot := len(st.text) - macText - 1
	text := st.text[len(prefix):dot]
	i := 0
	for text[i] != '.' {
		i++
	}
	n, err := b64.Decode(st.payload[:], text[i+1:])
	if err != nil || n < expiryLen+1 {
		return rawClaims{}, false
	}
	p := st.payload[:n]
	c := rawClaims{expiry: int64(binary.BigEndian.Uint64(p))} //nolint:gosec // read back as it was written
	l, m := binary.Uvarint(p[expiryLen:])
	if m <= 0 {
		return rawClaims{}, false
	}
	p = p[expiryLen+m:]
	if l > uint64(len(p)) {
		return rawClaims{}, false
	}
	c.service, c.partition = p[:l], p[l:]
	return c, true
}

// Errors of Inspect.
var (
	errMalformed  = errors.New("not a " + Version + " read-your-writes token")
	errUnknownKey = errors.New("signed with a key id that is not in the keys file")
	errForged     = errors.New("its signature does not verify")
)

// Inspect returns the claims of a token that verifies with one of the ring's keys, whatever
// its service, partition and expiry: for tests and for an operator looking at one.
func (r *Keyring) Inspect(token string) (Claims, error) {
	st, k, outcome := r.check(token)
	switch outcome {
	case UnknownKey:
		return Claims{}, errUnknownKey
	case Forged:
		return Claims{}, errForged
	}
	if st == nil {
		return Claims{}, errMalformed
	}
	defer k.put(st)
	c, ok := st.claims()
	if !ok {
		return Claims{}, errMalformed
	}
	return Claims{Service: string(c.service), Partition: string(c.partition), Expiry: time.UnixMilli(c.expiry), KeyID: k.id}, nil
}

// SetCookie appends the value of a Set-Cookie header that gives the client token in the cookie
// name for maxAge, rounded up to whole seconds (Max-Age counts seconds), at least 1. The
// cookie is for every path, out of reach of scripts (HttpOnly), sent along with navigations
// from other sites but not their subrequests (SameSite=Lax), and Secure when secure is set.
// The token's own expiry is what bounds it: a cookie outliving it carries an Expired token.
func SetCookie(dst []byte, name, token string, maxAge time.Duration, secure bool) []byte {
	seconds := max(int64((maxAge+time.Second-1)/time.Second), 1)
	dst = append(dst, name...)
	dst = append(dst, '=')
	dst = append(dst, token...)
	dst = append(dst, "; Path=/; Max-Age="...)
	dst = strconv.AppendInt(dst, seconds, 10)
	dst = append(dst, "; HttpOnly; SameSite=Lax"...)
	if secure {
		dst = append(dst, "; Secure"...)
	}
	return dst
}
