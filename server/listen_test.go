package server

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// socketDir is a directory for unix sockets whose paths stay under the 108 bytes a socket path
// takes, which a test's own temporary directory may exceed.
func socketDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "pr-sock-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// A unix socket listener replaces the socket a partroute that did not stop cleanly left, never
// a file of another kind, and is open to its owner and group only.
func TestListenOnAUnixSocket(t *testing.T) {
	dir := socketDir(t)
	path := filepath.Join(dir, "extproc.sock")
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	// A listener killed with the process leaves its file behind.
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	lis, err := listenOn("unix:" + path)
	if err != nil {
		t.Fatalf("over a stale socket: %v", err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != unixSocketMode {
		t.Errorf("socket mode %v, want %v", fi.Mode().Perm(), os.FileMode(unixSocketMode))
	}
	lis.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the socket is left behind after its listener closed: %v", err)
	}

	regular := filepath.Join(dir, "not-a-socket")
	if err := os.WriteFile(regular, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listenOn("unix:" + regular); err == nil {
		t.Error("a regular file at the socket path was replaced")
	}
	if b, err := os.ReadFile(regular); err != nil || string(b) != "data" {
		t.Errorf("the regular file changed: %q %v", b, err)
	}
}

// Every connection of a unix socket has the same empty remote address; the connection limit
// gives each one of its own, so that a stream's connection is still found by its peer address.
func TestUnixConnectionsHaveAddressesOfTheirOwn(t *testing.T) {
	dir := socketDir(t)
	raw, err := listenOn("unix:" + filepath.Join(dir, "s.sock"))
	if err != nil {
		t.Fatal(err)
	}
	l := limitConnections(raw, listenerExtProc, func() int { return 10 }, newListenerMetrics(prometheus.NewRegistry()))
	defer l.Close()
	var conns []net.Conn
	for range 2 {
		c, err := net.Dial("unix", filepath.Join(dir, "s.sock"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		s, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		conns = append(conns, s)
	}
	a, b := conns[0].RemoteAddr(), conns[1].RemoteAddr()
	if a.String() == b.String() {
		t.Fatalf("two connections share the address %q", a)
	}
	for _, c := range conns {
		if got := l.conn(c.RemoteAddr()); got != c {
			t.Errorf("the connection of %s is not found by its address", c.RemoteAddr())
		}
	}
}
