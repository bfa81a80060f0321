package deploy

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
)

// The image's layout, as the Containerfile and docs/deploy.md describe it.
const (
	imageBinary = "/partroute"
	imageConfig = "/etc/partroute/partroute.yaml"
	imageNaming = "/etc/partroute/naming.yaml"
)

// containerConfig is the container variant of the example configuration, in the repository.
func containerConfig(tb testing.TB) string {
	tb.Helper()
	return filepath.Join(testkit.RepoRoot(tb), "deploy", "container", "partroute.yaml")
}

// imageConfigJSON is the part of `podman image inspect` the test checks.
type imageConfigJSON struct {
	Os, Architecture string
	Config           struct {
		User         string
		Entrypoint   []string
		Cmd          []string
		ExposedPorts map[string]struct{}
		Labels       map[string]string
	}
}

// tarEntry is one file of an exported image filesystem.
type tarEntry struct {
	typ      byte
	mode     os.FileMode
	uid, gid int
}

// TestImage builds the image with `make image`, exports its filesystem, and checks that it
// holds a working, static partroute that runs as a numeric non-root user, with the shipped
// files where docs/deploy.md says, and nothing else that runs: no shell. Containers cannot be
// run here, so the exported binary is run on the host instead, on the files of the image.
func TestImage(t *testing.T) {
	podman, err := exec.LookPath("podman")
	if err != nil {
		t.Fatal("podman is not installed: run `make deps` (Debian package podman)")
	}
	makeBin, err := exec.LookPath("make")
	if err != nil {
		t.Fatal("make is not installed: the image is built by `make image`")
	}
	suffix := randomHex(t)
	version := "test-" + suffix
	image := "localhost/partroute-test:" + suffix
	buildContext := t.TempDir()
	cmd := exec.Command(makeBin, "-C", testkit.RepoRoot(t), "image", "IMAGE="+image, "IMAGE_CONTEXT="+buildContext, "VERSION="+version)
	out, err := cmd.CombinedOutput()
	// The image is removed however the build ended: a failed build may still have tagged it.
	t.Cleanup(func() { _ = exec.Command(podman, "rmi", "--force", image).Run() })
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}

	inspectOut := podmanOut(t, podman, "image", "inspect", "--format", "json", image)
	var inspected []imageConfigJSON
	if err := json.Unmarshal(inspectOut, &inspected); err != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect: %v (%d images)\n%s", err, len(inspected), inspectOut)
	}
	img := inspected[0]
	checkImageConfig(t, img, version)

	root, entries := exportImage(t, podman, image)
	checkImageFiles(t, entries)
	checkStatic(t, filepath.Join(root, imageBinary))
	checkUserEntry(t, root, img.Config.User)

	// The exported binary is the image's partroute: it reports the version it was built with
	// and accepts the configuration and naming view the image ships, as they are in the image.
	run := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(filepath.Join(root, imageBinary), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("partroute %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	if got, want := run("version"), "partroute "+version+"\n"; got != want {
		t.Errorf("partroute version = %q, want %q", got, want)
	}
	summary := run("validate", "-config", filepath.Join(root, imageConfig))
	for _, svc := range []string{"users", "sessions", "regions", "settings"} {
		if !strings.Contains(summary, svc+": match") {
			t.Errorf("partroute validate on the image's configuration does not summarise service %q:\n%s", svc, summary)
		}
	}

	// The image's files are the repository's, byte for byte.
	for inImage, inRepo := range map[string]string{
		imageConfig: containerConfig(t),
		imageNaming: testkit.Example(t, "naming.yaml"),
	} {
		if got, want := readFile(t, filepath.Join(root, inImage)), readFile(t, inRepo); !bytes.Equal(got, want) {
			t.Errorf("%s in the image differs from %s", inImage, inRepo)
		}
	}

	// The ports the image exposes are the ones its configuration listens on, on every
	// interface.
	cfg, err := config.Load(filepath.Join(root, imageConfig))
	if err != nil {
		t.Fatal(err)
	}
	var ports []string
	for _, addr := range []string{cfg.Listen.ExtProc, cfg.Listen.Admin, cfg.Listen.XDS} {
		if addr == "" {
			continue // no xDS listener
		}
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if host != "0.0.0.0" {
			t.Errorf("the image's configuration listens on %s, want 0.0.0.0 (every interface)", addr)
		}
		ports = append(ports, port+"/tcp")
	}
	var exposed []string
	for p := range img.Config.ExposedPorts {
		exposed = append(exposed, p)
	}
	slices.Sort(ports)
	slices.Sort(exposed)
	if !slices.Equal(exposed, ports) {
		t.Errorf("the image exposes %v, its configuration listens on %v", exposed, ports)
	}
}

