# acceptlab: build, run, test and measure the five accept architectures. `make help` lists the targets.

CARGO ?= cargo
ARCHS := epoll memcached ramcloud nginx reuseport
# Address for `make run-<arch>`; ARGS passes more flags, e.g. make run-nginx ARGS="--accept herd".
ADDR ?= 127.0.0.1:8080
ARGS ?=

.PHONY: help build test interop lint bench docs-check $(addprefix run-,$(ARCHS))

help:
	@echo "make run-<arch>   serve on $(ADDR) (arch: $(ARCHS)); ARGS=\"--workers 4 ...\""
	@echo "make test         the whole test suite (unit, parser tables, conformance, faults)"
	@echo "make interop      the servers against curl, ab, wrk and h2load (installs them if missing)"
	@echo "make lint         rustfmt and clippy, warnings as errors"
	@echo "make docs-check   every name cited as file:line in docs/architectures.md is on that line"
	@echo "make bench        lab-epoll against nginx on this machine (scripts/single-core.sh)"

build:
	$(CARGO) build --release --workspace

$(addprefix run-,$(ARCHS)): run-%: build
	./target/release/lab-$* --addr $(ADDR) $(ARGS)

# The conformance and fault suites drive the release binaries, so they are built first.
test: build
	$(CARGO) test --release --workspace

interop: build
	scripts/interop.sh

docs-check:
	$(CARGO) test --release -p acceptlab-tests --test docs

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench: build
	scripts/single-core.sh
