package keying

import (
	"fmt"
	"strconv"
)

// Transform turns the extracted key text into what the scheme reads.
type Transform uint8

// The transforms.
const (
	// TransformInt64 parses the key as a strict decimal int64.
	TransformInt64 Transform = iota + 1
	// TransformHash hashes the key bytes into the scheme's [lowKey, highKey].
	TransformHash
	// TransformName uses the key as a partition name.
	TransformName
)

// ParseTransform reads a transform's configuration name.
func ParseTransform(s string) (Transform, bool) {
	switch s {
	case "int64":
		return TransformInt64, true
	case "hash":
		return TransformHash, true
	case "name":
		return TransformName, true
	}
	return 0, false
}

// String returns the transform's configuration name.
func (t Transform) String() string {
	switch t {
	case TransformInt64:
		return "int64"
	case TransformHash:
		return "hash"
	case TransformName:
		return "name"
	}
	return "unknown"
}

// Reason says why a request has no usable partition key. Each maps to one row of the error
// table.
type Reason uint8

// The reasons a key is rejected.
const (
	// Missing: no source yielded a value.
	Missing Reason = iota + 1
	// Invalid: a value was found but cannot be read (not a strict int64, broken encoding).
	Invalid
	// OutOfRange: the key lies outside [lowKey, highKey], or names no partition.
	OutOfRange
)

// Failure describes a rejected key. It is built only on the rejection path.
type Failure struct {
	Reason  Reason
	Message string
}

func (f *Failure) Error() string { return f.Message }

// Keyer extracts a service's partition key from a request and maps it to a partition index.
// It is immutable and safe for concurrent use.
type Keyer struct {
	scheme    *Scheme
	sources   []Source
	transform Transform
	hash      HashFunc
}

// NewKeyer checks that the sources and transform fit the scheme and returns the keyer. A
// singleton scheme takes no sources; the others need at least one.
func NewKeyer(scheme *Scheme, sources []Source, transform Transform, hash HashFunc) (*Keyer, error) {
	k := &Keyer{scheme: scheme, sources: sources, transform: transform, hash: hash}
	if scheme.Kind() == Singleton {
		if len(sources) > 0 {
			return nil, &FieldError{"key.sources", "a singleton service reads no key; remove the key sources"}
		}
		if transform != 0 || hash != 0 {
			return nil, &FieldError{"key.transform", "a singleton service reads no key; remove the key transform and hash"}
		}
		return k, nil
	}
	if len(sources) == 0 {
		return nil, &FieldError{"key.sources", "a " + scheme.Kind().String() + " service needs at least one key source"}
	}
	if k.transform == 0 {
		k.transform = TransformInt64
		if scheme.Kind() == Named {
			k.transform = TransformName
		}
	}
	switch {
	case scheme.Kind() == Named && k.transform != TransformName:
		return nil, &FieldError{"key.transform", fmt.Sprintf("%s does not fit a named scheme; use name", k.transform)}
	case scheme.Kind() == UniformInt64 && k.transform == TransformName:
		return nil, &FieldError{"key.transform", "name does not fit a uniformInt64 scheme; use int64 or hash"}
	}
	if k.hash == 0 {
		k.hash = XXHash64
	} else if k.transform != TransformHash {
		return nil, &FieldError{"key.hash", "is set but the transform is " + k.transform.String() + ", not hash"}
	}
	return k, nil
}

// Scheme returns the keyer's partition scheme.
func (k *Keyer) Scheme() *Scheme { return k.scheme }

// Sources returns the key sources in the order they are tried.
func (k *Keyer) Sources() []Source { return k.sources }

// Transform returns the transform.
func (k *Keyer) Transform() Transform { return k.transform }

// Hash returns the hash function of the hash transform.
func (k *Keyer) Hash() HashFunc { return k.hash }

// NeedsBody reports whether any source reads the request body.
func (k *Keyer) NeedsBody() bool {
	for _, s := range k.sources {
		if s.Kind == SourceJSONBody {
			return true
		}
	}
	return false
}

// Key is a request's partition key and the partition it maps to.
type Key struct {
	// Index is the partition's index in the scheme.
	Index int
	// Int is the int64 key for uniformInt64 schemes: the parsed key, or the hash reduced into
	// the range.
	Int int64
	// Name is the partition name for named schemes. It is the scheme's own copy of the name,
	// never request memory.
	Name string
}

// AppendText appends the key's canonical text: the int64 key in decimal, the partition name,
// or nothing for a singleton. It is what partroute reports as the partition key, and it never
// contains request bytes that were not validated.
func (k Key) AppendText(dst []byte, kind SchemeKind) []byte {
	switch kind {
	case UniformInt64:
		return strconv.AppendInt(dst, k.Int, 10)
	case Named:
		return append(dst, k.Name...)
	}
	return dst
}

// Partition extracts the key from req and maps it to a partition. It does not allocate on
// success for path, header, query and cookie sources with plain values.
func (k *Keyer) Partition(req *Request) (Key, *Failure) {
	if k.scheme.Kind() == Singleton {
		return Key{}, nil
	}
	for i := range k.sources {
		src := &k.sources[i]
		raw, found, invalid := src.lookup(req)
		if invalid != "" {
			return Key{}, &Failure{Invalid, src.String() + ": " + invalid}
		}
		if found {
			return k.apply(src, raw)
		}
	}
	return Key{}, k.missing()
}

func (k *Keyer) missing() *Failure {
	msg := "no partition key in the request; looked in "
	for i, s := range k.sources {
		if i > 0 {
			msg += ", "
		}
		msg += s.String()
	}
	return &Failure{Missing, msg}
}

// QuoteInput renders untrusted input for an error message: quoted, escaped and cut short, so
// that a message never carries raw or unbounded client bytes.
func QuoteInput(s string) string {
	const maxLen = 64
	if len(s) > maxLen {
		return strconv.QuoteToASCII(s[:maxLen]) + "..."
	}
	return strconv.QuoteToASCII(s)
}

func (k *Keyer) apply(src *Source, raw string) (Key, *Failure) {
	switch k.transform {
	case TransformInt64:
		v, ok := ParseInt64(raw)
		if !ok {
			return Key{}, &Failure{Invalid, fmt.Sprintf("%s: %s is not a decimal int64 (digits with an optional leading -, within the int64 range)", src, QuoteInput(raw))}
		}
		idx, ok := k.scheme.PartitionOfInt64(v)
		if !ok {
			return Key{}, &Failure{OutOfRange, fmt.Sprintf("%s: key %d is outside [%d, %d]", src, v, k.scheme.low, k.scheme.high)}
		}
		return Key{Index: idx, Int: v}, nil
	case TransformHash:
		v := ReduceHash(k.hash.Sum64(raw), k.scheme.low, k.scheme.high)
		idx, _ := k.scheme.PartitionOfInt64(v)
		return Key{Index: idx, Int: v}, nil
	default:
		idx, ok := k.scheme.PartitionOfName(raw)
		if !ok {
			return Key{}, &Failure{OutOfRange, fmt.Sprintf("%s: %s is not a partition name of this service", src, QuoteInput(raw))}
		}
		return Key{Index: idx, Name: k.scheme.names[idx]}, nil
	}
}
