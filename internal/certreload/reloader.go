package certreload

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/partroute/partroute/internal/filewatch"
)

// Files are the files one listener's TLS comes from. They are read again on every change: a
// relative path is relative to the working directory, which partroute never changes.
type Files struct {
	// Cert and Key are the certificate chain and its private key, in PEM. Required.
	Cert, Key string
	// ClientCA holds the CA certificates, in PEM, that client certificates are verified
	// against. Empty means that no client certificate is asked for.
	ClientCA string
	// RequireClientCert refuses a client that presents no certificate. It needs ClientCA.
	RequireClientCert bool
}

// The fields of Files, as FileError names them.
const (
	FieldCert     = "cert"
	FieldKey      = "key"
	FieldClientCA = "clientCA"
)

// FileError is a file that could not be read or does not hold what it should.
type FileError struct {
	// Field is FieldCert, FieldKey or FieldClientCA.
	Field string
	Path  string
	Err   error
}

func (e *FileError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// errNoClientCertificate is the handshake error of a client that presented no certificate to
// a listener that requires one. crypto/tls reports that case with an untyped error, so the
// requirement is checked here instead, where it can be told apart (see handshakeReason).
var errNoClientCertificate = errors.New("certreload: the client presented no certificate, and this listener requires one")

// Reloader serves one listener's TLS configuration from its Files. Its TLSConfig hands every
// new handshake the certificate and client CA last loaded; Watch follows the files.
type Reloader struct {
	listener   string
	files      Files
	nextProtos []string
	metrics    *Metrics
	log        *slog.Logger

	// current is the configuration new handshakes get.
	current atomic.Pointer[tls.Config]

	// The rest belongs to the goroutine that polls (Watch).
	watched []*filewatch.File // cert, key and, with a client CA, clientCA
	fields  []string          // the field of each watched file
	data    [][]byte          // the content last read of each
	// served is the hash of the content served; pending that of content that failed to
	// load once, which is looked at again at the next poll before it is reported (a
	// certificate and key are two files, and a poll may fall between their writes); reported
	// that of the content last logged and counted as rejected.
	served, pending, reported [32]byte
}

// New loads the files of listener ("extproc", "xds", "admin": the label of its metrics) and
// returns a Reloader serving them, or a *FileError naming the file that does not load.
// nextProtos are the ALPN protocols the listener offers (gRPC's credentials add h2 to those
// of a gRPC server).
func New(listener string, f Files, nextProtos []string, m *Metrics, log *slog.Logger) (*Reloader, error) {
	r := &Reloader{listener: listener, files: f, nextProtos: nextProtos, metrics: m, log: log}
	r.watched = []*filewatch.File{filewatch.New(f.Cert), filewatch.New(f.Key)}
	r.fields = []string{FieldCert, FieldKey}
	if f.ClientCA != "" {
		r.watched = append(r.watched, filewatch.New(f.ClientCA))
		r.fields = append(r.fields, FieldClientCA)
	}
	r.data = make([][]byte, len(r.watched))
	if err := r.read(); err != nil {
		return nil, err
	}
	cfg, _, err := r.build()
	if err != nil {
		return nil, err
	}
	r.current.Store(cfg)
	r.served = r.sum()
	m.init(listener)
	return r, nil
}

// Check loads f once, as New does, and reports what does not load: partroute validate's
// check of the files.
func Check(f Files) error {
	_, err := New("check", f, nil, NewMetrics(nil), slog.New(slog.DiscardHandler))
	return err
}

// TLSConfig is the listener's TLS configuration. It holds no certificate of its own: every
// handshake asks for the configuration built from the files last loaded, so a rotation
// reaches new handshakes while established connections keep theirs.
func (r *Reloader) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Without tickets every handshake is a full one, which checks the client
		// certificate against the client CA in force and shows the certificate in force.
		SessionTicketsDisabled: true,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current.Load(), nil
		},
	}
}

