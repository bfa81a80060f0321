package readyourwrites

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

// The keys of the golden tokens.
var (
	secret1 = []byte("0123456789abcdef0123456789abcdef")
	secret0 = []byte("fedcba9876543210fedcba9876543210")
	// expiry is the golden tokens' expiry, 1767323045678 in Unix milliseconds.
	expiry = time.Date(2026, 1, 2, 3, 4, 5, 678e6, time.UTC)
)

func testRing(t testing.TB, signing string) *Keyring {
	t.Helper()
	r, err := NewKeyring(signing, []Key{{ID: "k1", Secret: secret1}, {ID: "k0", Secret: secret0}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The golden tokens pin the format: a change to any of them is a change of the token format,
// which takes a new Version (tokens in clients' cookies outlive a deployment). The first was
// also computed apart from this package, with Python's hmac and base64 modules:
//
//	p = struct.pack('>Q', 1767323045678) + bytes([5]) + b'users' + b'users-1'
//	t = 'v1.k1.' + urlsafe_b64encode(p).rstrip(b'=').decode()
//	t + '.' + urlsafe_b64encode(hmac.new(secret1, t.encode(), sha256).digest()).rstrip(b'=').decode()
var golden = []struct {
	name, signing, service, partition, token string
}{
	{"users", "k1", "users", "users-1", "v1.k1.AAABm3ypjy4FdXNlcnN1c2Vycy0x.m4p4w8WwspdPFJ1YCxPezlCF3mAL8SvOmrwKy5JaaUs"},
	{"named", "k1", "regions", "eu", "v1.k1.AAABm3ypjy4HcmVnaW9uc2V1.fjCLKja_ktnPs-OyR5VpANGAyGxVN5JCtuSxRvquf7I"},
	{"other key", "k0", "users", "users-1", "v1.k0.AAABm3ypjy4FdXNlcnN1c2Vycy0x.-CXaa2Nzvo2jfuzeEmBu3Am25-xFuPoYXDAiRrkEPgY"},
	{"empty partition id", "k1", "s", "", "v1.k1.AAABm3ypjy4Bcw.xaacB6k-fZ2xe2Alr6gcFchjmIH-w5nn4ufmdk9ZfVE"},
}

func TestMintGolden(t *testing.T) {
	for _, g := range golden {
		t.Run(g.name, func(t *testing.T) {
			if got := testRing(t, g.signing).Mint(g.service, g.partition, expiry); got != g.token {
				t.Errorf("Mint = %s\nwant   %s", got, g.token)
			}
			// The MAC is HMAC-SHA256 of the text before the last dot, as crypto/hmac computes it.
			i := strings.LastIndexByte(g.token, '.')
			secret := secret1
			if g.signing == "k0" {
				secret = secret0
			}
			m := hmac.New(sha256.New, secret)
			m.Write([]byte(g.token[:i]))
			if want := base64.RawURLEncoding.EncodeToString(m.Sum(nil)); g.token[i+1:] != want {
				t.Errorf("MAC %s, want %s", g.token[i+1:], want)
			}
		})
	}
}

func TestVerify(t *testing.T) {
	ring := testRing(t, "k1")
	users := golden[0].token
	before := expiry.Add(-time.Millisecond)
	// A token of a key the ring does not hold, under an id it does hold: a forgery.
	other, err := NewKeyring("k1", []Key{{ID: "k1", Secret: []byte(strings.Repeat("x", 32))}})
	if err != nil {
		t.Fatal(err)
	}
	mac := users[strings.LastIndexByte(users, '.')+1:]
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	cases := []struct {
		name, token, service, partition string
		now                             time.Time
		want                            Outcome
	}{
		{"accepted", users, "users", "users-1", before, Accepted},
		{"accepted long before its expiry", users, "users", "users-1", expiry.Add(-time.Hour), Accepted},
		{"signed by the other key of the ring", golden[2].token, "users", "users-1", before, Accepted},
		{"named partition", golden[1].token, "regions", "eu", before, Accepted},
		{"empty partition id", golden[3].token, "s", "", before, Accepted},
		{"expired at its expiry", users, "users", "users-1", expiry, Expired},
		{"expired after", users, "users", "users-1", expiry.Add(time.Hour), Expired},
		{"another partition", users, "users", "users-2", before, Foreign},
		{"a partition whose id it begins", users, "users", "users-", before, Foreign},
		{"another service", users, "orders", "users-1", before, Foreign},
		{"the service and partition split elsewhere", users, "user", "susers-1", before, Foreign},
		{"a foreign token past its expiry is foreign", users, "orders", "users-1", expiry.Add(time.Hour), Foreign},
		{"payload altered", flip(users, 8), "users", "users-1", before, Forged},
		{"MAC altered", flip(users, len(users)-5), "users", "users-1", before, Forged},
		{"key id swapped for the ring's other", strings.Replace(users, "v1.k1.", "v1.k0.", 1), "users", "users-1", before, Forged},
		{"signed with another secret under the same id", other.Mint("users", "users-1", expiry), "users", "users-1", before, Forged},
		{"the MAC of another token", golden[1].token[:strings.LastIndexByte(golden[1].token, '.')+1] + mac, "regions", "eu", before, Forged},
		{"unknown key id", strings.Replace(users, "v1.k1.", "v1.k9.", 1), "users", "users-1", before, UnknownKey},
		{"empty", "", "users", "users-1", before, Malformed},
		{"another version", strings.Replace(users, "v1.", "v2.", 1), "users", "users-1", before, Malformed},
		{"no version", users[3:], "users", "users-1", before, Malformed},
		{"MAC cut short", users[:len(users)-1], "users", "users-1", before, Malformed},
		{"MAC too long", users + "A", "users", "users-1", before, Malformed},
		{"MAC not base64url", users[:len(users)-1] + "+", "users", "users-1", before, Malformed},
		// The last character of 43 holds 4 bits of the MAC and 2 bits of padding; only one
		// text decodes to each MAC.
		{"MAC with padding bits set", users[:len(users)-1] + "b", "users", "users-1", before, Malformed},
		{"padded MAC", users[:len(users)-1] + "=", "users", "users-1", before, Malformed},
		{"no payload", "v1.k1.." + mac, "users", "users-1", before, Malformed},
		{"no key id", "v1..AAABm3ypjy4FdXNlcnN1c2Vycy0x." + mac, "users", "users-1", before, Malformed},
		{"a dot in the key id ends it", "v1.k.1.AAABm3ypjy4FdXNlcnN1c2Vycy0x." + mac, "users", "users-1", before, UnknownKey},
		{"a dot in the payload", "v1.k1.AAABm3yp.jy4FdXNlcnN1c2Vycy0x." + mac, "users", "users-1", before, Forged},
		{"key id too long", "v1." + strings.Repeat("k", 33) + ".AAAB." + mac, "users", "users-1", before, Malformed},
		{"too long", "v1.k1." + strings.Repeat("A", MaxTokenLen) + "." + mac, "users", "users-1", before, Malformed},
		{"spaces around", " " + users + " ", "users", "users-1", before, Malformed},
		{"quoted", `"` + users + `"`, "users", "users-1", before, Malformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ring.Verify(c.token, c.service, c.partition, c.now); got != c.want {
				t.Errorf("Verify(%q, %s, %s) = %v, want %v", c.token, c.service, c.partition, got, c.want)
			}
		})
	}
}

// A token whose MAC verifies but whose payload is not one (only a holder of the key can make
// one) is malformed, never accepted, and never a panic.
func TestVerifySignedGarbage(t *testing.T) {
	ring := testRing(t, "k1")
	sign := func(payload []byte) string {
		text := "v1.k1." + base64.RawURLEncoding.EncodeToString(payload)
		m := hmac.New(sha256.New, secret1)
		m.Write([]byte(text))
		return text + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	}
	for _, c := range []struct {
		name    string
		payload []byte
	}{
		{"expiry only", []byte{0, 0, 1, 0x9b, 0x7c, 0xa9, 0x8f, 0x2e}},
		{"service length past the end", []byte{0, 0, 1, 0x9b, 0x7c, 0xa9, 0x8f, 0x2e, 9, 'u'}},
		{"unterminated uvarint", []byte{0, 0, 1, 0x9b, 0x7c, 0xa9, 0x8f, 0x2e, 0x80}},
		{"uvarint overflow", []byte{0, 0, 1, 0x9b, 0x7c, 0xa9, 0x8f, 0x2e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1}},
		{"huge service length", []byte{0, 0, 1, 0x9b, 0x7c, 0xa9, 0x8f, 0x2e, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := ring.Verify(sign(c.payload), "users", "users-1", expiry.Add(-time.Hour)); got != Malformed {
				t.Errorf("Verify = %v, want malformed", got)
			}
		})
	}
}

func TestMintRoundTrip(t *testing.T) {
	ring := testRing(t, "k0")
	at := time.UnixMilli(1767323045678)
	for _, c := range []struct{ service, partition string }{
		{"users", "users-0"},
		{"a", "1b4e28ba-2fa1-11d2-883f-0016d3cca427"},
		{"regions", "eu west; \"quoted\" ,=\n\x00"},
		{strings.Repeat("s", 200), strings.Repeat("p", 300)},
	} {
		tok := ring.Mint(c.service, c.partition, at)
		if tok == "" {
			t.Fatalf("Mint(%q, %q) gave no token", c.service, c.partition)
		}
		if strings.ContainsAny(tok, " ;,\"\\=") {
			t.Errorf("token %q holds a character a cookie value may not", tok)
		}
		if got := ring.Verify(tok, c.service, c.partition, at.Add(-time.Nanosecond)); got != Accepted {
			t.Errorf("Verify of a fresh token of %q = %v", c.partition, got)
		}
		cl, err := ring.Inspect(tok)
		if err != nil || cl.Service != c.service || cl.Partition != c.partition || !cl.Expiry.Equal(at) || cl.KeyID != "k0" {
			t.Errorf("Inspect = %+v, %v", cl, err)
		}
	}
	// Claims that do not fit in MaxTokenLen get no token, rather than one Verify refuses.
	if tok := ring.Mint("users", strings.Repeat("p", MaxTokenLen), at); tok != "" {
		t.Errorf("Mint of a partition id of %d bytes = a token of %d bytes", MaxTokenLen, len(tok))
	}
	// With the key id "k0", a payload of 974 characters, 730 bytes, is the longest: the
	// expiry, the service's length and name, and 720 bytes of partition id.
	fits := strings.Repeat("p", 720)
	longest := ring.Mint("s", fits, at)
	if len(longest) != MaxTokenLen || ring.Verify(longest, "s", fits, at.Add(-time.Millisecond)) != Accepted {
		t.Errorf("the longest claims that fit: a token of %d bytes", len(longest))
	}
	if tok := ring.Mint("s", fits+"p", at); tok != "" {
		t.Errorf("one byte more: a token of %d bytes", len(tok))
	}
}

func TestInspect(t *testing.T) {
	ring := testRing(t, "k1")
	c, err := ring.Inspect(golden[0].token)
	if err != nil || c != (Claims{Service: "users", Partition: "users-1", Expiry: time.UnixMilli(expiry.UnixMilli()), KeyID: "k1"}) {
		t.Errorf("Inspect = %+v, %v", c, err)
	}
	for _, c := range []struct{ token, want string }{
		{"nonsense", "not a v1 read-your-writes token"},
		{strings.Replace(golden[0].token, "k1", "k7", 1), "signed with a key id that is not in the keys file"},
		{strings.Replace(golden[0].token, "AAAB", "AAAC", 1), "its signature does not verify"},
	} {
		if _, err := ring.Inspect(c.token); err == nil || err.Error() != c.want {
			t.Errorf("Inspect(%q) = %v, want %q", c.token, err, c.want)
		}
	}
}

func TestNewKeyringErrors(t *testing.T) {
	good := Key{ID: "a", Secret: secret1}
	for _, c := range []struct {
		name    string
		signing string
		keys    []Key
		field   string
		message string
	}{
		{"no keys", "a", nil, "keys", "is empty"},
		{"too many keys", "a", make([]Key, MaxKeys+1), "keys", "has 17 keys, above the maximum of 16"},
		{"no signing key", "", []Key{good}, "signingKey", "is required"},
		{"signing key not listed", "b", []Key{good}, "signingKey", `"b" is not the id of any of the keys`},
		{"short secret", "a", []Key{good, {ID: "b", Secret: secret1[:31]}}, "keys[1].secret", "is 31 bytes, below the minimum of 32"},
		{"empty secret", "a", []Key{{ID: "a"}}, "keys[0].secret", "is 0 bytes"},
		{"empty id", "a", []Key{{Secret: secret1}}, "keys[0].id", `"" is not 1 to 32 letters`},
		{"id with a dot", "a", []Key{{ID: "a.b", Secret: secret1}}, "keys[0].id", `"a.b" is not`},
		{"id too long", "a", []Key{{ID: strings.Repeat("a", 33), Secret: secret1}}, "keys[0].id", "is not 1 to 32"},
		{"duplicate id", "a", []Key{good, {ID: "a", Secret: secret0}}, "keys[1].id", `"a" is already the id of keys[0]`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewKeyring(c.signing, c.keys)
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != c.field || !strings.Contains(fe.Message, c.message) {
				t.Errorf("NewKeyring = %v, want %s: ...%s...", err, c.field, c.message)
			}
		})
	}
	r, err := NewKeyring("b", []Key{good, {ID: "b", Secret: secret0}})
	if err != nil || r.SigningKey() != "b" || strings.Join(r.KeyIDs(), ",") != "a,b" {
		t.Errorf("NewKeyring = %v, %v", r, err)
	}
}

// A keyring keeps its own copy of each secret: a caller that reuses its buffer changes nothing.
func TestKeyringCopiesSecrets(t *testing.T) {
	s := append([]byte(nil), secret1...)
	r, err := NewKeyring("k1", []Key{{ID: "k1", Secret: s}})
	if err != nil {
		t.Fatal(err)
	}
	copy(s, strings.Repeat("z", len(s)))
	if got := r.Mint("users", "users-1", expiry); got != golden[0].token {
		t.Errorf("Mint after the caller's buffer changed = %s", got)
	}
}

func TestVerifyDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	ring := testRing(t, "k1")
	now := expiry.Add(-time.Second)
	for _, c := range []struct {
		token string
		want  Outcome
	}{
		{golden[0].token, Accepted},
		{golden[0].token[:len(golden[0].token)-2] + "AA", Forged},
		{"v1.k9.x." + strings.Repeat("A", macText), UnknownKey},
	} {
		ring.Verify(c.token, "users", "users-1", now)
		if n := testing.AllocsPerRun(100, func() {
			if ring.Verify(c.token, "users", "users-1", now) != c.want {
				t.Fatal("unexpected outcome")
			}
		}); n != 0 {
			t.Errorf("Verify (%v) allocates %v times", c.want, n)
		}
	}
}

