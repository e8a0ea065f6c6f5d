# `make demo` and `make test` work from a fresh clone: they create .venv and install
# pinned dependencies (constraints.txt pins torch==2.13.0, the CPU build) before running.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install browser test test-fast lint demo bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The browser tests drive Debian's Chromium through Playwright (never Playwright's own browser download).
browser:
	bash scripts/install_browser.sh

# The browser tests' screenshots of each view are kept in runs/screenshots (the CI artifacts).
# One test process per core (tests/conftest.py: each keeps to one thread); a file's tests stay in one process.
test: $(STAMP) browser
	$(VENV)/bin/ruff check rnnkit tests benchmarks
	RNNKIT_SCREENSHOTS=runs/screenshots $(PY) -m pytest -q --timeout=1800 -n auto --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP) browser
	$(PY) -m pytest -q -m "not slow" -n auto --dist loadfile --no-loadscope-reorder

lint: $(STAMP)
	$(VENV)/bin/ruff check rnnkit tests benchmarks

demo: $(STAMP)
	$(VENV)/bin/rnnkit demo

bench: $(STAMP)
	$(VENV)/bin/rnnkit bench

clean:
	rm -rf $(VENV) runs .pytest_cache
