PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo run bench clean

# One shared step for every target: a virtualenv with the pinned requirements.
setup: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

# The whole system on this machine: servers, web, workers, beat, a stream of real photos.
demo: setup
	$(BIN)/python -m demo

# Everything in the Procfile on the embedded servers, in the foreground; Ctrl-C stops all.
run: setup
	$(BIN)/python -m demo.run

bench: setup
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) var
