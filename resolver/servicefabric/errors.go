package servicefabric

import (
	"fmt"
	"strconv"
	"strings"
)

// GatewayError is a call to the HTTP gateway that did not succeed: either the gateway answered
// with a status other than 200, or no answer arrived (connection refused, reset, timed out,
// TLS handshake rejected).
type GatewayError struct {
	// Op is the REST operation: ResolvePartition, GetPartitions or GetReplicas.
	Op string
	// Target is the service id (app~svc) or partition id the call was about.
	Target string
	// Attempts is how many requests were sent, retries included.
	Attempts int
	// StatusCode is the HTTP status of the last answer, 0 when none arrived.
	StatusCode int
	// Code and Message come from the body when the gateway sent its error object,
	// {"Error":{"Code":"FABRIC_E_...","Message":"..."}}; both are empty otherwise.
	Code, Message string
	// Err is the transport error when no answer arrived.
	Err error
}

func (e *GatewayError) Error() string {
	var b strings.Builder
	b.WriteString("servicefabric: ")
	b.WriteString(e.Op)
	b.WriteByte(' ')
	b.WriteString(e.Target)
	b.WriteString(": ")
	switch {
	case e.StatusCode != 0:
		b.WriteString("gateway answered ")
		b.WriteString(strconv.Itoa(e.StatusCode))
		if e.Code != "" {
			b.WriteByte(' ')
			b.WriteString(e.Code)
		}
		if e.Message != "" {
			b.WriteString(": ")
			b.WriteString(e.Message)
		}
	case e.Err != nil:
		b.WriteString(e.Err.Error())
	default:
		b.WriteString("failed")
	}
	if e.Attempts > 1 {
		fmt.Fprintf(&b, " (after %d attempts)", e.Attempts)
	}
	return b.String()
}

// Unwrap returns the transport error, so that errors.Is(err, context.DeadlineExceeded) tells a
// timeout apart.
func (e *GatewayError) Unwrap() error { return e.Err }

// Temporary reports whether the failure is of the kind the client retries: a 5xx answer, a
// timeout or a connection error. A 4xx answer is the gateway's considered reply and is never
// retried.
func (e *GatewayError) Temporary() bool {
	if e.StatusCode != 0 {
		return e.StatusCode >= 500
	}
	return e.Err != nil && !permanentTransport(e.Err)
}

// DecodeError is a gateway answer that is not the JSON the REST reference documents: a truncated
// or malformed body, a missing required field, a key that is not an int64, an unknown partition
// kind. It names the operation and the service or partition it was about.
type DecodeError struct {
	Op     string
	Target string
	Err    error
}

func (e *DecodeError) Error() string {
	return "servicefabric: " + e.Op + " " + e.Target + ": malformed answer: " + e.Err.Error()
}

// Unwrap returns the underlying decoding error.
func (e *DecodeError) Unwrap() error { return e.Err }

// AddressError is an endpoint address that cannot be turned into a host:port: not the JSON
// object of listeners, no listener of the configured name, not an http or https URL, a bad
// port. Only the endpoint that published it is skipped.
type AddressError struct {
	// Address is the published address, quoted and cut short for messages.
	Address string
	Reason  string
}

func (e *AddressError) Error() string { return "endpoint address " + e.Address + ": " + e.Reason }

func addressErrorf(published, format string, args ...any) *AddressError {
	return &AddressError{Address: quote(published), Reason: fmt.Sprintf(format, args...)}
}

// quote renders text that came from the gateway for a message: quoted, escaped and cut short,
// since it may end up in logs and in the body of a 503 answer.
func quote(s string) string {
	const limit = 120
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strconv.QuoteToASCII(s)
}
