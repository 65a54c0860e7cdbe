# hopscope. `make demo` runs the main job, `make test` the tests; both install
# what is missing first (scripts/setup.sh).
GO ?= go
export PATH := $(PATH):/usr/local/go/bin:$(shell $(GO) env GOPATH 2>/dev/null)/bin
STATICCHECK_VERSION := v0.8.2
BIN := bin/hopscope

.PHONY: all build test bench lint generate demo vmtest clean setup

all: build

build:
	$(GO) build -o $(BIN) ./cmd/hopscope

setup:
	@bash scripts/setup.sh test

# Tests run one package at a time: several of them measure latency, and two
# packages measuring at once on a 2-core machine disturb each other.
test: setup
	$(GO) test -p 1 -count=1 -timeout 25m ./...

bench: setup build
	bash scripts/bench.sh

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '_bpfel.go$$'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting"; exit 1; }
	$(GO) vet ./...
	@command -v staticcheck >/dev/null || $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	staticcheck ./...

generate:
	@bash scripts/setup.sh generate
	$(GO) generate ./bpf/...

demo: build
	@bash scripts/setup.sh demo
	./$(BIN) bench --preset demo --out results/demo

# Two more kernels: Debian 12's 6.1 (pure cgroup v2, no TCX) and
# bookworm-backports' 6.12 (TCX, per-open-file memory.peak reset).
vmtest:
	@bash scripts/setup.sh vmtest
	bash vmtest/run.sh
	VMTEST_KERNEL_SUITE=bookworm-backports bash vmtest/run.sh

clean:
	rm -rf bin
