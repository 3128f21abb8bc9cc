# The two commands: `make demo` and `make test`. Both create .venv and install what they need (idempotent).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
CONSTRAINTS := .ci/constraints.txt
# Re-install when the project's dependencies (or this file's install steps) change.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(CONSTRAINTS) Makefile | sha1sum | cut -c1-12)
# PsychoPy without its heavy extras (psychtoolbox would downgrade numpy); what the window code needs.
PSYCHOPY_DEPS := pyglet==1.5.27 packaging six json-tricks pyyaml i18next python-bidi arabic-reshaper \
	pandas freetype-py requests pyserial psutil
DEMO_PRESET ?= demo
DEMO_OUT ?= demo-out

# the BIDS validator (npm) lives outside the repository; tests/service/live/test_bids_writer.py looks here too
BIDS_VALIDATOR ?= $(HOME)/.cache/fmriface/bids-validator

.PHONY: all install system-deps demo demo-paper test test-slow lint clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml $(CONSTRAINTS) Makefile
	$(PIP) install -q -c $(CONSTRAINTS) torch  # the CPU build, pinned in the constraints
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[cpu,offline,dev,dashboard,lsl]'
	$(PIP) install -q -c $(CONSTRAINTS) $(PSYCHOPY_DEPS)
	$(PIP) install -q --no-deps psychopy==2026.2.5
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

# Xvfb for the PsychoPy window tests and Debian's Chromium for the dashboard's browser tests (Playwright drives
# the system's browser; it never downloads one). Installed where we may (root + apt); elsewhere those tests are
# skipped with the reason printed.
system-deps:
	@if command -v xvfb-run >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing xvfb, xauth and libGLU (apt-get) for the display tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb xauth libglu1-mesa >/dev/null) \
		|| echo "warning: could not install xvfb; window tests will be skipped"; \
	else echo "note: xvfb-run not found and not root; window tests will be skipped"; fi
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (apt-get) for the dashboard's browser tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "warning: could not install chromium; the dashboard's browser tests will be skipped"; \
	else echo "note: /usr/bin/chromium not found and not root; the dashboard's browser tests will be skipped"; fi
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing nodejs and npm (apt-get) for the BIDS validator's tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null) \
		|| echo "warning: could not install node; the BIDS validator's tests will be skipped"; \
	else echo "note: node not found and not root; the BIDS validator's tests will be skipped"; fi
	@if command -v npm >/dev/null 2>&1 && [ ! -e "$(BIDS_VALIDATOR)/node_modules/.bin/bids-validator" ]; then \
		echo "installing bids-validator (npm) into $(BIDS_VALIDATOR) for the BIDS copy's tests"; \
		mkdir -p "$(BIDS_VALIDATOR)" && npm install -q --no-audit --no-fund --prefix "$(BIDS_VALIDATOR)" bids-validator@1 >/dev/null \
		|| echo "warning: could not install bids-validator; its tests will be skipped"; fi

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: install system-deps lint
	$(PY) -m pytest -q -m "not slow"

test-slow: install system-deps
	$(PY) -m pytest -q -m slow

demo: install system-deps
	$(VENV)/bin/fmriface demo --preset $(DEMO_PRESET) --out $(DEMO_OUT)

# The paper's experiment at the paper's scale (issue 18): about 1.5 h the first time on 2 cores (the face space
# about an hour, trained once and reused on a rerun), then the fit (about 15 min), the live replay and the report.
demo-paper: install system-deps
	$(VENV)/bin/fmriface demo --preset paper --out paper-out

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .import_linter_cache