func checkImageConfig(t *testing.T, img imageConfigJSON, version string) {
	t.Helper()
	// make image builds for the machine's architecture unless told otherwise.
	if img.Os != "linux" || img.Architecture != runtime.GOARCH {
		t.Errorf("image platform %s/%s, want linux/%s", img.Os, img.Architecture, runtime.GOARCH)
	}
	uid, gid, ok := strings.Cut(img.Config.User, ":")
	if !ok {
		t.Errorf("image user %q, want uid:gid, by number", img.Config.User)
	}
	for _, id := range []string{uid, gid} {
		n, err := strconv.Atoi(id)
		if err != nil || n == 0 {
			t.Errorf("image user %q: %q is not a non-root numeric id", img.Config.User, id)
		}
	}
	if want := []string{imageBinary}; !slices.Equal(img.Config.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", img.Config.Entrypoint, want)
	}
	if want := []string{"serve", "-config", imageConfig}; !slices.Equal(img.Config.Cmd, want) {
		t.Errorf("command %q, want %q", img.Config.Cmd, want)
	}
	license := string(readFile(t, filepath.Join(testkit.RepoRoot(t), "LICENSE")))
	if !strings.Contains(license, "Apache License") || !strings.Contains(license, "Version 2.0") {
		t.Fatal("LICENSE is not the Apache License 2.0: the image's licenses label says it is")
	}
	// The source is the repository of the module.
	module, _, _ := strings.Cut(strings.TrimPrefix(string(readFile(t, filepath.Join(testkit.RepoRoot(t), "go.mod"))), "module "), "\n")
	for label, want := range map[string]string{
		"org.opencontainers.image.title":    "partroute",
		"org.opencontainers.image.version":  version,
		"org.opencontainers.image.licenses": "Apache-2.0",
		"org.opencontainers.image.source":   "https://" + module,
	} {
		if got := img.Config.Labels[label]; got != want {
			t.Errorf("label %s = %q, want %q", label, got, want)
		}
	}
	if img.Config.Labels["org.opencontainers.image.revision"] == "" {
		t.Error("label org.opencontainers.image.revision is empty")
	}
}

// exportImage creates a container of image (without running it), exports its filesystem, and
// unpacks the regular files into a temporary directory. It returns the directory and every
// entry of the export, by path from the filesystem's root.
func exportImage(t *testing.T, podman, image string) (string, map[string]tarEntry) {
	t.Helper()
	id := strings.TrimSpace(string(podmanOut(t, podman, "create", image)))
	t.Cleanup(func() { _ = exec.Command(podman, "rm", "--force", id).Run() })
	tarPath := filepath.Join(t.TempDir(), "image.tar")
	podmanOut(t, podman, "export", "--output", tarPath, id)
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	root := t.TempDir()
	entries := map[string]tarEntry{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := path.Clean("/" + h.Name)
		entries[name] = tarEntry{typ: h.Typeflag, mode: h.FileInfo().Mode(), uid: h.Uid, gid: h.Gid}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		// path.Clean of a rooted path cannot climb above the root.
		dst := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			t.Fatal(err)
		}
		w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o700)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return root, entries
}

