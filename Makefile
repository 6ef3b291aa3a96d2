# nix-ipfs. `make demo` runs the whole story on one machine; `make test` runs
# every test. Both install what is missing first (scripts/install-deps.sh,
# each step saying what it is for): the demo only Debian's nix-bin and kubo
# built from its Go module source; make test also nats-server, the compose
# test's Docker tools, chromium, prometheus, and Nix 2.26 in a Debian trixie
# chroot.

GO       ?= go
TOOLS    := $(shell echo $${NIX_IPFS_TOOLS:-$$HOME/.cache/nix-ipfs/bin})
export PATH := $(TOOLS):$(PATH)

.PHONY: all build deps test test-unit fuzz demo bench generate clean

all: build

build:
	$(GO) build -o bin/ ./cmd/nix-ipfs-hook ./cmd/nix-ipfs

deps:
	scripts/install-deps.sh $(DEPSFLAGS) >/dev/null

generate:
	$(GO) generate ./...

# Every test, integration tests included, against real NATS, kubo and Nix.
# GOTESTFLAGS=-v lists every test (.ci/run does, to count them).
# The tests run against two Nix versions: the host's and Nix 2.26 in a
# trixie chroot (README, "Nix versions covered").
test: DEPSFLAGS = --nix-2.26
test: deps
	@unformatted=$$($$($(GO) env GOROOT)/bin/gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "not gofmt-clean: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 60m $(GOTESTFLAGS) ./...
	$(MAKE) fuzz FUZZTIME=10s

# Unit tests only: no Nix, no kubo (integration tests skip outside CI).
test-unit:
	$(GO) test -short ./...

# Short runs of every fuzz target; seeds live in testdata/fuzz. Go's fuzz
# engine sometimes ends a run with a bare "context deadline exceeded" when
# a worker is slow to stop at -fuzztime (no failing input, nothing written
# to testdata): that run is made once more. A real failure names its
# failing input and is never retried.
FUZZTIME ?= 30s
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for f in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/^func //'); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > .fuzz.log 2>&1 || { \
	      if grep -q 'context deadline exceeded' .fuzz.log && ! grep -q 'Failing input' .fuzz.log; then \
	        echo "  go's fuzz engine stopped a worker late (context deadline exceeded, no failing input): once more"; \
	        $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg > .fuzz.log 2>&1 || { cat .fuzz.log; exit 1; }; \
	      else cat .fuzz.log; exit 1; fi; }; \
	  done; \
	done

# The README's first command: installs what the demo needs and is missing
# (install-deps.sh --demo), then the whole story.
demo:
	scripts/demo.sh

bench: deps build
	$(GO) run ./bench -out docs/BENCHMARKS.md

clean:
	rm -rf bin
