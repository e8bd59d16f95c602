# The two commands of the README: `make demo` and `make test`.
GO ?= go
GOFLAGS_TEST ?= -count=1 -timeout 20m

.PHONY: deps build test demo fuzz vet fmt

deps:
	@./scripts/deps.sh

build:
	$(GO) build -o bin/replicator ./cmd/replicator

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

## fuzz: every fuzz target for FUZZTIME each (CI runs it briefly after the
## tests; run it longer by hand, e.g. make fuzz FUZZTIME=10m). Crashers are
## written to testdata/fuzz/ and then run as regression tests by make test.
FUZZTIME ?= 1m
FUZZ_TARGETS = ./cmd/replicator:FuzzConfig ./pkg/redisrdb:FuzzDecode ./pkg/redisrdb:FuzzDumpPayload \
	./pkg/redisrdb:FuzzReplicationStream ./pkg/wal:FuzzDecoder
fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; \
		echo "fuzz $$name in $$pkg for $(FUZZTIME)"; \
		$(GO) test -run '^$$' -fuzz "^$$name$$" -fuzztime $(FUZZTIME) $$pkg; \
	done
