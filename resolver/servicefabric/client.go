package servicefabric

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
)

// Defaults and limits of ClientOptions.
const (
	// DefaultAPIVersion is the REST api-version sent with every call. 6.0 is the version the
	// three operations were documented at, and a cluster accepts it from every later runtime.
	DefaultAPIVersion = config.DefaultSFAPIVersion
	// DefaultTimeout bounds one request. The caller's context bounds the call as a whole,
	// retries included: on the request path that is the cache's resolveTimeout.
	DefaultTimeout = config.DefaultSFTimeout
	// DefaultRetries is how many times a failed request is repeated when the configuration
	// does not say.
	DefaultRetries = config.DefaultSFRetries
	// MaxRetries bounds Retries, so that a misconfiguration cannot turn a gateway outage into
	// a storm of requests.
	MaxRetries = 10
	// DefaultMaxConcurrent is how many requests may be in flight to the gateway at once.
	DefaultMaxConcurrent = config.DefaultSFMaxConcurrent
	// DefaultBackoffBase and DefaultBackoffMax shape the wait before a retry: the n-th retry
	// waits between half and all of min(base*2^(n-1), max).
	DefaultBackoffBase = 50 * time.Millisecond
	DefaultBackoffMax  = time.Second

	// maxResponseBytes bounds a gateway answer read into memory. Pages of partitions and
	// replicas are far smaller; a larger body means something other than the gateway answered.
	maxResponseBytes = 8 << 20
)

// ClientOptions configures a Client. The names in validation errors are those of the
// naming.servicefabric section of partroute.yaml.
type ClientOptions struct {
	// Endpoint is the gateway's base URL, such as https://mycluster.example.com:19080. A path
	// prefix is kept, for a gateway published behind a reverse proxy.
	Endpoint string
	// APIVersion is sent as api-version; "" means DefaultAPIVersion.
	APIVersion string
	// TLS secures an https endpoint. It must be empty for an http endpoint.
	TLS TLSOptions
	// Timeout bounds each request; 0 means DefaultTimeout. It is also sent to the gateway as
	// its own timeout parameter, in whole seconds rounded up.
	Timeout time.Duration
	// Retries is how many times a request that failed with a 5xx status, a timeout or a
	// connection error is repeated, from 0 to MaxRetries. A 4xx answer is never repeated.
	// The configuration loader applies DefaultRetries when the field is absent.
	Retries int
	// BackoffBase and BackoffMax shape the jittered exponential wait between attempts; 0 means
	// DefaultBackoffBase and DefaultBackoffMax.
	BackoffBase, BackoffMax time.Duration
	// MaxConcurrent bounds the requests in flight at once; 0 means DefaultMaxConcurrent.
	// Requests beyond it wait for a slot, within their context.
	MaxConcurrent int
	// HTTPClient, when set, sends every request instead of a client built from TLS; it is
	// meant for tests, and setting TLS as well is an error.
	HTTPClient *http.Client
	// Metrics receives the client's collectors; nil means none.
	Metrics prometheus.Registerer
	// Wait pauses before a retry and returns early with ctx's error when ctx ends. nil means a
	// timer; tests inject their own so that no test waits on the clock.
	Wait func(ctx context.Context, d time.Duration) error
	// Jitter returns a number in [0, 1) that spreads retries out; nil means math/rand/v2.
	Jitter func() float64
}

// Client calls the Service Fabric HTTP gateway. It is safe for concurrent use.
type Client struct {
	base       string // scheme://host[:port][/prefix], without a trailing slash
	apiVersion string
	http       *http.Client
	timeout    time.Duration
	timeoutArg string // Timeout in whole seconds, for the gateway's timeout parameter
	retries    int
	backoff    [2]time.Duration
	sem        chan struct{}
	wait       func(context.Context, time.Duration) error
	jitter     func() float64
	m          clientMetrics
}

