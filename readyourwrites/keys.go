package readyourwrites

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"strconv"
	"sync"
)

// Limits of a keyring.
const (
	// MinSecretBytes is the shortest secret a key may have: HMAC-SHA256 is as strong as its
	// key up to the hash's 32 bytes, and a shorter secret is within reach of a brute force
	// over the tokens a client sees.
	MinSecretBytes = 32
	// MaxKeys bounds the keys of a ring: a rotation needs two or three at once.
	MaxKeys = 16
	// MaxKeyIDLen bounds a key id, which every token carries.
	MaxKeyIDLen = 32
)

// Key is one secret and the id that tokens signed with it carry.
type Key struct {
	// ID is 1 to MaxKeyIDLen letters, digits, '-' and '_'.
	ID string
	// Secret is at least MinSecretBytes bytes.
	Secret []byte
}

// FieldError is a problem with one field of the keys given to NewKeyring, named as the keys
// file names it: "signingKey", "keys[1].id", "keys[1].secret".
type FieldError struct {
	Field, Message string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Message }

// Keyring holds the keys tokens are verified with and the one new tokens are signed with. It
// is immutable and safe for concurrent use.
type Keyring struct {
	keys    []*key
	signing *key
}

// key is one key of a ring, with a pool of MAC states keyed with its secret: computing a MAC
// then allocates nothing.
type key struct {
	id   string
	pool sync.Pool
}

// macState is what one MAC computation needs: the keyed HMAC, and room for the token's text,
// its decoded MAC and its decoded payload.
type macState struct {
	mac     hash.Hash
	text    []byte
	sum     [sha256.Size]byte
	want    [sha256.Size]byte
	payload [maxPayload]byte
}

// NewKeyring returns the ring of keys, signing new tokens with the key whose id is signing.
// Its errors are *FieldError.
func NewKeyring(signing string, keys []Key) (*Keyring, error) {
	if len(keys) == 0 {
		return nil, &FieldError{"keys", "is empty: a keys file lists at least the signing key"}
	}
	if len(keys) > MaxKeys {
		return nil, &FieldError{"keys", "has " + strconv.Itoa(len(keys)) + " keys, above the maximum of " + strconv.Itoa(MaxKeys) + ": a rotation needs two or three"}
	}
	r := &Keyring{}
	seen := map[string]int{}
	for i, k := range keys {
		p := "keys[" + strconv.Itoa(i) + "]"
		if !validKeyID(k.ID) {
			return nil, &FieldError{p + ".id", strconv.Quote(k.ID) + " is not 1 to " + strconv.Itoa(MaxKeyIDLen) + " letters, digits, '-' and '_'"}
		}
		if j, dup := seen[k.ID]; dup {
			return nil, &FieldError{p + ".id", strconv.Quote(k.ID) + " is already the id of keys[" + strconv.Itoa(j) + "]"}
		}
		seen[k.ID] = i
		if len(k.Secret) < MinSecretBytes {
			return nil, &FieldError{p + ".secret", "is " + strconv.Itoa(len(k.Secret)) + " bytes, below the minimum of " + strconv.Itoa(MinSecretBytes) + " (openssl rand -base64 32 makes one)"}
		}
		r.keys = append(r.keys, newKey(k))
	}
	switch i, ok := seen[signing]; {
	case signing == "":
		return nil, &FieldError{"signingKey", "is required: the id of the key that signs new tokens"}
	case !ok:
		return nil, &FieldError{"signingKey", strconv.Quote(signing) + " is not the id of any of the keys"}
	default:
		r.signing = r.keys[i]
	}
	return r, nil
}

func newKey(k Key) *key {
	secret := append([]byte(nil), k.Secret...)
	out := &key{id: k.ID}
	out.pool.New = func() any {
		return &macState{mac: hmac.New(sha256.New, secret), text: make([]byte, 0, MaxTokenLen)}
	}
	return out
}

// SigningKey returns the id of the key that signs new tokens.
func (r *Keyring) SigningKey() string { return r.signing.id }

// KeyIDs returns the ids of the ring's keys, in the order they were given.
func (r *Keyring) KeyIDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.id
	}
	return ids
}

// find returns the key of the given id, or nil. A ring holds a few keys: a scan beats a map.
func (r *Keyring) find(id string) *key {
	for _, k := range r.keys {
		if k.id == id {
			return k
		}
	}
	return nil
}

func (k *key) get() *macState  { return k.pool.Get().(*macState) }
func (k *key) put(s *macState) { k.pool.Put(s) }

// sign writes the MAC of text into s.sum.
func (s *macState) sign(text []byte) []byte {
	s.mac.Reset()
	s.mac.Write(text)
	return s.mac.Sum(s.sum[:0])
}

func validKeyID(id string) bool {
	if id == "" || len(id) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
