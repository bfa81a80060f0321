package resolver

import "fmt"

// Code is an outcome code of the error table. Every rejection partroute makes is one of these;
// the table below is the only place that maps them to HTTP.
type Code uint8

// The outcome codes.
const (
	OK Code = iota
	MissingPartitionKey
	InvalidPartitionKey
	PartitionKeyOutOfRange
	PartitionUnavailable
	NamingUnavailable
	NoService
	BodyTooLarge
	RequestHeadersTooLarge
	// NumCodes is the number of codes: an array indexed by Code has this length.
	NumCodes
)

type codeInfo struct {
	name   string
	status int
	// retryAfter marks the transient failures that carry a retry-after header.
	retryAfter bool
}

var codeTable = [NumCodes]codeInfo{
	OK:                     {"ok", 200, false},
	MissingPartitionKey:    {"missing_partition_key", 400, false},
	InvalidPartitionKey:    {"invalid_partition_key", 400, false},
	PartitionKeyOutOfRange: {"partition_key_out_of_range", 400, false},
	PartitionUnavailable:   {"partition_unavailable", 503, true},
	NamingUnavailable:      {"naming_unavailable", 503, true},
	NoService:              {"no_service", 404, false},
	BodyTooLarge:           {"request_body_too_large", 413, false},
	RequestHeadersTooLarge: {"request_headers_too_large", 431, false},
}

// RetryAfterSeconds is the retry-after value of transient rejections: long enough for a
// failover to settle, short enough that clients come back quickly.
const RetryAfterSeconds = "1"

// Codes returns every code, for metrics that pre-create one series per code.
func Codes() []Code {
	out := make([]Code, 0, NumCodes)
	for c := OK; c < NumCodes; c++ {
		out = append(out, c)
	}
	return out
}

// String returns the code's name as it appears in error bodies, headers and metrics.
func (c Code) String() string {
	if c < NumCodes {
		return codeTable[c].name
	}
	return "unknown"
}

// Status returns the HTTP status of the code.
func (c Code) Status() int {
	if c < NumCodes {
		return codeTable[c].status
	}
	return 500
}

// RetryAfter reports whether a rejection with this code carries retry-after.
func (c Code) RetryAfter() bool { return c < NumCodes && codeTable[c].retryAfter }

// Error is a request partroute cannot route.
type Error struct {
	Code Code
	// Message is what the client is told.
	Message string
	// Cause is what operators are told: the naming source's own error, which may name
	// internal services, addresses and gateways, and so stays out of the client's response.
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return e.Code.String() + ": " + e.Message + ": " + e.Cause.Error()
	}
	return e.Code.String() + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Cause }

func errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}