// NewClient validates opts and builds a client. All invalid options are reported together.
func NewClient(opts ClientOptions) (*Client, error) {
	const prefix = "naming.servicefabric"
	var errs []error
	c := &Client{
		apiVersion: opts.APIVersion,
		timeout:    opts.Timeout,
		retries:    opts.Retries,
		backoff:    [2]time.Duration{opts.BackoffBase, opts.BackoffMax},
		wait:       opts.Wait,
		jitter:     opts.Jitter,
	}
	if c.apiVersion == "" {
		c.apiVersion = DefaultAPIVersion
	} else if !validAPIVersion(c.apiVersion) {
		errs = append(errs, fmt.Errorf("%s.apiVersion: %s is not a version such as 6.0", prefix, quote(c.apiVersion)))
	}
	if c.timeout == 0 {
		c.timeout = DefaultTimeout
	} else if c.timeout < 0 {
		errs = append(errs, fmt.Errorf("%s.timeout: %s is below 0", prefix, c.timeout))
	}
	c.timeoutArg = strconv.FormatInt(int64((c.timeout+time.Second-1)/time.Second), 10)
	if c.retries < 0 || c.retries > MaxRetries {
		errs = append(errs, fmt.Errorf("%s.retries: %d is outside 0 to %d", prefix, c.retries, MaxRetries))
	}
	if c.backoff[0] == 0 {
		c.backoff[0] = DefaultBackoffBase
	}
	if c.backoff[1] == 0 {
		c.backoff[1] = DefaultBackoffMax
	}
	if c.backoff[0] < 0 || c.backoff[1] < c.backoff[0] {
		errs = append(errs, fmt.Errorf("%s: backoff base %s and max %s must satisfy 0 < base <= max", prefix, c.backoff[0], c.backoff[1]))
	}
	n := opts.MaxConcurrent
	if n == 0 {
		n = DefaultMaxConcurrent
	} else if n < 0 {
		errs = append(errs, fmt.Errorf("%s.maxConcurrent: %d is below 1", prefix, n))
		n = 1
	}
	c.sem = make(chan struct{}, n)
	if c.wait == nil {
		c.wait = timerWait
	}
	if c.jitter == nil {
		c.jitter = rand.Float64
	}

	u, err := url.Parse(opts.Endpoint)
	switch {
	case opts.Endpoint == "":
		errs = append(errs, fmt.Errorf("%s.endpoint: missing; it is the cluster's HTTP gateway, such as https://mycluster:19080", prefix))
	case err != nil:
		errs = append(errs, fmt.Errorf("%s.endpoint: %w", prefix, err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("%s.endpoint: %s is not an http or https URL", prefix, quote(opts.Endpoint)))
	case u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("%s.endpoint: %s must be scheme://host[:port][/path], without user, query or fragment", prefix, quote(opts.Endpoint)))
	default:
		c.base = u.Scheme + "://" + u.Host + strings.TrimSuffix(u.EscapedPath(), "/")
		if u.Scheme == "http" && !opts.TLS.empty() {
			errs = append(errs, fmt.Errorf("%s.tls: set for %s, which is not https", prefix, quote(opts.Endpoint)))
		}
	}

	switch {
	case opts.HTTPClient != nil && !opts.TLS.empty():
		errs = append(errs, fmt.Errorf("%s.tls: an injected HTTP client carries its own TLS settings", prefix))
	case opts.HTTPClient != nil:
		c.http = opts.HTTPClient
	default:
		tlsCfg, err := buildTLS(opts.TLS, prefix+".tls")
		if err != nil {
			errs = append(errs, err)
		} else {
			c.http = newHTTPClient(tlsCfg, n)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	m, err := newClientMetrics(opts.Metrics)
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

func newHTTPClient(tlsCfg *tls.Config, conns int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = tlsCfg
	// Keep a connection per possible concurrent request, so that a burst of resolutions does
	// not pay a TLS handshake each.
	t.MaxIdleConnsPerHost = conns
	t.MaxConnsPerHost = conns
	return &http.Client{
		Transport: t,
		// A gateway never redirects; following one could send the client certificate's
		// session somewhere else, so a redirect surfaces as an error instead.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func validAPIVersion(v string) bool {
	major, minor, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	for _, part := range []string{major, minor} {
		if part == "" || len(part) > 4 {
			return false
		}
		for i := 0; i < len(part); i++ {
			if part[i] < '0' || part[i] > '9' {
				return false
			}
		}
	}
	return true
}

func timerWait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// get sends GET base+path?api-version=..&timeout=..&query with bounded retries and hands the
// body of a 200 answer to decode. op and target name the call in errors and metrics; a decode
// failure becomes a *DecodeError and is not retried, since the same answer would come back.
func (c *Client) get(ctx context.Context, op, target, path, query string, decode func([]byte) error) error {
	u := c.base + path + "?api-version=" + c.apiVersion + "&timeout=" + c.timeoutArg
	if query != "" {
		u += "&" + query
	}
	var last *GatewayError
	for attempt := 1; ; attempt++ {
		if attempt > 1 {
			c.m.retries.WithLabelValues(op).Inc()
			if err := c.wait(ctx, c.backoffFor(attempt-1)); err != nil {
				return last
			}
		}
		body, gerr := c.attempt(ctx, op, target, u)
		if gerr == nil {
			if err := decode(body); err != nil {
				c.m.requests.WithLabelValues(op, "malformed").Inc()
				return &DecodeError{Op: op, Target: target, Err: err}
			}
			c.m.requests.WithLabelValues(op, "ok").Inc()
			return nil
		}
		gerr.Attempts = attempt
		last = gerr
		c.m.requests.WithLabelValues(op, outcome(gerr)).Inc()
		// The caller's context ending is not a failure of the gateway: stop at once.
		if ctx.Err() != nil || !gerr.Temporary() || attempt > c.retries {
			return gerr
		}
	}
}

// attempt sends one request under its own timeout and returns the body of a 200 answer.
func (c *Client) attempt(ctx context.Context, op, target, u string) ([]byte, *GatewayError) {
	select {
	case c.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, &GatewayError{Op: op, Target: target, Err: fmt.Errorf("waiting for one of %d concurrent gateway calls: %w", cap(c.sem), ctx.Err())}
	}
	defer func() { <-c.sem }()

	actx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, u, http.NoBody)
	if err != nil {
		return nil, &GatewayError{Op: op, Target: target, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, &GatewayError{Op: op, Target: target, Err: transportError(ctx, actx, err, c.timeout)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, &GatewayError{Op: op, Target: target, Err: transportError(ctx, actx, err, c.timeout)}
	}
	if len(body) > maxResponseBytes {
		return nil, &GatewayError{Op: op, Target: target, StatusCode: resp.StatusCode, Message: fmt.Sprintf("answer exceeds %d bytes", maxResponseBytes)}
	}
	if resp.StatusCode == http.StatusOK {
		return body, nil
	}
	e := &GatewayError{Op: op, Target: target, StatusCode: resp.StatusCode}
	var fe struct {
		Error *struct {
			Code    string `json:"Code"`
			Message string `json:"Message"`
		} `json:"Error"`
	}
	if json.Unmarshal(body, &fe) == nil && fe.Error != nil && fe.Error.Code != "" {
		e.Code, e.Message = quoteCode(fe.Error.Code), quote(fe.Error.Message)
	} else if len(body) > 0 {
		e.Message = quote(string(body))
	}
	return nil, e
}

// quoteCode keeps a FABRIC_E_ code readable when it is one, and quotes it otherwise.
func quoteCode(code string) string {
	for i := 0; i < len(code); i++ {
		if c := code[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return quote(code)
		}
	}
	if len(code) > 80 {
		return quote(code)
	}
	return code
}

// transportError says plainly which deadline a request ran into, which the http package
// reports only as a context error: the caller's (the call is abandoned) or the request's own
// timeout (the gateway was too slow, and the request may be retried).
func transportError(ctx, actx context.Context, err error, timeout time.Duration) error {
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("abandoned: %w", ctx.Err())
	case errors.Is(actx.Err(), context.DeadlineExceeded):
		return fmt.Errorf("no answer within %s: %w", timeout, context.DeadlineExceeded)
	}
	return err
}

// permanentTransport reports transport failures that a retry cannot mend: the gateway's
// certificate failed verification, or the gateway ended the handshake with a TLS alert, which is
// how it refuses a missing or unknown client certificate.
func permanentTransport(err error) bool {
	var pin *ThumbprintError
	var verify *tls.CertificateVerificationError
	var alert tls.AlertError
	var op *net.OpError
	return errors.As(err, &pin) || errors.As(err, &verify) || errors.As(err, &alert) ||
		errors.As(err, &op) && op.Op == "remote error"
}

// backoffFor returns the wait before retry n (from 1): a random duration between half and all
// of min(base*2^(n-1), max), so that many partroute instances retrying together spread out.
func (c *Client) backoffFor(n int) time.Duration {
	d := c.backoff[1]
	if n-1 < 30 {
		if e := c.backoff[0] << (n - 1); e > 0 && e < d {
			d = e
		}
	}
	half := d / 2
	return half + time.Duration(c.jitter()*float64(d-half))
}

func outcome(e *GatewayError) string {
	switch {
	case e.StatusCode >= 500:
		return "server_error"
	case e.StatusCode != 0:
		return "client_error"
	case errors.Is(e.Err, context.DeadlineExceeded):
		return "timeout"
	default:
		return "transport_error"
	}
}

type clientMetrics struct {
	requests *prometheus.CounterVec
	retries  *prometheus.CounterVec
}

func newClientMetrics(reg prometheus.Registerer) (clientMetrics, error) {
	m := clientMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_servicefabric_gateway_requests_total",
			Help: "Requests to the Service Fabric HTTP gateway by operation and outcome (ok, malformed, client_error, server_error, timeout, transport_error); retries count each.",
		}, []string{"op", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_servicefabric_gateway_retries_total",
			Help: "Requests to the Service Fabric HTTP gateway that repeated a failed one, by operation.",
		}, []string{"op"}),
	}
	for _, op := range []string{opResolve, opPartitions, opReplicas} {
		m.retries.WithLabelValues(op)
		for _, r := range []string{"ok", "malformed", "client_error", "server_error", "timeout", "transport_error"} {
			m.requests.WithLabelValues(op, r)
		}
	}
	if reg != nil {
		if err := reg.Register(m.requests); err != nil {
			return m, fmt.Errorf("servicefabric: registering metrics: %w", err)
		}
		if err := reg.Register(m.retries); err != nil {
			reg.Unregister(m.requests)
			return m, fmt.Errorf("servicefabric: registering metrics: %w", err)
		}
	}
	return m, nil
}