// Watch polls the files every poll until ctx ends, serving each new content that loads.
func (r *Reloader) Watch(ctx context.Context, poll time.Duration) {
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.poll()
		}
	}
}

// poll looks at the files once. Content that loads replaces what is served; content that does
// not, seen at two polls in a row, is logged and counted once.
func (r *Reloader) poll() {
	var sum [32]byte
	var cfg *tls.Config
	var leaf *x509.Certificate
	err := r.read()
	if err != nil {
		// A file that cannot be read is told apart by its error.
		sum = sha256.Sum256([]byte(err.Error()))
	} else {
		sum = r.sum()
		switch sum {
		case r.served:
			// Unchanged, or back to what is served after a bad write.
			r.pending, r.reported = [32]byte{}, [32]byte{}
			return
		case r.reported:
			return
		}
		cfg, leaf, err = r.build()
	}
	if err == nil {
		r.current.Store(cfg)
		r.served, r.pending, r.reported = sum, [32]byte{}, [32]byte{}
		r.metrics.reloads.WithLabelValues(r.listener, resultOK).Inc()
		r.log.Info("TLS files reloaded; new connections get them", "listener", r.listener,
			"cert", r.files.Cert, "serial", serialString(leaf.SerialNumber), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
		return
	}
	if sum == r.reported {
		return
	}
	if sum != r.pending {
		r.pending = sum
		return
	}
	r.reported = sum
	r.metrics.reloads.WithLabelValues(r.listener, resultError).Inc()
	r.log.Error("TLS files rejected; still serving the previous certificate", "listener", r.listener, "error", err)
}

// read reads every file that changed since it was last read.
func (r *Reloader) read() error {
	for i, f := range r.watched {
		data, changed, err := f.Read(false)
		if err != nil {
			return &FileError{Field: r.fields[i], Path: f.Path(), Err: fmt.Errorf("cannot read it: %w", err)}
		}
		if changed {
			r.data[i] = data
		}
	}
	return nil
}

// sum is the hash of the content last read of every file together.
func (r *Reloader) sum() [32]byte {
	h := sha256.New()
	for _, d := range r.data {
		// The length first, so that bytes moved from one file to the next change the sum.
		fmt.Fprintf(h, "%d\n", len(d))
		h.Write(d)
	}
	var s [32]byte
	h.Sum(s[:0])
	return s
}

// build makes the configuration of the content last read, and returns its leaf certificate.
func (r *Reloader) build() (*tls.Config, *x509.Certificate, error) {
	certPEM, keyPEM := r.data[0], r.data[1]
	leaf, err := firstCertificate(certPEM)
	if err != nil {
		return nil, nil, &FileError{Field: FieldCert, Path: r.files.Cert, Err: err}
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, nil, &FileError{Field: FieldKey, Path: r.files.Key, Err: fmt.Errorf("is not the private key of the certificate in %s: %w", r.files.Cert, err)}
	}
	cfg := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		Certificates:           []tls.Certificate{pair},
		NextProtos:             r.nextProtos,
	}
	if r.files.ClientCA != "" {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(r.data[2]) {
			return nil, nil, &FileError{Field: FieldClientCA, Path: r.files.ClientCA, Err: errors.New("holds no PEM certificate")}
		}
		cfg.ClientCAs = pool
		// A client certificate, when given, must verify; whether one must be given is
		// checked after, so that its absence has an error of its own.
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if r.files.RequireClientCert {
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				if len(cs.PeerCertificates) == 0 {
					return errNoClientCertificate
				}
				return nil
			}
		}
	}
	return cfg, leaf, nil
}

// firstCertificate parses the first certificate of a PEM chain, the leaf.
func firstCertificate(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("holds no PEM certificate")
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("its first certificate does not parse: %w", err)
		}
		return c, nil
	}
}

// serialString is a serial number as openssl prints it, in hex.
func serialString(n *big.Int) string { return fmt.Sprintf("%X", n) }
