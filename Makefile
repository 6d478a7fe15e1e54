# The two front-door commands: `make demo` and `make test`; `make check` before a
# change is kept. Each builds the virtualenv from pyproject.toml first.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# setuptools' editable build ends with a 10-line notice ("Editable installation.
# Please be careful with folders ...") that `--quiet` does not hide: the build
# backend runs in a subprocess and emits it as a Python warning. Only that notice
# is filtered, by its text; every other warning and error still shows.
QUIET_EDITABLE = PYTHONWARNINGS="ignore:Editable installation"

.PHONY: demo test check install clean bench

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(QUIET_EDITABLE) $(BIN)/python -m pip install --quiet -e '.[test,sim,check]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/smsq demo

# Two test processes at once (pytest-xdist), a test module each at a time: most of
# the integration tests wait on real workers, vendors and timeouts, not on the CPU.
# Each process has its own Redis database, PostgreSQL databases and RabbitMQ vhost.
test: $(BIN)/.installed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# What every change passes, with no Redis, PostgreSQL or RabbitMQ needed, in under a
# minute (mypy's first run takes most of it; .mypy_cache makes the next ones quick):
# - ruff check and ruff format --check: every Python file of the repository (the
#   package folders, tests/, bench/, tools/; what .gitignore names is left out),
#   with pyproject.toml's [tool.ruff];
# - mypy: the smsq package, every folder pyproject.toml maps under it
#   (tools/typecheck.py), with [tool.mypy];
# - lint-imports: the import floors of the smsq package, [tool.importlinter], read on the
#   layout mypy used (tools/layout.py);
# - the unit tests, tests/unit: no service, no process, no server.

check: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/typecheck.py
	cd build/layout && $(abspath $(BIN))/lint-imports --no-cache
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

# Every figure of the README's Scaling table, each as a ratio to a reference
# measured in the same run (needs PostgreSQL and Redis on 127.0.0.1; ~10 minutes).
bench: $(BIN)/.installed
	$(BIN)/python bench/send_million.py --count 1000000 --no-tracemalloc
	$(BIN)/python bench/send_million.py --mode embedded --count 200000 --no-tracemalloc
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/report.py

clean:
	rm -rf $(VENV) demo-run *.egg-info build .mypy_cache .ruff_cache
