package servicefabric

import (
	"crypto/sha1" //nolint:gosec // Service Fabric names certificates by their SHA-1 thumbprint
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
)

// TLSOptions secure the connection to the gateway. Paths are used as given; the configuration
// loader resolves them against the configuration file's directory.
type TLSOptions struct {
	// CertFile and KeyFile are the client certificate and its private key, PEM encoded. A
	// secure cluster admits a client by this certificate (its thumbprint or common name is in
	// the cluster's ClientCertThumbprints or ClientCertCommonNames). Both or neither.
	CertFile, KeyFile string
	// CAFile holds the PEM certificates that sign the gateway's certificate. With it the
	// gateway's certificate chain and host name are verified as usual.
	CAFile string
	// ServerThumbprint pins the gateway's certificate by its SHA-1 thumbprint, as Service
	// Fabric shows thumbprints: 40 hexadecimal digits, any case, spaces and colons ignored.
	// Several thumbprints separated by commas are all accepted, for certificate rollover.
	// Without CAFile the thumbprint alone identifies the gateway (cluster certificates are
	// often self-signed and name the cluster rather than the host); with CAFile both must hold.
	ServerThumbprint string
	// ServerName overrides the name checked against the gateway's certificate when CAFile is
	// set, for a certificate that names the cluster rather than the host dialled.
	ServerName string
}

func (o TLSOptions) empty() bool {
	return o.CertFile == "" && o.KeyFile == "" && o.CAFile == "" && o.ServerThumbprint == "" && o.ServerName == ""
}

// ThumbprintError is a gateway certificate whose SHA-1 thumbprint is not one of the pinned
// ones. The handshake is aborted, and the call is not retried, since the answer would not change.
type ThumbprintError struct {
	Got string
}

func (e *ThumbprintError) Error() string {
	return "gateway certificate thumbprint " + e.Got + " is not the pinned serverThumbprint"
}

// buildTLS turns the options into a client TLS configuration. Every failure names the field of
// partroute.yaml it comes from, under prefix.
func buildTLS(o TLSOptions, prefix string) (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		ServerName: o.ServerName,
		// Every handshake is a full one: VerifyPeerCertificate, which checks the pin, is not
		// called on resumed sessions. Without a ClientSessionCache a client never resumes;
		// disabling tickets says so explicitly.
		SessionTicketsDisabled: true,
	}
	var errs []error
	switch {
	case o.CertFile != "" && o.KeyFile != "":
		pair, err := tls.LoadX509KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.cert, %s.key: %w", prefix, prefix, err))
			break
		}
		// The certificate is offered whatever CA names the gateway asks for: Go would
		// otherwise send none when its issuer is not in the server's list, and Service Fabric
		// admits clients by thumbprint or common name rather than by issuer.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &pair, nil
		}
	case o.CertFile != "" || o.KeyFile != "":
		errs = append(errs, fmt.Errorf("%s: cert and key go together; set both or neither", prefix))
	}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.ca: %w", prefix, err))
		} else {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				errs = append(errs, fmt.Errorf("%s.ca: %s holds no PEM certificate", prefix, o.CAFile))
			}
			cfg.RootCAs = pool
		}
	}
	if o.ServerThumbprint != "" {
		pins, err := parseThumbprints(o.ServerThumbprint)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.serverThumbprint: %w", prefix, err))
		} else {
			if o.CAFile == "" {
				// The pin is the gateway's identity: chain and name checks are replaced by
				// the thumbprint check below, which runs on every handshake.
				cfg.InsecureSkipVerify = true
			}
			cfg.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
				if len(raw) == 0 {
					return errors.New("gateway sent no certificate")
				}
				got := sha1.Sum(raw[0]) //nolint:gosec // the SHA-1 thumbprint Service Fabric names a certificate by; pinning needs second-preimage resistance, which SHA-1 keeps
				for _, p := range pins {
					if p == got {
						return nil
					}
				}
				return &ThumbprintError{Got: strings.ToUpper(hex.EncodeToString(got[:]))}
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// parseThumbprints reads one or more comma-separated SHA-1 thumbprints.
func parseThumbprints(s string) ([][sha1.Size]byte, error) {
	var out [][sha1.Size]byte
	for _, part := range strings.Split(s, ",") {
		clean := strings.Map(func(r rune) rune {
			switch r {
			case ' ', ':', '\t':
				return -1
			}
			return r
		}, part)
		if len(clean) != 2*sha1.Size {
			return nil, fmt.Errorf("%s is not a SHA-1 thumbprint of 40 hexadecimal digits", quote(strings.TrimSpace(part)))
		}
		var t [sha1.Size]byte
		if _, err := hex.Decode(t[:], []byte(clean)); err != nil {
			return nil, fmt.Errorf("%s is not a SHA-1 thumbprint of 40 hexadecimal digits", quote(strings.TrimSpace(part)))
		}
		out = append(out, t)
	}
	return out, nil
}
