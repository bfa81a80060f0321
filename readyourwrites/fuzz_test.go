package readyourwrites

import (
	"strings"
	"testing"
	"time"
)

// FuzzVerify feeds Verify and Inspect what a client may send in the cookie or header: neither
// may panic, and a token accepted is exactly the text its claims mint, so that nothing but a
// holder of the key can make one.
func FuzzVerify(f *testing.F) {
	for _, g := range golden {
		f.Add(g.token)
		f.Add(g.token[:len(g.token)/2])
		f.Add(strings.Replace(g.token, ".", "..", 1))
	}
	f.Add("")
	f.Add("v1.")
	f.Add("v1.k1..")
	f.Add("v1.k1.AAAB." + strings.Repeat("A", macText))
	ring := testRing(f, "k1")
	now := expiry.Add(-time.Hour)
	f.Fuzz(func(t *testing.T, token string) {
		outcome := ring.Verify(token, "users", "users-1", now)
		c, err := ring.Inspect(token)
		if outcome == Accepted || outcome == Expired || outcome == Foreign {
			if err != nil {
				t.Fatalf("Verify = %v but Inspect fails: %v", outcome, err)
			}
			signer := testRing(t, c.KeyID)
			if again := signer.Mint(c.Service, c.Partition, c.Expiry); again != token {
				t.Fatalf("token %q verifies (%v) but its claims mint %q", token, outcome, again)
			}
		} else if err == nil {
			t.Fatalf("Verify = %v but Inspect accepts it: %+v", outcome, c)
		}
	})
}
