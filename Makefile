# Two commands for a fresh machine:  `make demo` (serve the detector)  and  `make test` (run the tests).
# Both create .venv/ in the project root on first use and install into it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 7860
PYTEST_ARGS ?=

.PHONY: install demo test test-all clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

demo: install
	$(PY) app.py --port $(PORT)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# Includes the tests marked slow (minutes each on a 2-core CPU).
test-all: install
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
