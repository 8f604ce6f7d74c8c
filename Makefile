# Every target sets itself up: a fresh machine needs only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench bench-compare bench-goodput bench-handshake bench-flood bench-memory bench-aead bench-kernel fuzz fuzz-atheris cover clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff check rudp tests examples bench fuzz
	$(BIN)/ruff format --check rudp tests examples bench fuzz
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

# Goodput by RTT and loss over a simulated 20 Mbit/s bottleneck (virtual time), plus
# fairness and queueing; the plot goes to bench/out/.  ARGS="--quick" for a smoke run.
bench-goodput: $(STAMP)
	$(BIN)/python bench/goodput.py $(ARGS)

# Seed 000's "Hello!!" sender on rudp.socket against loss {0..70%} each way, 1000 seeded
# runs per rate over the simulator (virtual time): success rate, time to delivery.
bench-handshake: $(STAMP)
	$(BIN)/python bench/handshake_loss.py $(ARGS)

# A 2,000 SYN/s spoofed-style flood at a loopback listener while a client at 100 ms RTT
# connects 20 times: successes, connect times, amplification, state per SYN (ARGS="--retry never").
bench-flood: $(STAMP)
	$(BIN)/python bench/syn_flood.py $(ARGS)

# RSS growth of a listener (blocking, asyncio, rudp.socket) under one hostile connection.
bench-memory: $(STAMP)
	$(BIN)/python bench/memory.py $(ARGS)

# Loopback MB/s of this tree against a git revision, in alternating pairs (the machine's
# drift hits both halves of a pair): make bench-compare REV=14c11b1 ARGS="--pairs 24".
bench-compare: $(STAMP)
	@test -n "$(REV)" || { echo "make bench-compare: give REV=<git revision>" >&2; exit 2; }
	$(BIN)/python bench/compare.py $(REV) $(ARGS)

# CPU per datagram with and without psk=, beside aioquic's TLS 1.3 (all in memory).
bench-aead: $(STAMP)
	$(BIN)/python bench/aead_cost.py $(ARGS)

# Needs root: builds two network namespaces with a tbf-limited, iptables-lossy veth link.
# Results also go to bench/out/; pass options as e.g. BENCH_ARGS='--loss 0,0.1 --megabytes 20'.
bench-kernel: $(STAMP)
	$(BIN)/python bench/kernel_link.py --json $(BENCH_ARGS)

fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_fuzz.py

# Coverage-guided fuzzing with atheris (libFuzzer), one harness after another, each for
# FUZZ_SECONDS (default 60; e.g. FUZZ_SECONDS=600), seeded by fuzz/make_corpus.py; crashes
# go to fuzz/crashes/.  FUZZ_HARNESSES picks harnesses, FUZZ_ARGS adds libFuzzer flags,
# FUZZ_SKIP_KNOWN=1 skips the file-header bugs already reported (see fuzz/README.md).
# atheris is not needed by `make test`; it installs here only, and may not build on
# every Python (wheels exist for CPython 3.8-3.11 on x86-64 Linux).
FUZZ_SECONDS ?= 60
FUZZ_HARNESSES ?= wire connection file_header
FUZZ_SKIP_KNOWN ?= 0
FUZZ_ARGS ?=
FUZZ_STAMP := $(VENV)/.fuzz-installed

$(FUZZ_STAMP): $(STAMP)
	@$(BIN)/pip install --quiet -e '.[dev,fuzz]' || { \
	  echo "make fuzz-atheris: could not install atheris into $(VENV) for `$(BIN)/python -V`."; \
	  echo "  atheris ships wheels for CPython 3.8-3.11 on x86-64 Linux; elsewhere it must be"; \
	  echo "  built from source with clang and libFuzzer.  'make fuzz' (hypothesis) still works."; \
	  exit 1; } >&2
	touch $(FUZZ_STAMP)

fuzz-atheris: $(FUZZ_STAMP)
	$(BIN)/python fuzz/make_corpus.py
	@mkdir -p fuzz/crashes
	@status=0; for h in $(FUZZ_HARNESSES); do \
	  echo "== fuzz/fuzz_$$h.py for $(FUZZ_SECONDS) s"; \
	  RUDP_FUZZ_SKIP_KNOWN=$(FUZZ_SKIP_KNOWN) $(BIN)/python fuzz/fuzz_$$h.py fuzz/corpus/$$h \
	    -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
	    -artifact_prefix=fuzz/crashes/$$h- $(FUZZ_ARGS) || status=1; \
	done; exit $$status

clean:
	rm -rf $(VENV) build *.egg-info
