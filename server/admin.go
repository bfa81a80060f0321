package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

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
		q := r.URL.Query()
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

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("content-type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
