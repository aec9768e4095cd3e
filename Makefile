# Two commands on a fresh machine: `make train` and `make test`. Both set up .venv first if needed.
PY := .venv/bin/python
STAMP := .venv/.installed
CONFIG ?= configs/quickstart.py
WORKDIR ?= runs/quickstart

.PHONY: install test lint train bench clean

install: $(STAMP)

# Reinstall only when requirements change; uv makes a fresh install take seconds.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(PY) -m uv pip install -q --python $(PY) -r requirements.txt
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e .
	touch $(STAMP)

lint: install
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest -q -n 2 tests

train: install
	$(PY) -m vit_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

clean:
	rm -rf .venv runs
