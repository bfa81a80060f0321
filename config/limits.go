package config

import (
	"math"
	"time"
)

// Defaults of the limits section: what a client of partroute can make it hold.
const (
	// DefaultMaxConnections bounds the connections of each gRPC listener. Envoy opens about
	// one connection per worker thread to each listener, and one more per health checker.
	DefaultMaxConnections = 4096
	// DefaultExtProcMaxConcurrentStreams bounds the streams of one ext_proc connection: the
	// HTTP requests in flight through it. Envoy's default circuit breaker lets a cluster have
	// 1,024 requests in flight, spread over its connections.
	DefaultExtProcMaxConcurrentStreams = 1000
	// DefaultXDSMaxConcurrentStreams bounds the streams of one xDS connection, where Envoy
	// opens one.
	DefaultXDSMaxConcurrentStreams = 100
	// DefaultStreamIdleTimeout ends an ext_proc stream that sent no message for this long.
	// Envoy gives partroute 200 ms per answer and sends each next message as soon as the
	// client or the upstream gives it one.
	DefaultStreamIdleTimeout = 30 * time.Second
	// DefaultMaxEmptyResets bounds the streams of one ext_proc connection that the client
	// resets before sending them a message, in one second. Envoy sends the request headers as
	// a stream's first message and never resets a stream before it.
	DefaultMaxEmptyResets = 100
	// DefaultMaxRequestHeaders and DefaultMaxRequestHeaderBytes bound the headers of one
	// request. Envoy's own defaults are 100 headers and 60 KiB for what a client sends; Envoy
	// adds its pseudo-headers and a few headers of its own before ext_proc sees the request,
	// which the margin leaves room for.
	DefaultMaxRequestHeaders     = 128
	DefaultMaxRequestHeaderBytes = 64 << 10
	// The admin listener's defaults. The header bytes leave room for a /debug/resolve query
	// of 64 KiB, which is in the request line.
	DefaultAdminMaxConnections = 64
	DefaultAdminReadTimeout    = 10 * time.Second
	DefaultAdminWriteTimeout   = 30 * time.Second
	DefaultAdminIdleTimeout    = 60 * time.Second
	DefaultAdminMaxHeaderBytes = 128 << 10
	// DefaultMaxHeld and DefaultMaxHeldPerPartition bound the requests held for a failover
	// (services[].replicas.failoverWait). Each held request is an ext_proc stream Envoy keeps
	// open, and Envoy's default circuit breaker lets the partroute cluster have 1,024 requests
	// in flight: more held than that would have Envoy refuse the streams of every other
	// request. A quarter of it per partition keeps one failing partition from taking them all.
	DefaultMaxHeld             = 1000
	DefaultMaxHeldPerPartition = 250
)

// MinStreamIdleTimeout is the shortest limits.extproc.streamIdleTimeout: a stream waits for
// the client's body and for the upstream's answer between messages, and a shorter timeout
// would end streams that are only waiting for them.
const MinStreamIdleTimeout = time.Second

// MaxHeldLimit is the largest limits.failover.maxHeld and maxHeldPerPartition: a held request
// is an open stream and a goroutine, and a million of them is more than any partroute holds.
const MaxHeldLimit = 1_000_000

// MaxRequestHeaderBytesLimit is the largest limits.requestHeaders.maxBytes, Envoy's own
// largest max_request_headers_kb (8,192 KiB).
const MaxRequestHeaderBytesLimit = 8 << 20

// Limits bound what a client of partroute can make it hold. A field that takes effect only on
// restart says so.
type Limits struct {
	ExtProc        ExtProcLimits
	XDS            XDSLimits
	Admin          AdminLimits
	RequestHeaders HeaderLimits
	Failover       FailoverLimits
}

// FailoverLimits bound the requests held waiting for a partition's new primary
// (services[].replicas.failoverWait). A request over either is answered 503 at once.
type FailoverLimits struct {
	// MaxHeld is the most requests held at once, over every service and partition.
	MaxHeld int
	// MaxHeldPerPartition is the most requests held at once for one partition.
	MaxHeldPerPartition int
}

// ExtProcLimits are the ext_proc listener's.
type ExtProcLimits struct {
	// MaxConnections bounds the connections open at once; a new one over it is closed at once.
	MaxConnections int
	// MaxConcurrentStreams is announced in each connection's HTTP/2 SETTINGS. Restart only.
	MaxConcurrentStreams uint32
	// StreamIdleTimeout ends a stream that sent no message for this long.
	StreamIdleTimeout time.Duration
	// MaxEmptyResets is the most streams of one connection the client may reset before
	// sending them a message within one second; one more closes the connection.
	MaxEmptyResets int
}

// XDSLimits are the xDS listener's.
type XDSLimits struct {
	MaxConnections int
	// MaxConcurrentStreams is announced in each connection's HTTP/2 SETTINGS. Restart only.
	MaxConcurrentStreams uint32
}

// AdminLimits are the admin listener's. Only MaxConnections takes effect at a reload.
type AdminLimits struct {
	MaxConnections                         int
	ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	MaxHeaderBytes                         int
}

// HeaderLimits bound the headers of one request partroute decides.
type HeaderLimits struct {
	// MaxCount is the most headers, pseudo-headers included.
	MaxCount int
	// MaxBytes is the most bytes of header names and values together.
	MaxBytes int
}

