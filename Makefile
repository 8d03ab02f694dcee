# Sluice — build, run and test targets. `make test` is what CI runs.
GO ?= go
PKGS := ./...
# Packages with concurrency that must pass the race detector.
RACE_PKGS := ./wal/... ./queue/... ./checkpoint/... ./channel/... ./crypto/... ./server/... ./client/... ./metrics/... ./internal/... ./config/... ./bench/... ./agent/... ./sources/... ./sinks/... ./interceptors/...

.PHONY: all build run test test-short race vet fmt bench fuzz crash-sim torture clean

all: build

build:
	$(GO) build -o bin/sluice ./cmd/sluice

run: build
	./bin/sluice serve

vet:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet $(PKGS)

test: vet
	$(GO) test -count=1 -timeout 20m $(PKGS)
	$(GO) test -count=1 -race -short -timeout 20m $(RACE_PKGS)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s $(PKGS)

# Simulated power loss at scale (pebble crashable MemFS): CRASH_SEEDS seeds of the
# plain store (1-3 data dirs) and a quarter as many with encryption + compression,
# 3 crash/recover rounds each. `make test` runs 300 (+75).
CRASH_SEEDS ?= 10000
crash-sim:
	SLUICE_CRASH_SEEDS=$(CRASH_SEEDS) $(GO) test -count=1 -timeout 120m -run 'TestFileCrashSimulation' ./channel/filestore/

FUZZTIME ?= 30s
fuzz:
	@for p in $$($(GO) list ./... ); do \
	  for f in $$($(GO) test -list '^Fuzz' $$p 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$p $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$p || exit 1; \
	  done; \
	done

clean:
	rm -rf bin sluice-data

# Regenerate the committed gRPC/protobuf code under api/. Needs protoc
# (Debian: protobuf-compiler) and the two plugins:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@latest
#   go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@latest
.PHONY: proto
proto:
	PATH="$$PATH:$$($(GO) env GOPATH)/bin" protoc -I api \
	  --go_out=api --go_opt=module=github.com/sluicehq/sluice/api \
	  --go-grpc_out=api --go-grpc_opt=module=github.com/sluicehq/sluice/api \
	  api/sluice/v1/sluice.proto

# Real crash torture: `sluice serve` SIGKILLed at random moments under
# concurrent put and take clients, TORTURE_CYCLES times (`make test` runs 30).
TORTURE_CYCLES ?= 300
torture:
	SLUICE_TORTURE_CYCLES=$(TORTURE_CYCLES) $(GO) test -run TestTorture -count=1 -timeout 60m -v ./cmd/sluice/
