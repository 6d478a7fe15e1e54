# The two front-door commands: `make demo` and `make test`. Both build the
# virtualenv from pyproject.toml first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# setuptools' editable build ends with a 10-line notice ("Editable installation.
# Please be careful with folders ...") that `--quiet` does not hide: the build
# backend runs in a subprocess and emits it as a Python warning. Only that notice
# is filtered, by its text; every other warning and error still shows.
QUIET_EDITABLE = PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo test install clean bench check

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(BIN)/python -m pip install --quiet -e '.[test,sim]'
	touch $@

install: $(BIN)/.installed

# The tools `make check` runs, beside the test dependencies and the simulators.
$(BIN)/.checking: pyproject.toml $(BIN)/.installed
	$(QUIET_EDITABLE) $(BIN)/python -m pip install --quiet -e '.[test,sim,check]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/smsq demo

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

# The floors' import rules (pyproject.toml: [tool.importlinter]), read on the package
# laid out as installed: lint-imports finds a package's modules in its folder, and the
# repository keeps smsq's subpackages beside smsq/ (.ci/layout).
check: $(BIN)/.checking
	$(BIN)/python .ci/layout build/layout
	cd build/layout && $(abspath $(BIN))/lint-imports --no-cache

# Every figure of the README's Scaling table, each as a ratio to a reference
# measured in the same run (needs PostgreSQL and Redis on 127.0.0.1; ~10 minutes).
bench: $(BIN)/.installed
	$(BIN)/python bench/send_million.py --count 1000000 --no-tracemalloc
	$(BIN)/python bench/send_million.py --mode embedded --count 200000 --no-tracemalloc
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) demo-run *.egg-info build/layout
