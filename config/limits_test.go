package config_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
)

func TestLimitsDefaults(t *testing.T) {
	c := mustParse(t, "naming: {file: n.yaml}\n")
	want := config.Limits{
		ExtProc: config.ExtProcLimits{MaxConnections: 4096, MaxConcurrentStreams: 1000, StreamIdleTimeout: 30 * time.Second, MaxEmptyResets: 100},
		XDS:     config.XDSLimits{MaxConnections: 4096, MaxConcurrentStreams: 100},
		Admin: config.AdminLimits{MaxConnections: 64, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second,
			IdleTimeout: 60 * time.Second, MaxHeaderBytes: 128 << 10},
		RequestHeaders: config.HeaderLimits{MaxCount: 128, MaxBytes: 64 << 10},
		Failover:       config.FailoverLimits{MaxHeld: 1000, MaxHeldPerPartition: 250},
	}
	if !reflect.DeepEqual(c.Limits, want) {
		t.Errorf("limits = %+v, want %+v", c.Limits, want)
	}
	if !reflect.DeepEqual(config.DefaultLimits(), want) {
		t.Errorf("DefaultLimits() = %+v, want %+v", config.DefaultLimits(), want)
	}
}

func TestLimitsSettings(t *testing.T) {
	c := mustParse(t, `naming: {file: n.yaml}
limits:
  extproc: {maxConnections: 10, maxConcurrentStreams: 20, streamIdleTimeout: 1s, maxEmptyResets: 7}
  xds: {maxConnections: 3, maxConcurrentStreams: 1}
  admin: {maxConnections: 2, readTimeout: 1s, writeTimeout: 2s, idleTimeout: 3s, maxHeaderBytes: 4096}
  requestHeaders: {maxCount: 1, maxBytes: 8388608}
  failover: {maxHeld: 40, maxHeldPerPartition: 1}
`)
	want := config.Limits{
		ExtProc:        config.ExtProcLimits{MaxConnections: 10, MaxConcurrentStreams: 20, StreamIdleTimeout: time.Second, MaxEmptyResets: 7},
		XDS:            config.XDSLimits{MaxConnections: 3, MaxConcurrentStreams: 1},
		Admin:          config.AdminLimits{MaxConnections: 2, ReadTimeout: time.Second, WriteTimeout: 2 * time.Second, IdleTimeout: 3 * time.Second, MaxHeaderBytes: 4096},
		RequestHeaders: config.HeaderLimits{MaxCount: 1, MaxBytes: config.MaxRequestHeaderBytesLimit},
		Failover:       config.FailoverLimits{MaxHeld: 40, MaxHeldPerPartition: 1},
	}
	if !reflect.DeepEqual(c.Limits, want) {
		t.Errorf("limits = %+v, want %+v", c.Limits, want)
	}
	// A section that sets some fields keeps the defaults of the others.
	c = mustParse(t, "naming: {file: n.yaml}\nlimits: {extproc: {maxConcurrentStreams: 5}}\n")
	want = config.DefaultLimits()
	want.ExtProc.MaxConcurrentStreams = 5
	if !reflect.DeepEqual(c.Limits, want) {
		t.Errorf("limits = %+v, want %+v", c.Limits, want)
	}
}

func TestLimitsErrors(t *testing.T) {
	const n = "naming: {file: n.yaml}\n"
	cases := []struct {
		name string
		doc  string
		want []wantErr
	}{
		{"unknown section", n + "limits:\n  grpc: {} #a\n",
			[]wantErr{{"limits.grpc", "known fields here: extproc, xds, admin, requestHeaders", "#a"}}},
		{"unknown extproc field", n + "limits:\n  extproc: {maxStreams: 1} #a\n",
			[]wantErr{{"limits.extproc.maxStreams", "known fields here: maxConnections, maxConcurrentStreams, streamIdleTimeout, maxEmptyResets", "#a"}}},
		{"no connections", n + "limits:\n  extproc:\n    maxConnections: 0 #a\n",
			[]wantErr{{"limits.extproc.maxConnections", "0 is below 1", "#a"}}},
		{"no streams", n + "limits:\n  extproc:\n    maxConcurrentStreams: 0 #a\n",
			[]wantErr{{"limits.extproc.maxConcurrentStreams", "0 is below 1", "#a"}}},
		{"more streams than HTTP/2 has", n + "limits:\n  xds:\n    maxConcurrentStreams: 2147483648 #a\n",
			[]wantErr{{"limits.xds.maxConcurrentStreams", "2147483648 is above the maximum of 2147483647", "#a"}}},
		{"no empty resets", n + "limits:\n  extproc:\n    maxEmptyResets: 0 #a\n",
			[]wantErr{{"limits.extproc.maxEmptyResets", "0 is below 1", "#a"}}},
		{"short idle timeout", n + "limits:\n  extproc:\n    streamIdleTimeout: 200ms #a\n",
			[]wantErr{{"limits.extproc.streamIdleTimeout", "200ms is below 1s", "#a"}}},
		{"idle timeout without unit", n + "limits:\n  extproc:\n    streamIdleTimeout: 30 #a\n",
			[]wantErr{{"limits.extproc.streamIdleTimeout", "into time.Duration", "#a"}}},
		{"admin timeouts", n + "limits:\n  admin:\n    readTimeout: 0s #a\n    writeTimeout: -1s #b\n    idleTimeout: 0s #c\n    maxHeaderBytes: 0 #d\n    maxConnections: -1 #e\n",
			[]wantErr{
				{"limits.admin.readTimeout", "0s must be above 0", "#a"},
				{"limits.admin.writeTimeout", "-1s must be above 0", "#b"},
				{"limits.admin.idleTimeout", "0s must be above 0", "#c"},
				{"limits.admin.maxHeaderBytes", "0 is below 1", "#d"},
				{"limits.admin.maxConnections", "-1 is below 1", "#e"},
			}},
		{"request headers", n + "limits:\n  requestHeaders:\n    maxCount: 0 #a\n    maxBytes: 8388609 #b\n",
			[]wantErr{
				{"limits.requestHeaders.maxCount", "0 is below 1", "#a"},
				{"limits.requestHeaders.maxBytes", "8388609 is above the maximum of 8388608", "#b"},
			}},
		{"held requests", n + "limits:\n  failover:\n    maxHeld: 0 #a\n    maxHeldPerPartition: 1000001 #b\n",
			[]wantErr{
				{"limits.failover.maxHeld", "0 is below 1", "#a"},
				{"limits.failover.maxHeldPerPartition", "1000001 is above the maximum of 1000000", "#b"},
			}},
		{"unknown failover field", n + "limits:\n  failover: {maxWaiting: 1} #a\n",
			[]wantErr{{"limits.failover.maxWaiting", "known fields here: maxHeld, maxHeldPerPartition", "#a"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkErrors(t, tc.doc, tc.want) })
	}
}
