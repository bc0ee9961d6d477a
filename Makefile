# acceptlab: build, run, test and measure the accept architectures. `make help` lists the targets.

CARGO ?= cargo
ARCHS := epoll memcached ramcloud nginx reuseport oneshot uring
# Address for `make run-<arch>`; ARGS passes more flags, e.g. make run-nginx ARGS="--accept herd".
ADDR ?= 127.0.0.1:8080
ARGS ?=

.PHONY: help build cert test interop lint bench bench-real bench-tls profile bench-lab top fuzz soak idle slow-bodies docs-check $(addprefix run-,$(ARCHS))

help:
	@echo "make run-<arch>   serve on $(ADDR) (arch: $(ARCHS)); ARGS=\"--workers 4 ...\""
	@echo "make cert         a CA and a server certificate for 127.0.0.1 and localhost in $(CERT_DIR) (HTTPS: ARGS=\"--tls-cert ...\")"
	@echo "make test         the whole test suite (unit, parser tables, conformance, faults)"
	@echo "make interop      the servers against curl, ab, wrk and h2load (installs them if missing)"
	@echo "make lint         rustfmt and clippy (warnings as errors), shellcheck on scripts/*.sh"
	@echo "make docs-check   README and docs/: every name cited at path:line is on that line, every path and test named exists"
	@echo "make bench        the architectures side by side with nginx, on 2 cores (lab-bench, <= 6 min)"
	@echo "make bench-tls    the servers over TLS beside nginx with ssl (lab-bench, <= 5 min): keep-alive, churn, resumed; CPU per request and per handshake"
	@echo "make bench-real   Node, Apache and HAProxy beside lab-epoll, lab-reuseport and nginx, on 2 cores (<= 3 min)"
	@echo "make profile      where each server's time goes: flame graphs, CPU and syscalls per request (perf)"
	@echo "make bench-lab    the full lab-bench matrix on a many-core machine (<= 12 min on 16 CPUs)"
	@echo "make top          lab-top, the live view of a server's /stats, on $(ADDR)"
	@echo "make fuzz         coverage-guided fuzzing of the HTTP framing for FUZZ_SECS (default 300)"
	@echo "make soak         every server under mixed and hostile load for SOAK_SECS each (default 120)"
	@echo "make idle         each server's p99 with IDLE idle connections open beside it (default 10000), and without;"
	@echo "                  the RSS of IDLE idle connections and of IDLE slow bodies"
	@echo "make slow-bodies  each server against SLOW slow bodies declaring 1 MiB (default 1500): RSS, a 300 KB POST, the deadline"

build:
	$(CARGO) build --release --workspace

# make cert: a small CA and a server certificate it signs for 127.0.0.1 and localhost (lab-cert, with
# the rcgen crate: nothing beyond the toolchain). Then, e.g.:
#   make run-epoll ARGS="--tls-cert target/cert/server.pem --tls-key target/cert/server.key"
#   curl --cacert target/cert/ca.pem https://127.0.0.1:8080/
CERT_DIR ?= target/cert
cert:
	$(CARGO) build --release -p lab-cert
	./target/release/lab-cert --out $(CERT_DIR)

# Builds only the one server it runs (its package is named after its folder in crates/servers/): the first
# curl answers without waiting for the plotting and terminal-UI libraries of the lab's instruments.
$(addprefix run-,$(ARCHS)): run-%:
	$(CARGO) build --release -p $*
	./target/release/lab-$* --addr $(ADDR) $(ARGS)

# The conformance and fault suites drive the release binaries, so they are built first, and the debug
# builds of the servers too: only they have the fault route the panic test needs. lab-top's
# screen is tested in tmux, and lab-bench --profile with perf: both installed here if missing.
SERVER_BINS := $(foreach arch,$(ARCHS),--bin lab-$(arch))
test: build
	$(CARGO) build $(SERVER_BINS)
	scripts/install-tools.sh tmux perf
	$(CARGO) test --release --workspace

interop: build
	scripts/interop.sh

docs-check:
	$(CARGO) test --release -p acceptlab-tests --test docs

