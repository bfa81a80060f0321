package contract

import (
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
)

// TestValues pins the contract with Envoy as Envoy spells it: a change here breaks every
// deployed bootstrap, and must be deliberate.
func TestValues(t *testing.T) {
	if LBNamespace != "envoy.lb" {
		t.Errorf("LBNamespace = %q, want envoy.lb: Envoy's router merges only that namespace into subset criteria", LBNamespace)
	}
	if got := ExtProcService(); got != "envoy.service.ext_proc.v3.ExternalProcessor" {
		t.Errorf("ExtProcService() = %q", got)
	}
	if DefaultMessageTimeout.Milliseconds() != 200 {
		t.Errorf("DefaultMessageTimeout = %v, want Envoy's default of 200ms", DefaultMessageTimeout)
	}
	sels := SubsetSelectors()
	if len(sels) != 2 || len(sels[0]) != 2 || sels[0][0] != "partition" || sels[0][1] != "role" || len(sels[1]) != 1 || sels[1][0] != "partition" {
		t.Errorf("SubsetSelectors() = %v, want [[partition role] [partition]]", sels)
	}
}

func TestLBFields(t *testing.T) {
	for _, c := range []struct{ partition, role, want string }{
		{"users-1", "primary", `{"partition":"users-1","role":"primary"}`},
		{"users-1", "secondary", `{"partition":"users-1","role":"secondary"}`},
		// "any" names no role, so that the [partition] selector matches.
		{"regions/eu", "", `{"partition":"regions/eu"}`},
	} {
		b, err := protojson.MarshalOptions{}.Marshal(LBFields(c.partition, c.role))
		if err != nil {
			t.Fatal(err)
		}
		// protojson may add spaces; compare without them.
		got := string(b)
		got = stripSpaces(got)
		if got != c.want {
			t.Errorf("LBFields(%q, %q) = %s, want %s", c.partition, c.role, got, c.want)
		}
	}
}

func stripSpaces(s string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' {
			out = append(out, s[i])
		}
	}
	return string(out)
}

func TestMaxMessageTimeout(t *testing.T) {
	for _, c := range []struct {
		wait, messageTimeout, want time.Duration
	}{
		{0, 200 * time.Millisecond, 0},
		{time.Second, 200 * time.Millisecond, time.Second + FailoverAnswerMargin},
		// An override below the filter's own message timeout is still allowed.
		{50 * time.Millisecond, 2 * time.Second, 2 * time.Second},
	} {
		if got := MaxMessageTimeout(c.wait, c.messageTimeout); got != c.want {
			t.Errorf("MaxMessageTimeout(%v, %v) = %v, want %v", c.wait, c.messageTimeout, got, c.want)
		}
		if c.wait > 0 && HeldMessageTimeout(c.wait) > MaxMessageTimeout(c.wait, c.messageTimeout) {
			t.Errorf("the override for a wait of %v is above the filter's bound: Envoy would ignore it", c.wait)
		}
	}
}

// TestRYWValues pins the read-your-writes metadata as deployed routes spell it: a route built
// by an older generator reads these names.
func TestRYWValues(t *testing.T) {
	if RYWNamespace == LBNamespace {
		t.Fatal("RYWNamespace is envoy.lb: every key there becomes a subset match criterion")
	}
	for _, c := range []struct{ key, want string }{
		{RYWKeyCookie, "%DYNAMIC_METADATA(partroute.ryw:cookie)%"},
		{RYWKeyToken, "%DYNAMIC_METADATA(partroute.ryw:token)%"},
	} {
		if got := RYWHeaderValue(c.key); got != c.want {
			t.Errorf("RYWHeaderValue(%q) = %q, want %q", c.key, got, c.want)
		}
	}
}
