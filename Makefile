# keyedge — see README.md. `make demo` runs it, `make test` checks it.
GO       ?= go
BIN      := bin
FUZZTIME ?= 60s

.PHONY: build test demo bench fuzz lint

build:
	$(GO) build -o $(BIN)/ ./cmd/...

# The short fuzz run in test counts executions rather than seconds: with a
# duration, Go 1.26's fuzz coordinator can fail a clean run with "context
# deadline exceeded" as the time runs out (golang/go#75804, fixed in 1.27).
test: lint
	$(GO) test -race -count=1 ./...
	$(MAKE) fuzz FUZZTIME=3000x

demo: build
	$(BIN)/keyedge demo

# Figures and what limits them: bench/RESULTS.md. BENCH_QUICK=1 for a short run.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	bash bench/keystore.sh
	bash bench/edge.sh
	bash bench/keyless.sh

# Every fuzz target, one at a time (go test -fuzz takes one per run).
# Minimising a new input is capped at 100 runs: left at its default (60 s),
# minimising one large wire frame stalls a short run.
FUZZ_TARGETS := ./keystore:FuzzNormalizeName ./keystore:FuzzParseNameFile ./keystore:FuzzParseRecord \
	./keystore:FuzzOpenSealed ./keystore:FuzzParseChange ./certs:FuzzParseChainPEM \
	./keyserver/wire:FuzzReadMessage ./keystore/geo:FuzzParsePolicy ./keystore/geo:FuzzParseAttributes

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