// checkImageFiles checks that the image holds the shipped files, owned by root and readable
// (the binary executable) by its user, and that the binary is the only thing in it that can be
// executed: no shell, no other program.
func checkImageFiles(t *testing.T, entries map[string]tarEntry) {
	t.Helper()
	for _, name := range []string{imageBinary, imageConfig, imageNaming, "/etc/passwd", "/etc/group"} {
		e, ok := entries[name]
		switch {
		case !ok:
			t.Errorf("the image has no %s", name)
		case e.typ != tar.TypeReg:
			t.Errorf("%s is not a regular file (type %q)", name, e.typ)
		case e.uid != 0 || e.gid != 0:
			t.Errorf("%s is owned by %d:%d, want root (0:0), so that partroute cannot change it", name, e.uid, e.gid)
		case e.mode.Perm()&0o022 != 0:
			t.Errorf("%s has mode %v: writable by others than root", name, e.mode)
		case e.mode.Perm()&0o004 == 0:
			t.Errorf("%s has mode %v: the image's user cannot read it", name, e.mode)
		}
	}
	if e := entries[imageBinary]; e.mode.Perm()&0o001 == 0 {
		t.Errorf("%s has mode %v: the image's user cannot run it", imageBinary, e.mode)
	}
	for _, shell := range []string{"/bin/sh", "/bin/bash", "/bin/busybox", "/usr/bin/sh"} {
		if _, ok := entries[shell]; ok {
			t.Errorf("the image has a shell, %s", shell)
		}
	}
	for name, e := range entries {
		if name != imageBinary && (e.typ == tar.TypeReg || e.typ == tar.TypeSymlink || e.typ == tar.TypeLink) && e.mode.Perm()&0o111 != 0 {
			t.Errorf("%s is executable (mode %v): the image should run nothing but %s", name, e.mode, imageBinary)
		}
	}
}

// checkStatic checks that the binary needs no dynamic loader: a scratch image has no C
// library, and a binary built with cgo would run on the host and fail in the image.
func checkStatic(t *testing.T, binary string) {
	t.Helper()
	f, err := elf.Open(binary)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s is dynamically linked (it has an ELF interpreter): build it with CGO_ENABLED=0", imageBinary)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s imports libraries %v (%v): build it with CGO_ENABLED=0", imageBinary, libs, err)
	}
}

// checkUserEntry checks that the image's /etc/passwd names its numeric user, so that tools that
// show user names have one.
func checkUserEntry(t *testing.T, root, user string) {
	t.Helper()
	uid, gid, _ := strings.Cut(user, ":")
	for _, line := range strings.Split(string(readFile(t, filepath.Join(root, "etc", "passwd"))), "\n") {
		fields := strings.Split(line, ":")
		if len(fields) == 7 && fields[2] == uid && fields[3] == gid {
			return
		}
	}
	t.Errorf("the image's /etc/passwd has no entry for its user %s", user)
}

// TestContainerConfigIsTheExampleOnEveryInterface checks that deploy/container/partroute.yaml
// is the example configuration but for the listen addresses, which are the example's ports on
// 0.0.0.0: the two files are kept in step by this test.
func TestContainerConfigIsTheExampleOnEveryInterface(t *testing.T) {
	// body drops the leading comment lines (each file says what it is) and the spacing that
	// aligns comments, and puts the listeners back on loopback.
	body := func(p string) []string {
		var out []string
		header := true
		for _, line := range strings.Split(string(readFile(t, p)), "\n") {
			if header && strings.HasPrefix(line, "#") {
				continue
			}
			header = false
			indent := line[:len(line)-len(strings.TrimLeft(line, " "))]
			out = append(out, indent+strings.Join(strings.Fields(strings.ReplaceAll(line, "0.0.0.0:", "127.0.0.1:")), " "))
		}
		return out
	}
	got, want := body(containerConfig(t)), body(testkit.Example(t, "partroute.yaml"))
	if !slices.Equal(got, want) {
		t.Errorf("deploy/container/partroute.yaml is not the example with 0.0.0.0 for 127.0.0.1:\n%s\nexample:\n%s",
			strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	cfg, err := config.Load(containerConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	example, err := config.Load(testkit.Example(t, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []struct{ field, got, example string }{
		{"listen.extproc", cfg.Listen.ExtProc, example.Listen.ExtProc},
		{"listen.admin", cfg.Listen.Admin, example.Listen.Admin},
	} {
		_, examplePort, _ := net.SplitHostPort(l.example)
		if want := net.JoinHostPort("0.0.0.0", examplePort); l.got != want {
			t.Errorf("%s = %q, want %q", l.field, l.got, want)
		}
	}
}

func podmanOut(t *testing.T, podman string, args ...string) []byte {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(podman, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return out
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func randomHex(t *testing.T) string {
	t.Helper()
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
