# Two commands on a fresh machine: `make train` and `make test`. Both set up .venv first if needed.
PY := .venv/bin/python
# What JAX is installed for: cpu (default), cuda13, cuda12, tpu, or auto (detected by
# scripts/detect_accel.sh). `make install ACCEL=...` remembers the choice in .venv/accel, so
# later `make train` / `make test` keep that install.
ACCELS := cpu cuda13 cuda12 tpu auto
ACCEL ?= $(shell cat .venv/accel 2>/dev/null || echo cpu)
ifeq ($(filter $(ACCEL),$(ACCELS)),)
$(error ACCEL=$(ACCEL) is not one of: $(ACCELS))
endif
ifeq ($(ACCEL),auto)
override ACCEL := $(shell sh scripts/detect_accel.sh)
endif
JAX_VERSION := $(shell sed -n 's/^jax==//p' requirements.txt)
PLUGINS := jax-cuda12-plugin jax-cuda12-pjrt jax-cuda13-plugin jax-cuda13-pjrt libtpu
STAMP := .venv/.installed-$(ACCEL)
CONFIG ?= configs/quickstart.py
WORKDIR ?= runs/quickstart

PEERS := .venv-peers/bin/python
PEERS_STAMP := .venv-peers/.installed

.PHONY: install test lint train bench bench-peers clean

install: $(STAMP)

# Reinstall only when requirements or the accelerator change; uv makes a fresh install take
# seconds. The accelerator's JAX plugin is pinned to requirements.txt's JAX version.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(PY) -m uv pip install -q --python $(PY) -r requirements.txt
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e .
	$(PY) -m uv pip uninstall -q --python $(PY) $(PLUGINS)  # a previous accelerator's
	test $(ACCEL) = cpu || $(PY) -m uv pip install -q --python $(PY) "jax[$(ACCEL)]==$(JAX_VERSION)"
	rm -f .venv/.installed-*
	echo $(ACCEL) > .venv/accel
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
