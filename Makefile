PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LOCKS := requirements/runtime.txt requirements/demo.txt requirements/dev.txt
# The locks are resolved from pyproject.toml; every pin carries its hashes.
COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(BIN)/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links

.PHONY: setup lock lint format test test-fast wheel demo run user bench clean

# One shared step for every target: a virtualenv with the locked requirements (dev.txt:
# runtime, tests, checks and demo), and the `vigil` command on this checkout.
setup: $(STAMP)

$(STAMP): requirements.txt $(LOCKS) pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation --editable .
	touch $(STAMP)

# Re-resolve the locks after a change to the dependencies in pyproject.toml.
lock: setup
	$(COMPILE) --output-file requirements/runtime.txt pyproject.toml
	$(COMPILE) --extra embedded --extra demo --output-file requirements/demo.txt pyproject.toml
	$(COMPILE) --all-extras --output-file requirements/dev.txt pyproject.toml

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Rewrites files: the fixes ruff can make, then its formatting.
format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Pure functions and objects only: no server, no subprocess (seconds).
test-fast: setup
	$(BIN)/python -m pytest -m unit -q

test: setup
	$(BIN)/python -m pytest -q

# The installable wheel, in dist/.
wheel: setup
	$(BIN)/pip wheel --quiet --no-deps --no-build-isolation --wheel-dir dist .

# The whole system on this machine: servers, web, workers, beat, a stream of real photos.
demo: setup
	$(BIN)/python -m demo

# Everything in the Procfile on the embedded servers, in the foreground; Ctrl-C stops all.
# RUN_DIR holds the servers' data, the generated secrets and dev.env (what `make user` reads).
RUN_DIR ?= var
run: setup
	$(BIN)/python -m demo.run --var-dir "$(RUN_DIR)"

# A user with a first home on the servers `make run` is running (in another terminal):
# make user EMAIL=ana@example.com PASSWORD=... [HOME_NAME=Home] [TIER=standard]
HOME_NAME ?= Home
TIER ?= standard
user:
	@test -n "$(EMAIL)" || { echo "usage: make user EMAIL=... PASSWORD=..." >&2; exit 2; }
	@test -f "$(RUN_DIR)/dev.env" || { echo "make user: start the servers first: make run (in another terminal)" >&2; exit 1; }
	@set -a && . "$(abspath $(RUN_DIR))/dev.env" && set +a && $(BIN)/vigil users create \
		"$(EMAIL)" --home "$(HOME_NAME)" --tier "$(TIER)" $(if $(PASSWORD),--password "$(PASSWORD)")

bench: setup
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) var build dist *.egg-info
