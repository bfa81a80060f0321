package testkit

import (
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

func TestWaitFor(t *testing.T) {
	n := 0
	WaitFor(t, "three checks", time.Second, func() bool { n++; return n == 3 })
	if n != 3 {
		t.Errorf("checked %d times", n)
	}
}

func TestLogBuffer(t *testing.T) {
	var b LogBuffer
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() { fmt.Fprintf(&b, "%d\n", i) })
	}
	wg.Wait()
	if got := len(b.String()); got != 20 {
		t.Errorf("%d bytes logged, want 20", got)
	}
}

func TestClock(t *testing.T) {
	c := NewClock()
	start := c.Now()
	c.Advance(time.Minute)
	if c.Now().Sub(start) != time.Minute {
		t.Errorf("advanced %v", c.Now().Sub(start))
	}
}

func TestFreePorts(t *testing.T) {
	addrs := FreePorts(t, 3)
	seen := map[string]bool{}
	for _, a := range addrs {
		if seen[a] {
			t.Fatalf("%s twice", a)
		}
		seen[a] = true
		l, err := net.Listen("tcp", a)
		if err != nil {
			t.Fatalf("%s is not free: %v", a, err)
		}
		l.Close()
	}
}

func TestExample(t *testing.T) {
	if _, err := os.Stat(Example(t, "partroute.yaml")); err != nil {
		t.Error(err)
	}
}
