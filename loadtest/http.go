package loadtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// HTTP protocols of the http target.
const (
	HTTP1 = "h1"
	// H2C is HTTP/2 over cleartext with prior knowledge, which Envoy's listener detects.
	H2C = "h2c"
)

// HTTPTarget sends requests through an Envoy listener.
type HTTPTarget struct {
	base      string
	authority string
	prefix    string
	client    *http.Client
	transport *http.Transport
}

// NewHTTPTarget sends to the listener at addr over HTTP/1.1 (a connection per worker, kept
// alive) or h2c (one connection, a stream per request).
func NewHTTPTarget(addr, proto string, concurrency int) (*HTTPTarget, error) {
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        concurrency,
		MaxIdleConnsPerHost: concurrency,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
	var p http.Protocols
	switch proto {
	case HTTP1:
		p.SetHTTP1(true)
	case H2C:
		p.SetUnencryptedHTTP2(true)
	default:
		return nil, fmt.Errorf("HTTP protocol %q is not %s or %s", proto, HTTP1, H2C)
	}
	tr.Protocols = &p
	return &HTTPTarget{
		base:      "http://" + addr,
		authority: ScenarioAuthority,
		prefix:    ScenarioPathPrefix,
		client:    &http.Client{Transport: tr},
		transport: tr,
	}, nil
}

// Close drops the idle connections.
func (t *HTTPTarget) Close() error {
	t.transport.CloseIdleConnections()
	return nil
}

// NewWorker returns a worker; workers share the client and its connection pool.
func (t *HTTPTarget) NewWorker() (Worker, error) {
	return &httpWorker{t: t, body: []byte(`{"name":"load test","visits":1}`)}, nil
}

type httpWorker struct {
	t    *HTTPTarget
	url  []byte
	body []byte
}

// Do sends one request and reads the whole answer, so that the connection is reused and the
// latency includes the body.
func (w *httpWorker) Do(ctx context.Context, r *Request) error {
	w.url = strconv.AppendUint(append(append(w.url[:0], w.t.base...), w.t.prefix...), r.Key, 10)
	method := http.MethodGet
	var body io.Reader
	if r.Write {
		method = http.MethodPut
		body = bytes.NewReader(w.body)
	}
	req, err := http.NewRequestWithContext(ctx, method, string(w.url), body)
	if err != nil {
		return &RequestError{Code: "bad_request", Err: err}
	}
	req.Host = w.t.authority
	req.Header = http.Header{
		"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"},
		"Accept":          {"application/json, text/plain, */*"},
		"Accept-Language": {"en-GB,en;q=0.9"},
		"Content-Type":    {"application/json"},
	}
	resp, err := w.t.client.Do(req)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return &RequestError{Code: "timeout", Err: err}
		}
		return &RequestError{Code: "transport", Err: err}
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return &RequestError{Code: "transport", Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &RequestError{Code: "http_" + strconv.Itoa(resp.StatusCode)}
	}
	return nil
}
