package config

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/partroute/partroute/readyourwrites"
)

// ReadYourWrites is the read-your-writes section: the keys that sign and verify tokens and how
// tokens travel, shared by every service that turns the guarantee on with
// services[].replicas.readYourWrites (docs/replicas.md).
type ReadYourWrites struct {
	// KeysFile is the absolute path of the keys file; empty when the section is absent.
	KeysFile string
	// Keys are the keys read from KeysFile when the configuration was loaded: a change of the
	// file is a new configuration.
	Keys *readyourwrites.Keyring
	// KeysSum is the SHA-256 of the content Keys were read from, by which the configuration
	// watcher tells that the file has changed since.
	KeysSum [32]byte
	// Cookie is the name of the cookie that carries tokens, and Header that of the header;
	// empty for none. At least one is set.
	Cookie, Header string
	// CookieSecure marks the cookie Secure, sent back over HTTPS only.
	CookieSecure bool
}

// DefaultReadYourWritesCookie is the name of the cookie that carries tokens when
// readYourWrites.cookie is left out.
const DefaultReadYourWritesCookie = "partroute-ryw"

// MaxReadYourWrites is the longest services[].replicas.readYourWrites. The window should cover
// how far a healthy secondary lags behind the primary (milliseconds to a second or two) and the
// clock skew between partroute instances (tokens carry an absolute expiry); a minute is far
// beyond both. Past it, a client that writes now and then would read from the primary nearly
// all the time, and the service's read policy would stop applying to the clients that write.
const MaxReadYourWrites = time.Minute

// minReadYourWrites is the shortest window above 0: a token's expiry is kept to the
// millisecond.
const minReadYourWrites = time.Millisecond

// readYourWritesFile is the YAML shape of the readYourWrites section.
type readYourWritesFile struct {
	KeysFile     string  `yaml:"keysFile"`
	Cookie       *string `yaml:"cookie"`
	Header       string  `yaml:"header"`
	CookieSecure bool    `yaml:"cookieSecure"`
}

// keysFileShape is the YAML shape of the keys file.
type keysFileShape struct {
	SigningKey string        `yaml:"signingKey"`
	Keys       []keyFileItem `yaml:"keys"`
}

type keyFileItem struct {
	ID string `yaml:"id"`
	// Secret is base64 (standard, padded), at least readyourwrites.MinSecretBytes decoded.
	Secret string `yaml:"secret"`
}

// parseReadYourWrites checks the readYourWrites section and loads its keys file, relative to
// the configuration's directory. headers holds the header names already taken, by field.
func parseReadYourWrites(f *readYourWritesFile, path string, headers map[string]string, errs *Errors, at func(string) int) ReadYourWrites {
	var r ReadYourWrites
	if f == nil {
		return r
	}
	const p = "readYourWrites"
	r.Cookie = DefaultReadYourWritesCookie
	if f.Cookie != nil {
		r.Cookie = *f.Cookie
		if r.Cookie != "" && !validCookieName(r.Cookie) {
			errs.Add(p+".cookie", at(p+".cookie"), "%q is not a cookie name of letters, digits, '-', '_' and '.'", r.Cookie)
		}
	}
	if f.Header != "" {
		r.Header = strings.ToLower(f.Header)
		switch err := checkSettableHeader(r.Header); {
		case err != nil:
			errs.Add(p+".header", at(p+".header"), "%v", err)
		case r.Header == "cookie" || r.Header == "set-cookie":
			errs.Add(p+".header", at(p+".header"), "%q is the cookie's own header; set readYourWrites.cookie for a cookie", r.Header)
		default:
			if other, dup := headers[r.Header]; dup {
				errs.Add(p+".header", at(p+".header"), "%q is already the name of %s", r.Header, other)
			}
		}
	}
	if r.Cookie == "" && r.Header == "" {
		errs.Add(p, at(p), "neither cookie nor header is set: a token needs one of them to reach the client and come back")
	}
	if f.CookieSecure && r.Cookie == "" {
		errs.Add(p+".cookieSecure", at(p+".cookieSecure"), "does not apply without a cookie")
	}
	r.CookieSecure = f.CookieSecure
	if f.KeysFile == "" {
		errs.Add(p+".keysFile", at(p), "is required: the file of the keys that sign and verify tokens")
		return r
	}
	r.KeysFile = f.KeysFile
	if !filepath.IsAbs(r.KeysFile) {
		r.KeysFile = filepath.Join(filepath.Dir(path), r.KeysFile)
	}
	keys, sum, err := loadKeys(r.KeysFile)
	if err != nil {
		var kerrs *Errors
		if errors.As(err, &kerrs) {
			// Each problem is named as a compiler names one: file:line: field: message; the
			// line of the error itself is that of keysFile in partroute.yaml.
			for _, fe := range kerrs.List {
				where := r.KeysFile
				if fe.Line > 0 {
					where += ":" + strconv.Itoa(fe.Line)
				}
				if fe.Path != "" {
					where += ": " + fe.Path
				}
				errs.Add(p+".keysFile", at(p+".keysFile"), "%s: %s", where, fe.Message)
			}
		} else {
			errs.Add(p+".keysFile", at(p+".keysFile"), "%v", err)
		}
		return r
	}
	r.Keys, r.KeysSum = keys, sum
	return r
}

