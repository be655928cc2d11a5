# keyedge — see README.md. `make demo` runs it, `make test` checks it.
GO       ?= go
BIN      := bin
FUZZTIME ?= 60s

.PHONY: build test chaos demo bench bench-million fuzz lint

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The short fuzz run in test counts executions rather than seconds: with a
# duration, Go 1.26's fuzz coordinator can fail a clean run with "context
# deadline exceeded" as the time runs out (golang/go#75804, fixed in 1.27).
#
# deploy/ is a module of its own (its offline checks link Kubernetes,
# BuildKit and go-systemd, which the product does not): ./... at the top
# leaves it out, so test and lint run in it too.
test: lint
	$(GO) test -race -count=1 ./...
	cd deploy && $(GO) test -race -count=1 ./...
	$(MAKE) fuzz FUZZTIME=3000x

# The chaos suite (internal/chaos; its doc.go lists the scenarios): real
# keyedge, keyserver and keyctl processes on 127.0.0.1, one fault each
# under a bounded load. make test runs its fast subset (the scenarios
# that do not call full(t)); make chaos runs every scenario. Each
# scenario has its own hard timeout; -timeout bounds the whole run.
chaos:
	KEYEDGE_CHAOS=1 $(GO) test -race -count=1 -timeout 10m -v ./internal/chaos/...

demo: build
	$(BIN)/keyedge demo

# Figures and what limits them: bench/RESULTS.md. bench/matrix.sh runs
# keyedge side by side with nginx and HAProxy (installing them with
# apt-get when missing) and runs bench/keyless.sh; bench/edge.sh is the
# older 1-vs-many-tenants run, by hand. BENCH_QUICK=1 for a short run
# (a smoke test of the scripts, not figures): no Go benchmarks (their
# setup alone takes minutes), a 20,000-tenant keystore for keystore.sh,
# the matrix's quick settings. The keystore runs over 100,000 tenants
# here, so that make bench stays within 30 minutes on a fresh machine;
# bench-million is the 1,000,000-tenant keystore run (about 10 minutes
# and 16 GB to generate).
ifeq ($(BENCH_QUICK),1)
bench:
	TENANTS=20000 N=2000 SIGN_N=1000 CACHE=10000 bash bench/keystore.sh
	bash bench/matrix.sh
else
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	TENANTS=100000 bash bench/keystore.sh
	bash bench/matrix.sh
endif

bench-million:
	bash bench/keystore.sh

# Every fuzz target, one at a time (go test -fuzz takes one per run).
# Minimising a new input is capped at 100 runs: left at its default (60 s),
# minimising one large input (a wire frame, a record with its chain) stalls
# a short run at 0 execs/s.
FUZZ_TARGETS := ./keystore:FuzzNormalizeName ./keystore:FuzzParseNameFile ./keystore:FuzzParseRecord \
	./keystore:FuzzOpenSealed ./keystore:FuzzParseChange ./keystore:FuzzParseNameFilter ./certs:FuzzParseChainPEM \
	./keyserver/wire:FuzzReadMessage ./keystore/geo:FuzzParsePolicy ./keystore/geo:FuzzParseAttributes \
	./edge:FuzzRequestHead ./edge:FuzzResponseHead

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "fuzz $$pkg $$fn for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) -fuzzminimizetime 100x $$pkg; \
	done

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd deploy && $(GO) vet ./...
