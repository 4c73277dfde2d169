PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup test demo bench clean

# One shared step for every target: a virtualenv with the pinned requirements.
setup: $(STAMP)

$(STAMP): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

demo: setup
	$(BIN)/python -m inference detect tests/data/photos/*.jpg --annotate var/demo
	@echo "annotated copies: var/demo/"

bench: setup
	$(BIN)/python bench/inference.py

clean:
	rm -rf $(VENV) var
