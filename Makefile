# Two commands on a fresh machine: `make train` and `make test`. Both set up .venv first if needed.
PY := .venv/bin/python
STAMP := .venv/.installed
CONFIG ?= configs/quickstart.py
WORKDIR ?= runs/quickstart

PEERS := .venv-peers/bin/python
PEERS_STAMP := .venv-peers/.installed

.PHONY: install test lint train bench bench-peers clean

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
	.venv/bin/lint-imports

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile README.md tests

train: install
	$(PY) -m vit_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

# Benchmarks (benchmarks/RESULTS.md); bench-peers also times timm, from its own venv: torch and
# timm are never vit_jax dependencies. pip (not uv) takes torch from this machine's local cache.
bench: install
	$(PY) -m benchmarks.throughput

bench-peers: install $(PEERS_STAMP)
	$(PY) -m benchmarks.throughput --peers

$(PEERS_STAMP):
	test -x $(PEERS) || python3 -m venv .venv-peers
	$(PEERS) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PEERS) -m pip install -q timm==1.0.31
	touch $(PEERS_STAMP)

clean:
	rm -rf .venv runs