# shellcheck comes from apt-get where it is missing (as root on CI's fresh clone; sudo otherwise).
lint:
	$(CARGO) fmt --all -- --check
	scripts/install-tools.sh shellcheck
	shellcheck -x scripts/*.sh
	$(CARGO) clippy --workspace --all-targets --release -- -D warnings

# make bench: this 2-core machine's side-by-side (<= 6 min): servers on CPU 0, lab-load on CPU 1; the
# latency sweep and fairness with the servers on both CPUs. OUT=DIR picks the results directory.
bench: build
	scripts/install-tools.sh nginx perf
	./target/release/lab-bench --server-cpus 0 --client-cpus 1 --sweep-server-cpus 0-1 --sweep-client-cpus 1 \
		--duration 1 --warmup 0.3 $(if $(OUT),--out $(OUT)) $(BENCH_ARGS)

# make bench-tls: lab-bench's TLS workloads (<= 5 min on 2 cores; not in make bench): the rows of
# BENCH_TLS_ARCHS over TLS on CPU 0 (--tls-cert/--tls-key on make cert's certificate, made if missing)
# beside nginx with `ssl` on the same one, lab-load on CPU 1: plaintext keep-alive for reference, TLS
# keep-alive, a full handshake per request (tls-churn), a resumed one (tls-resume); req/s, the server's
# CPU per request and per handshake against nginx's, which thread pays. BENCH_ARGS=--profile adds
# flame graphs and where the handshake's time goes (twice the time). OUT=DIR picks the directory.
BENCH_TLS_ARCHS ?= epoll,memcached,ramcloud,reuseport,uring,real-nginx
bench-tls: build
	scripts/install-tools.sh nginx
	./target/release/lab-bench --server-cpus 0 --client-cpus 1 --archs $(BENCH_TLS_ARCHS) --workloads keep-alive,tls \
		--rounds 3 --duration 2 --warmup 0.5 $(if $(OUT),--out $(OUT)) $(BENCH_ARGS)

# make bench-real: the real systems (Node one process and cluster under each scheduler, Apache's event
# MPM, HAProxy) beside lab-epoll, lab-reuseport and nginx, on make bench's split, in a target of their
# own so make bench keeps to its 6 minutes; throughput only (they serve none of the lab's routes).
bench-real: build
	scripts/install-tools.sh nginx node apache2 haproxy
	./target/release/lab-bench --server-cpus 0 --client-cpus 1 --archs epoll,reuseport,real --workloads throughput \
		--duration 1 --warmup 0.3 $(if $(OUT),--out $(OUT)) $(BENCH_ARGS)

# make profile: the throughput workloads with --profile on the same 2-core split as make bench, each
# round once without perf and once with it (PROFILE_ROUNDS of them; the ratio of the two is in the
# table): a flame graph per server and workload, and the "Where the time goes" table in summary.md.
# Only perf is installed for it: nginx, the reference, is profiled where it is already there.
PROFILE_ROUNDS ?= 3
profile: build
	scripts/install-tools.sh perf
	./target/release/lab-bench --server-cpus 0 --client-cpus 1 --workloads throughput --rounds $(PROFILE_ROUNDS) \
		--duration 1 --warmup 0.3 --profile $(if $(OUT),--out $(OUT)) $(BENCH_ARGS)

# make bench-lab: the full matrix on a many-core lab machine (<= 12 min on 16 CPUs), half the CPUs
# each side. With .lab/env.sh sourced (a lab machine without cargo) it runs the lab-bench on PATH.
bench-lab:
	@command -v lab-bench >/dev/null 2>&1 || $(CARGO) build --release --workspace
	"$$(command -v lab-bench || echo ./target/release/lab-bench)" --duration 1.5 --warmup 0.5 \
		$(if $(OUT),--out $(OUT)) $(BENCH_ARGS)

# make top: lab-top, the live view of the server on $(ADDR) (start one first: make run-<arch>).
top: build
	./target/release/lab-top http://$(ADDR)

# libFuzzer through cargo-fuzz, on the stable toolchain: RUSTC_BOOTSTRAP=1 lets it pass the sanitizer
# flags. New inputs go to target/fuzz-corpus; the committed seeds in crates/fuzz/corpus stay as they are.
FUZZ_SECS ?= 300
fuzz:
	@command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	mkdir -p target/fuzz-corpus
	RUSTC_BOOTSTRAP=1 $(CARGO) fuzz run --fuzz-dir crates/fuzz framing target/fuzz-corpus crates/fuzz/corpus/framing -- \
		-max_total_time=$(FUZZ_SECS) -print_final_stats=1

# Each server for SOAK_SECS under lab-load (keep-alive, pipelined, churn) and hostile clients, run
# with --body-timeout SOAK_BODY_TIMEOUT: shorter than SOAK_SECS, so the slow-body client is cut off.
SOAK_SECS ?= 120
SOAK_BODY_TIMEOUT ?= 20
soak: build
	./target/release/lab-soak --secs $(SOAK_SECS) --body-timeout $(SOAK_BODY_TIMEOUT)

# Each server's p99 at full rate with IDLE idle connections open beside it, and without.
IDLE ?= 10000
idle: build
	./target/release/lab-soak --idle $(IDLE)

# Each server against SLOW connections declaring 1 MiB bodies and trickling a byte a second, at the
# default --body-timeout (20 s): its RSS growth, a 300 KB POST meanwhile, when all are closed.
SLOW ?= 1500
slow-bodies: build
	./target/release/lab-soak --slow-bodies $(SLOW)
