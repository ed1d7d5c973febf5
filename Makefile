# `make test` on a fresh machine: build .venv from the pinned lock file, then run the default suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv browser serve test test-slow test-multiprocess test-gpu test-tpu test-all bench bench-accel demo demo-quick clean-venv

venv: $(STAMP)

# Rebuilt whenever the lock file or setup.py changes. torch is pinned first in the lock file so
# pip never resolves a multi-GB CUDA build. --no-compile: byte-compiling every installed file takes
# pip about a minute (22 s vs 80 s on 2 cores); Python compiles the modules that are imported on first use.
$(STAMP): requirements/lock.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --no-compile -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

# The web app's browser tests drive Debian's chromium (Playwright downloads no browser here); installed when
# absent (as root, or through sudo).
CHROMIUM := /usr/bin/chromium
browser: $(CHROMIUM)
$(CHROMIUM):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get install -y -qq chromium chromium-driver >/dev/null

# The suite is compile-bound and XLA compiles a program on one core: one pytest worker per core
# (`TEST_WORKERS=1` for one process), each test file in one worker (its module fixtures built once).
TEST_WORKERS ?= 2
test: venv $(CHROMIUM)
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

# Marker suites; pytest's exit code 5 (no test carries the marker) is not a failure.
test-slow: venv
	$(PY) -m pytest tests -m slow || [ $$? -eq 5 ]

test-multiprocess: venv
	$(PY) -m pytest tests -m multiprocess || [ $$? -eq 5 ]

test-gpu: venv
	SEEDX_TEST_PLATFORM=auto $(PY) -m pytest tests -m gpu || [ $$? -eq 5 ]

test-tpu: venv
	SEEDX_TEST_PLATFORM=auto $(PY) -m pytest tests -m tpu || [ $$? -eq 5 ]

# Everything that can run on this host, including the slow and multi-process tests.
test-all: venv $(CHROMIUM)
	$(PY) -m pytest tests -m "not gpu and not tpu"

# The shapes-world demo: trains a tiny SEED-X on 2 CPU cores (< 20 min), report in demo_report/.
demo: venv
	$(PY) -m seedx_jax.demo --out demo_report --overwrite

# The web app and HTTP API on http://127.0.0.1:7860: the models of the last `make demo` when present, else tiny
# random ones (README "Serving"); SERVE_ARGS="--checkpoint DIR --edit-checkpoint DIR" for real ones.
serve: venv
	$(PY) -m seedx_jax serve $(SERVE_ARGS)

demo-quick: venv
	$(PY) -m seedx_jax.demo --quick --out demo_report_quick --overwrite

# Every SEED-X hot path against the official PyTorch computation, interleaved, with the machine's ceilings
# (docs/benchmarks.md); run on an idle machine. The figures land in bench_results.json.
bench: venv
	$(PY) bench/bench_seedx.py --json bench_results.json
	$(PY) bench/bench_convert.py

# One H100/H200, < 8 min: 13B-shaped LoRA step MFU, 13B-shaped bf16 decode and SDXL 1024 px against PyTorch
# on the same GPU (docs/accelerators.md).
bench-accel: venv
	$(PY) bench/accel_suite.py --out accel_results.json

clean-venv:
	rm -rf $(VENV)
