package loglimit

import (
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLimiter(t *testing.T) {
	var l Limiter
	t0 := time.Unix(1000, 0)
	if n, ok := l.Allow(t0); !ok || n != 0 {
		t.Fatalf("first event: %d %v, want 0 true", n, ok)
	}
	for i := 1; i <= 3; i++ {
		if _, ok := l.Allow(t0.Add(time.Duration(i) * 100 * time.Millisecond)); ok {
			t.Fatalf("event %d within the interval was allowed", i)
		}
	}
	if n, ok := l.Allow(t0.Add(Interval)); !ok || n != 3 {
		t.Errorf("event after the interval: %d %v, want 3 true", n, ok)
	}
	if n, ok := l.Allow(t0.Add(3 * Interval)); !ok || n != 0 {
		t.Errorf("event after a quiet interval: %d %v, want 0 true", n, ok)
	}
}

// Events from many goroutines at once are each either let through or counted, never lost.
func TestLimiterConcurrent(t *testing.T) {
	var l Limiter
	now := time.Unix(1000, 0)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for range 8 {
		wg.Go(func() {
			for range 100 {
				if _, ok := l.Allow(now); ok {
					mu.Lock()
					allowed++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	n, ok := l.Allow(now.Add(Interval))
	if allowed != 1 || !ok || n != 799 {
		t.Errorf("%d allowed of 800 at one instant, then %d counted (%v); want 1 and 799", allowed, n, ok)
	}
}

func TestText(t *testing.T) {
	long := strings.Repeat("x", 4096)
	for _, c := range []struct {
		name, in, want string
	}{
		{"short", "bad cluster", "bad cluster"},
		{"at the limit", long[:MaxText], long[:MaxText]},
		{"long", long, long[:MaxText] + "...[cut; 4096 bytes in all]"},
		// A character that straddles the cut is left out whole.
		{"multi-byte at the cut", long[:MaxText-1] + "é" + long, long[:MaxText-1] + "...[cut; 4353 bytes in all]"},
	} {
		if got := Text(c.in); got != c.want {
			t.Errorf("%s: Text = %.300q, want %.300q", c.name, got, c.want)
		}
	}
}