// loadKeys reads a keys file. Its problems are an *Errors of the file, each naming its field
// and line; no message ever holds a secret.
func loadKeys(path string) (*readyourwrites.Keyring, [32]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, [32]byte{}, err
	}
	sum := sha256.Sum256(data)
	kerrs := &Errors{File: path}
	var f keysFileShape
	lines := DecodeStrict(data, &f, kerrs)
	if lines == nil {
		return nil, sum, kerrs.Err()
	}
	keys := make([]readyourwrites.Key, 0, len(f.Keys))
	for i, k := range f.Keys {
		secret, err := base64.StdEncoding.DecodeString(strings.TrimSpace(k.Secret))
		if err != nil {
			field := "keys[" + strconv.Itoa(i) + "].secret"
			kerrs.Add(field, lines.At(field), "is not base64 (openssl rand -base64 32 makes a secret)")
			continue
		}
		keys = append(keys, readyourwrites.Key{ID: k.ID, Secret: secret})
	}
	if len(kerrs.List) > 0 {
		return nil, sum, kerrs.Err()
	}
	ring, err := readyourwrites.NewKeyring(f.SigningKey, keys)
	if fe, ok := errors.AsType[*readyourwrites.FieldError](err); ok {
		kerrs.Add(fe.Field, lines.At(fe.Field), "%s", fe.Message)
		return nil, sum, kerrs.Err()
	}
	return ring, sum, err
}

// parseReadYourWritesWindow checks services[].replicas.readYourWrites.
func parseReadYourWritesWindow(w *time.Duration, reads ReadPolicy, rf string, errs *Errors, at func(string) int) time.Duration {
	if w == nil {
		return 0
	}
	f := rf + ".readYourWrites"
	switch {
	case *w < 0:
		errs.Add(f, at(f), "%v is negative; 0 turns read-your-writes off", *w)
	case *w > MaxReadYourWrites:
		errs.Add(f, at(f), "%v is above the maximum of %v: reads after a write would go to the primary long after a secondary has the write", *w, MaxReadYourWrites)
	case *w > 0 && *w < minReadYourWrites:
		errs.Add(f, at(f), "%v is below %v, the resolution of a token's expiry", *w, minReadYourWrites)
	case *w > 0 && reads == ReadPrimary:
		errs.Add(f, at(f), "does nothing under reads: primary, where every read goes to the primary already")
	}
	return *w
}

// validCookieName accepts a cookie name of letters, digits, '-', '_' and '.': a token in the
// sense of RFC 6265, narrowed to what reads well in a header.
func validCookieName(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			return false
		}
	}
	return s != ""
}
