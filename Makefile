# `make test` on a fresh machine: build .venv from the pinned lock file, then run the default suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-slow test-multiprocess test-gpu test-tpu test-all bench clean-venv

venv: $(STAMP)

# Rebuilt whenever the lock file or setup.py changes. torch is pinned first in the lock file so
# pip never resolves a multi-GB CUDA build.
$(STAMP): requirements/lock.txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/lock.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $(STAMP)

test: venv
	$(PY) -m pytest tests

test-slow: venv
	$(PY) -m pytest tests -m slow

test-multiprocess: venv
	$(PY) -m pytest tests -m multiprocess

test-gpu: venv
	$(PY) -m pytest tests -m gpu

test-tpu: venv
	$(PY) -m pytest tests -m tpu

# Everything that can run on this host, including the slow and multi-process tests.
test-all: venv
	$(PY) -m pytest tests -m "not gpu and not tpu"

bench: venv
	$(PY) bench/bench_llama.py

clean-venv:
	rm -rf $(VENV)
