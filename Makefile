# edgefl developer and packaging entry points. `make demo` and `make test` work
# on a fresh Debian 12: they create .venv themselves.

PYTHON ?= python3
comma := ,
VENV ?= .venv
EXTRAS ?= dev,torch
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edgefl-$(subst $(comma),-,$(EXTRAS))

PYTEST_ARGS ?=

.PHONY: demo test venv clean default-config

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap-venv
	PYTHON=$(PYTHON) scripts/bootstrap-venv $(VENV) $(EXTRAS)
	touch $@

demo: venv
	$(VENV)/bin/edgefl demo

test: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Regenerate the shipped etc/edgefl.toml from the schema (a test checks they match).
default-config: venv
	$(VENV)/bin/edgefl default-config > etc/edgefl.toml

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
