package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/xds"
)

// adminMux serves /metrics, /healthz (the process is up), /readyz (a valid configuration and
// naming view are loaded and partroute is not draining), /debug/resolve, /debug/naming and,
// with xDS, /debug/xds.
func adminMux(reg *prometheus.Registry, res *resolver.Resolver, ready *atomic.Bool, src NamingSource, xdsSrv *xds.Server) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/debug/resolve", func(w http.ResponseWriter, r *http.Request) {
		// The query's size is checked before it is parsed: url.ParseQuery gives up on a query
		// of too many parameters and returns none, which would read as a question without a
		// url.
		if msg := checkResolveQuery(r.URL.RawQuery); msg != "" {
			http.Error(w, msg, http.StatusRequestURITooLong)
			return
		}
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad request: query: %v", err), http.StatusBadRequest)
			return
		}
		method, target := q.Get("method"), q.Get("url")
		if method == "" {
			method = http.MethodGet
		}
		if target == "" {
			http.Error(w, "url is required: /debug/resolve?method=GET&url=http://host/path&header=name:value", http.StatusBadRequest)
			return
		}
		// "@file" reads a file in the CLI; over HTTP it is refused before anything is opened,
		// so that a query can never make partroute read (or block on) a file of its host.
		body := q.Get("body")
		if strings.HasPrefix(body, "@") {
			http.Error(w, "bad request: body must be inline, not @file", http.StatusBadRequest)
			return
		}
		var data []byte
		if body != "" {
			data = []byte(body)
		}
		req, err := BuildRequest(method, target, q["header"], data)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad request: %v", err), http.StatusBadRequest)
			return
		}
		writeJSON(w, res.Resolve(r.Context(), req).Report())
	})
	if src != nil {
		mux.HandleFunc("/debug/naming", func(w http.ResponseWriter, _ *http.Request) {
			current, detail := src.Status()
			writeJSON(w, map[string]any{"source": res.State().Config.Naming.Source, "current": current, "detail": detail})
		})
	}
	if xdsSrv != nil {
		mux.HandleFunc("/debug/xds", func(w http.ResponseWriter, _ *http.Request) {
			writeJSON(w, map[string]any{"serving": xdsSrv.Current(), "acknowledged": xdsSrv.Acked()})
		})
	}
	return mux
}

// adminReadHeaderTimeout bounds the time a client of the admin listener may take to send a
// request's headers.
const adminReadHeaderTimeout = 5 * time.Second

// adminServer is the admin listener's HTTP server, with the limits of l: a client that stops
// sending, stops reading or keeps a connection open without asking anything loses its
// connection.
func adminServer(h http.Handler, l config.AdminLimits) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: min(adminReadHeaderTimeout, l.ReadTimeout),
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// The bounds of a /debug/resolve query. A question about one request needs a few parameters
// and as many headers as Envoy lets a request have by default (max_headers_count, 100); the
// size leaves room for an inline body of tens of KiB.
const (
	maxResolveQueryBytes   = 64 << 10
	maxResolveParams       = 128
	maxResolveHeaderParams = 100
)

// checkResolveQuery returns why a /debug/resolve query is refused as too large, or "". It
// counts without parsing, so that the cost of refusing does not grow with the query.
func checkResolveQuery(raw string) string {
	if len(raw) > maxResolveQueryBytes {
		return fmt.Sprintf("query too large: %d bytes, at most %d", len(raw), maxResolveQueryBytes)
	}
	if raw == "" {
		return ""
	}
	// Pairs are counted as url.ParseQuery counts them, empty ones included.
	params, headers := strings.Count(raw, "&")+1, 0
	for rest := raw; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, "&")
		name, _, _ := strings.Cut(pair, "=")
		if strings.ContainsAny(name, "%+") {
			if unescaped, err := url.QueryUnescape(name); err == nil {
				name = unescaped
			}
		}
		if name == "header" {
			headers++
		}
	}
	switch {
	case headers > maxResolveHeaderParams:
		return fmt.Sprintf("query too large: %d header parameters, at most %d", headers, maxResolveHeaderParams)
	case params > maxResolveParams:
		return fmt.Sprintf("query too large: %d parameters, at most %d", params, maxResolveParams)
	}
	return ""
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("content-type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
