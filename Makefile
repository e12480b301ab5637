# Play Bach: `make up` runs it, `make test` tests it. Both set themselves up on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONDONTWRITEBYTECODE := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: help setup sysdeps up test lint train bench clean

help:
	@echo "make up     improvise with the shipped model (writes out/bach.mid)"
	@echo "make test   lint and run every test"
	@echo "make train  retrain the shipped model (models/default)"
	@echo "make bench  speed measurements (figures go in README.md)"

sysdeps:
	@scripts/bootstrap.sh

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	touch $@

setup: sysdeps $(STAMP)

up: setup
	$(PY) -m trainer generate --model default --notes 256 --seed 7 --instrument "Church Organ" --bpm 80 --out out/bach.mid

test: setup lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check services tests bench

# Reproduces models/default exactly as its meta.json records.
train: setup
	$(PY) -m trainer train --preset default --name default

bench: setup
	$(PY) bench/step_vs_window.py

clean:
	rm -rf $(VENV) runs out .pytest_cache .ruff_cache
