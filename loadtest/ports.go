package loadtest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// ReservePorts reserves n loopback ports for servers that bind their own listeners (partroute,
// Envoy). The listeners close before the ports are used, so one could in principle be taken in
// between: the load test and the demo check that the server answering is the one they started.
func ReservePorts(n int) ([]string, error) {
	var addrs []string
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

// WaitHTTP waits until url answers 200, or until the server reports an error on failed.
func WaitHTTP(ctx context.Context, url string, failed <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if resp, err := client.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-failed:
			return fmt.Errorf("server stopped: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