func TestSetCookie(t *testing.T) {
	for _, c := range []struct {
		maxAge time.Duration
		secure bool
		want   string
	}{
		{2 * time.Second, false, "ryw=TOKEN; Path=/; Max-Age=2; HttpOnly; SameSite=Lax"},
		{300 * time.Millisecond, false, "ryw=TOKEN; Path=/; Max-Age=1; HttpOnly; SameSite=Lax"},
		{2500 * time.Millisecond, true, "ryw=TOKEN; Path=/; Max-Age=3; HttpOnly; SameSite=Lax; Secure"},
		{0, false, "ryw=TOKEN; Path=/; Max-Age=1; HttpOnly; SameSite=Lax"},
	} {
		if got := string(SetCookie(nil, "ryw", "TOKEN", c.maxAge, c.secure)); got != c.want {
			t.Errorf("SetCookie(%v, %v) = %q, want %q", c.maxAge, c.secure, got, c.want)
		}
	}
}

func TestOutcomeNames(t *testing.T) {
	want := "minted accepted expired foreign forged unknown_key malformed"
	var names []string
	for _, o := range Outcomes() {
		names = append(names, o.String())
	}
	if got := strings.Join(names, " "); got != want {
		t.Errorf("outcomes %q, want %q", got, want)
	}
	if None.String() != "none" || NumOutcomes.String() != "unknown" {
		t.Errorf("None = %q, NumOutcomes = %q", None, NumOutcomes)
	}
}

func BenchmarkMint(b *testing.B) {
	ring := testRing(b, "k1")
	b.ReportAllocs()
	for b.Loop() {
		ring.Mint("users", "users-1", expiry)
	}
}

func BenchmarkVerify(b *testing.B) {
	ring := testRing(b, "k1")
	now := expiry.Add(-time.Second)
	b.ReportAllocs()
	for b.Loop() {
		ring.Verify(golden[0].token, "users", "users-1", now)
	}
}
