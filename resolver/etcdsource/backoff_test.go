package etcdsource

import (
	"testing"
	"time"
)

// TestBackoffIsBounded checks that the wait between attempts doubles from BackoffMin, never
// exceeds BackoffMax, and never drops below four fifths of its nominal value.
func TestBackoffIsBounded(t *testing.T) {
	s := &Source{opts: Options{BackoffMin: 100 * time.Millisecond, BackoffMax: 5 * time.Second}}
	nominal := []time.Duration{100, 200, 400, 800, 1600, 3200, 5000, 5000}
	for i, n := range nominal {
		n *= time.Millisecond
		for range 50 {
			if d := s.backoff(i + 1); d > n || d < n*4/5 {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", i+1, d, n*4/5, n)
			}
		}
	}
	if d := s.backoff(1 << 20); d > 5*time.Second {
		t.Errorf("backoff after many attempts = %v, above the maximum", d)
	}
}