type limitsFile struct {
	ExtProc struct {
		MaxConnections       *int           `yaml:"maxConnections"`
		MaxConcurrentStreams *int           `yaml:"maxConcurrentStreams"`
		StreamIdleTimeout    *time.Duration `yaml:"streamIdleTimeout"`
		MaxEmptyResets       *int           `yaml:"maxEmptyResets"`
	} `yaml:"extproc"`
	XDS struct {
		MaxConnections       *int `yaml:"maxConnections"`
		MaxConcurrentStreams *int `yaml:"maxConcurrentStreams"`
	} `yaml:"xds"`
	Admin struct {
		MaxConnections *int           `yaml:"maxConnections"`
		ReadTimeout    *time.Duration `yaml:"readTimeout"`
		WriteTimeout   *time.Duration `yaml:"writeTimeout"`
		IdleTimeout    *time.Duration `yaml:"idleTimeout"`
		MaxHeaderBytes *int           `yaml:"maxHeaderBytes"`
	} `yaml:"admin"`
	RequestHeaders struct {
		MaxCount *int `yaml:"maxCount"`
		MaxBytes *int `yaml:"maxBytes"`
	} `yaml:"requestHeaders"`
	Failover struct {
		MaxHeld             *int `yaml:"maxHeld"`
		MaxHeldPerPartition *int `yaml:"maxHeldPerPartition"`
	} `yaml:"failover"`
}

// DefaultLimits are the limits of a configuration without a limits section.
func DefaultLimits() Limits {
	return Limits{
		ExtProc: ExtProcLimits{MaxConnections: DefaultMaxConnections, MaxConcurrentStreams: DefaultExtProcMaxConcurrentStreams, StreamIdleTimeout: DefaultStreamIdleTimeout, MaxEmptyResets: DefaultMaxEmptyResets},
		XDS:     XDSLimits{MaxConnections: DefaultMaxConnections, MaxConcurrentStreams: DefaultXDSMaxConcurrentStreams},
		Admin: AdminLimits{
			MaxConnections: DefaultAdminMaxConnections, ReadTimeout: DefaultAdminReadTimeout, WriteTimeout: DefaultAdminWriteTimeout,
			IdleTimeout: DefaultAdminIdleTimeout, MaxHeaderBytes: DefaultAdminMaxHeaderBytes,
		},
		RequestHeaders: HeaderLimits{MaxCount: DefaultMaxRequestHeaders, MaxBytes: DefaultMaxRequestHeaderBytes},
		Failover:       FailoverLimits{MaxHeld: DefaultMaxHeld, MaxHeldPerPartition: DefaultMaxHeldPerPartition},
	}
}

// parseLimits reads the limits section, reporting every value out of its range.
func parseLimits(f *limitsFile, errs *Errors, at func(string) int) Limits {
	l := DefaultLimits()
	atLeast := func(field string, v *int, dst *int, least, most int) {
		if v == nil {
			return
		}
		*dst = *v
		switch {
		case *v < least:
			errs.Add(field, at(field), "%d is below %d", *v, least)
		case *v > most:
			errs.Add(field, at(field), "%d is above the maximum of %d", *v, most)
		}
	}
	streams := func(field string, v *int, dst *uint32) {
		n := int(*dst)
		atLeast(field, v, &n, 1, math.MaxInt32)
		if n >= 1 && n <= math.MaxInt32 {
			*dst = uint32(n)
		}
	}
	atLeast("limits.extproc.maxConnections", f.ExtProc.MaxConnections, &l.ExtProc.MaxConnections, 1, math.MaxInt32)
	streams("limits.extproc.maxConcurrentStreams", f.ExtProc.MaxConcurrentStreams, &l.ExtProc.MaxConcurrentStreams)
	if v := f.ExtProc.StreamIdleTimeout; v != nil {
		l.ExtProc.StreamIdleTimeout = *v
		if *v < MinStreamIdleTimeout {
			errs.Add("limits.extproc.streamIdleTimeout", at("limits.extproc.streamIdleTimeout"),
				"%v is below %v: a stream waits for the client's body and the upstream's answer between its messages", *v, MinStreamIdleTimeout)
		}
	}
	atLeast("limits.extproc.maxEmptyResets", f.ExtProc.MaxEmptyResets, &l.ExtProc.MaxEmptyResets, 1, math.MaxInt32)
	atLeast("limits.xds.maxConnections", f.XDS.MaxConnections, &l.XDS.MaxConnections, 1, math.MaxInt32)
	streams("limits.xds.maxConcurrentStreams", f.XDS.MaxConcurrentStreams, &l.XDS.MaxConcurrentStreams)
	atLeast("limits.admin.maxConnections", f.Admin.MaxConnections, &l.Admin.MaxConnections, 1, math.MaxInt32)
	positive(errs, at, "limits.admin.readTimeout", f.Admin.ReadTimeout, &l.Admin.ReadTimeout)
	positive(errs, at, "limits.admin.writeTimeout", f.Admin.WriteTimeout, &l.Admin.WriteTimeout)
	positive(errs, at, "limits.admin.idleTimeout", f.Admin.IdleTimeout, &l.Admin.IdleTimeout)
	atLeast("limits.admin.maxHeaderBytes", f.Admin.MaxHeaderBytes, &l.Admin.MaxHeaderBytes, 1, math.MaxInt32)
	atLeast("limits.requestHeaders.maxCount", f.RequestHeaders.MaxCount, &l.RequestHeaders.MaxCount, 1, math.MaxInt32)
	atLeast("limits.requestHeaders.maxBytes", f.RequestHeaders.MaxBytes, &l.RequestHeaders.MaxBytes, 1, MaxRequestHeaderBytesLimit)
	atLeast("limits.failover.maxHeld", f.Failover.MaxHeld, &l.Failover.MaxHeld, 1, MaxHeldLimit)
	atLeast("limits.failover.maxHeldPerPartition", f.Failover.MaxHeldPerPartition, &l.Failover.MaxHeldPerPartition, 1, MaxHeldLimit)
	return l
}
