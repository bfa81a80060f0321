package cache

import "errors"

// ErrUnavailable matches, with errors.Is, every error that Get returns because the naming source
// could not be reached and nothing usable was cached. Callers answer it with 503
// naming_unavailable.
var ErrUnavailable = errors.New("naming unavailable")

// UnavailableError is the error Get returns when the fill failed and no entry within its stale
// limit was held. It matches ErrUnavailable, and it unwraps to the fill's error, so
// errors.Is(err, context.DeadlineExceeded) also tells a timeout apart.
type UnavailableError struct {
	// Err is the fill's error, or context.DeadlineExceeded when the fill did not return by
	// its deadline.
	Err error
	// TimedOut is true when the fill ran out of ResolveTimeout, as opposed to the source
	// answering with an error.
	TimedOut bool
}

func (e *UnavailableError) Error() string {
	msg := "cache: naming unavailable"
	if e.TimedOut {
		msg += ": resolve timed out"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the fill's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

// Is makes every UnavailableError match ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }
