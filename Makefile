# Two commands for a fresh machine:  `make demo` (serve the detector)  and  `make test` (run the tests).
# Both create .venv/ in the project root on first use and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7860
PYTEST_ARGS ?=

.PHONY: install browser demo test test-all clean

# The project itself, editable, with its pinned dependencies and the test tools: `python -m train.evaluation`,
# `python train/run.py` and the tests import the packages from any directory, with no sys.path edits.
$(VENV)/.installed: pyproject.toml requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# tests/test_browser.py drives Debian's chromium through playwright (nothing is downloaded at test time).
# Installed here when missing and we can (root with apt-get); otherwise that test fails on CI with a clear message.
CHROMIUM ?= /usr/bin/chromium
browser:
	@if [ ! -x $(CHROMIUM) ] && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium for the browser test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
			|| echo "WARNING: could not install chromium; tests/test_browser.py will fail on CI"; \
	fi

demo: install
	$(PY) app.py --port $(PORT)

test: install browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Includes the tests marked slow (minutes each on a 2-core CPU).
test-all: install browser
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache *.egg-info
