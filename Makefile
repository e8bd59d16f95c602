# The two commands of the README: `make demo` and `make test`.
GO ?= go
GOFLAGS_TEST ?= -count=1 -timeout 20m

.PHONY: deps build test demo fuzz fuzz-ci fuzz-run vet fmt

deps:
	@./scripts/deps.sh

# VERSION is what `replicator --version` and the reports name.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/replicator ./cmd/replicator

## test: every unit and integration test, against real PostgreSQL and Redis
## servers the tests start themselves.
test: deps
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed on: $$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) test $(GOFLAGS_TEST) ./...

## demo: the whole migration on throwaway local servers.
demo: deps build
	./bin/replicator demo

vet:
	$(GO) vet ./...

fmt:
	gofmt -w .

## fuzz: every fuzz target for FUZZTIME each, e.g. make fuzz FUZZTIME=10m.
## Crashers are written to testdata/fuzz/ and then run as regression tests
## by make test.
## fuzz-ci: every target for a fixed number of executions (sized to about
## 10 s each on 2 cores). CI uses counts, not durations: a duration budget
## makes go1.26's fuzz coordinator report a spurious "context deadline
## exceeded" failure when a worker is busy as the time runs out
## (golang/go#75804, fixed in go1.27).
FUZZTIME ?= 1m
FUZZ_TARGETS = ./cmd/replicator:FuzzConfig:3000 ./pkg/redisrdb:FuzzDecode:100000 \
	./pkg/redisrdb:FuzzDumpPayload:100000 ./pkg/redissync:FuzzReplicationStream:100000 \
	./pkg/wal:FuzzDecoder:30000
fuzz:
	@$(MAKE) --no-print-directory fuzz-run BUDGET=time
fuzz-ci:
	@$(MAKE) --no-print-directory fuzz-run BUDGET=count
fuzz-run:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; rest=$${t#*:}; name=$${rest%%:*}; count=$${rest#*:}; \
		if [ "$(BUDGET)" = count ]; then budget=$${count}x; else budget=$(FUZZTIME); fi; \
		echo "fuzz $$name in $$pkg for $$budget"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $$budget $$pkg; \
	done
