package certreload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"sync"

	"google.golang.org/grpc/credentials"
)

// handshakeReason sorts a failed server handshake into one of the bounded reasons, from the
// error's type.
func handshakeReason(err error) string {
	if errors.Is(err, errNoClientCertificate) {
		return ReasonNoClientCertificate
	}
	if _, ok := errors.AsType[x509.UnknownAuthorityError](err); ok {
		return ReasonUnknownAuthority
	}
	if _, ok := errors.AsType[*tls.CertificateVerificationError](err); ok {
		return ReasonBadCertificate
	}
	if _, ok := errors.AsType[tls.RecordHeaderError](err); ok {
		return ReasonNotTLS
	}
	return ReasonOther
}

// failed counts a failed handshake.
func (r *Reloader) failed(err error) {
	r.metrics.failures.WithLabelValues(r.listener, handshakeReason(err)).Inc()
}

// Credentials are the gRPC server credentials of the listener: TLS from TLSConfig, with each
// failed handshake counted by reason. gRPC closes the connection and logs nothing at its
// default log level.
func (r *Reloader) Credentials() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: credentials.NewTLS(r.TLSConfig()), r: r}
}

type countingCreds struct {
	credentials.TransportCredentials
	r *Reloader
}

func (c *countingCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	out, info, err := c.TransportCredentials.ServerHandshake(conn)
	if err != nil {
		c.r.failed(err)
	}
	return out, info, err
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), r: c.r}
}

// Listener serves TLS from TLSConfig on the connections l accepts, for a server that is not
// gRPC, such as the admin HTTP server. The handshake runs on the connection's first read or
// write, in the server's goroutine for the connection and under the deadlines it sets; a
// failure is counted by reason and returned to the server as a read error, which net/http
// does not log. The server sees plain connections, so net/http serves them HTTP/1.1.
func (r *Reloader) Listener(l net.Listener) net.Listener {
	return &listener{Listener: l, r: r, cfg: r.TLSConfig()}
}

type listener struct {
	net.Listener
	r   *Reloader
	cfg *tls.Config
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &conn{Conn: tls.Server(c, l.cfg), r: l.r}, nil
}

// conn is a server TLS connection that handshakes once, before its first read or write.
type conn struct {
	*tls.Conn
	r    *Reloader
	once sync.Once
	err  error
}

func (c *conn) handshake() error {
	c.once.Do(func() {
		if c.err = c.HandshakeContext(context.Background()); c.err != nil {
			c.r.failed(c.err)
		}
	})
	return c.err
}

func (c *conn) Read(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *conn) Write(p []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}
