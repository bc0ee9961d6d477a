# acceptlab: build, run, test and measure the five accept architectures. `make help` lists the targets.

CARGO ?= cargo
ARCHS := epoll memcached ramcloud nginx reuseport
# Address for `make run-<arch>`; ARGS passes more flags, e.g. make run-nginx ARGS="--accept herd".
ADDR ?= 127.0.0.1:8080
ARGS ?=

.PHONY: help build test interop lint bench fuzz soak $(addprefix run-,$(ARCHS))

help:
	@echo "make run-<arch>   serve on $(ADDR) (arch: $(ARCHS)); ARGS=\"--workers 4 ...\""
	@echo "make test         the whole test suite (unit, parser tables, conformance, faults)"
	@echo "make interop      the servers against curl, ab, wrk and h2load (installs them if missing)"
	@echo "make lint         rustfmt and clippy, warnings as errors"
	@echo "make bench        lab-epoll against nginx on this machine (scripts/single-core.sh)"
	@echo "make fuzz         coverage-guided fuzzing of the HTTP framing for FUZZ_SECS (default 300)"
	@echo "make soak         all five under mixed and hostile load for SOAK_SECS each (default 120)"

build:
	$(CARGO) build --release --workspace

$(addprefix run-,$(ARCHS)): run-%: build
	./target/release/lab-$* --addr $(ADDR) $(ARGS)

# The conformance and fault suites drive the release binaries, so they are built first.
test: build
	$(CARGO) test --release --workspace

interop: build
	scripts/interop.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

bench: build
	scripts/single-core.sh

# libFuzzer through cargo-fuzz, on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it pass the sanitizer
# flags. New inputs go to target/fuzz-corpus; the committed seeds in fuzz/corpus stay as they are.
FUZZ_SECS ?= 300
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p target/fuzz-corpus
	cd fuzz && RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run framing ../target/fuzz-corpus corpus/framing -- \
		-max_total_time=$(FUZZ_SECS) -print_final_stats=1

# Each server for SOAK_SECS under lab-load (keep-alive, pipelined, churn) and hostile clients.
SOAK_SECS ?= 120
soak: build
	./target/release/lab-soak --secs $(SOAK_SECS)
