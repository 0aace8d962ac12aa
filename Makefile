# fixgw — the two set-up commands are `make demo` and `make test`.
# Each works on a fresh machine: it creates .venv, installs the project and
# its dev extras, then runs.

PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FUZZ_SECONDS ?= 300

.PHONY: all demo test compile clean-compiled test-fast soak fuzz lint typecheck bench bench-quick bench-e2e bench-quickfix bench-deps bench-codec bench-session bench-signatures bench-policy bench-pipeline bench-posture bench-audit certs clean system-deps

all: test

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

certs/dev/ca.crt: $(STAMP)
	$(BIN)/fixgw certs init --dir certs/dev

certs: certs/dev/ca.crt
	$(BIN)/fixgw certs issue --dir certs/dev --name conformance --key-type rsa \
	  --comp-id TW40 --comp-id TW41 --comp-id TW42 --comp-id TW43 --comp-id TW44 --comp-id TW \
	  --comp-id NO_CHECK_FIELDS_HAVE_VALUES --comp-id TW50 --comp-id TW50SP1 --comp-id TW50SP2

demo: $(STAMP)
	$(BIN)/python examples/demo.py

test: $(STAMP) system-deps bench-deps lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m 'not conformance and not interop'

# long runs, not part of `make test`
soak: $(STAMP)
	FIXGW_CRASH_CYCLES=50 $(BIN)/python -m pytest -q -p no:cacheprovider tests/test_crash.py

# coverage-guided fuzzing, FUZZ_SECONDS per target (make test runs a 20,000-input pass of each)
fuzz: $(STAMP)
	mkdir -p var/fuzz
	$(BIN)/python tests/fuzz/fuzz_fix.py codec -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=var/fuzz/
	$(BIN)/python tests/fuzz/fuzz_fix.py session -max_total_time=$(FUZZ_SECONDS) -artifact_prefix=var/fuzz/

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

# the end-to-end harness (fixgw vs direct vs haproxy, < 5 min), the same with QuickFIX peers (< 5 min),
# then every component bench
bench: bench-e2e bench-quickfix bench-codec bench-session bench-signatures bench-policy bench-pipeline bench-posture bench-audit

bench-e2e: $(STAMP) bench-deps
	$(BIN)/python -m bench

# QuickFIX C++ client and venue (bench/quickfix/, built against libquickfix-dev): direct vs haproxy vs fixgw
# with config/conformance.toml, steady 1000 orders/s and a 5,000-order burst, 3 rounds (< 5 min)
bench-quickfix: $(STAMP) system-deps bench-deps
	$(BIN)/python -m bench.quickfix

# smoke run, < 60 s
bench-quick: $(STAMP) bench-deps
	$(BIN)/python -m bench --quick --out bench/results/quick

# haproxy is the TLS relay baseline; taskset (util-linux) pins processes
bench-deps:
	@if ! command -v haproxy >/dev/null 2>&1 || ! command -v taskset >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q haproxy util-linux >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q haproxy util-linux >/dev/null; }; \
	  else \
	    echo "bench needs: sudo apt-get install -y haproxy util-linux"; exit 1; \
	  fi; \
	fi

bench-codec: $(STAMP)
	$(BIN)/python -m bench.codec

bench-session: $(STAMP)
	$(BIN)/python -m bench.session

bench-signatures: $(STAMP)
	$(BIN)/python -m bench.signatures

bench-policy: $(STAMP)
	$(BIN)/python -m bench.policy

# the trust pipeline alone (signature, policy, risk), µs per decision, < 30 s
bench-pipeline: $(STAMP)
	$(BIN)/python -m bench.pipeline

bench-posture: $(STAMP)
	$(BIN)/python -m bench.posture

bench-audit: $(STAMP)
	$(BIN)/python -m bench.audit

# Debian packages the tests need: QuickFIX (the interop peer), a C++ compiler, nats-server (JetStream).
system-deps:
	@if ! dpkg -s libquickfix-dev >/dev/null 2>&1 || ! dpkg -s libssl-dev >/dev/null 2>&1 || ! command -v g++ >/dev/null 2>&1 \
	    || ! command -v nats-server >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get install -y -q libquickfix-dev libssl-dev g++ nats-server >/dev/null 2>&1 || \
	      { apt-get update -q >/dev/null && apt-get install -y -q libquickfix-dev libssl-dev g++ nats-server >/dev/null; }; \
	  else \
	    echo "make test needs: sudo apt-get install -y libquickfix-dev libssl-dev g++ nats-server"; exit 1; \
	  fi; \
	fi

# the sans-IO core compiled with mypyc, in place (.so beside each .py of gateway/core; ~45 s):
# every fixgw process run from this tree then uses it; `make clean-compiled` goes back to interpreted.
# `make test` checks compiled against interpreted on its own copies (tests/test_compiled_core.py).
compile: $(STAMP) system-deps
	$(BIN)/python -m gateway.cli.build_core --in-place

clean-compiled:
	find gateway/core -name '*.so' -delete; rm -f fixgw_core__mypyc*.so

clean: clean-compiled
	rm -rf $(VENV) state certs/dev
