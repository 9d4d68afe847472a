# Two commands do all set-up: `make run` and `make test`. Both bootstrap .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test bench lint docs clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/jaxhw reproduce --preset quick --workdir runs/quick

# pytest-xdist workers, one per core it may use (at most 8), one test file each (module fixtures stay shared).
# A third worker on 2 cores was 10 % faster on a subset but not on the whole suite (637.8 s vs 632.8 s).
WORKERS ?= $(shell python3 -c "import os; print(min(8, len(os.sched_getaffinity(0))))")
test: $(STAMP)
	$(PY) -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

bench: $(STAMP)
	@rm -f benchmarks/results.jsonl
	@for b in benchmarks/bench_*.py; do \
	  m=$$(basename $$b .py); echo "== $$m"; \
	  $(PY) -m benchmarks.$$m | tee /dev/stderr | tail -n 1 >> benchmarks/results.jsonl || exit 1; \
	done
	@echo "wrote benchmarks/results.jsonl"

# API reference from the docstrings (pdoc, Google style) into docs/_build/api; fails on an undocumented public name
# or a broken cross-reference.
docs: $(STAMP)
	$(PY) docs/build_api.py docs/_build/api

lint: $(STAMP)
	$(VENV)/bin/ruff check jaxhw experiments benchmarks tests

clean:
	rm -rf runs .pytest_cache docs/_build dist
