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

.PHONY: install test lint train bench bench-peers clean test-latest test-latest-core device-check bench-input bench-packing

install: $(STAMP)

# Reinstall only when requirements or the accelerator change; uv makes a fresh install take
# seconds. The accelerator's JAX plugin is pinned to requirements.txt's JAX version. Bytecode
# is compiled at install (~10 s once): uv leaves it to the first import, which cannot write it
# where PYTHONDONTWRITEBYTECODE is set, and then every process parses jax, flax and the rest
# again (`import vit_jax.train` 4.7 s instead of 2.4 s; the suite starts hundreds of them).
# Our own editable package is left out: ~0.25 s, and its sources change under it.
UV_INSTALL = -m uv pip install -q --compile-bytecode
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(PY) $(UV_INSTALL) --python $(PY) -r requirements.txt
	$(PY) -m uv pip install -q --python $(PY) --no-deps -e .
	$(PY) -m uv pip uninstall -q --python $(PY) $(PLUGINS)  # a previous accelerator's
	test $(ACCEL) = cpu || $(PY) $(UV_INSTALL) --python $(PY) "jax[$(ACCEL)]==$(JAX_VERSION)"
	rm -f .venv/.installed-*
	echo $(ACCEL) > .venv/accel
	touch $(STAMP)

lint: install
	$(PY) -m ruff check .
	.venv/bin/lint-imports

test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile --durations=15 README.md tests

# The same code on the newest releases (requirements-latest.txt: jax 0.12, flax 0.12.12) and
# Python 3.12, in .venv-latest. CI runs the core: the README as a user types it (what someone
# installing today runs), the model, training, checkpoint, sharding, data and conversion tests,
# and kill -9 then a bitwise resume (orbax's newest releases change most there), ~12 min on 2
# cores; test-latest is the whole suite (~25 min), over CI's time beside `make test`.
LATEST_PY ?= $(or $(firstword $(wildcard $(HOME)/.pyenv/versions/3.12*/bin/python)),python3.12)
LATEST := .venv-latest/bin/python
LATEST_STAMP := .venv-latest/.installed
CORE_TESTS := README.md tests/test_models_*.py tests/test_attention.py tests/test_optim.py \
	tests/test_checkpoints.py tests/test_train.py tests/test_sharding.py tests/test_data*.py \
	tests/test_convert.py tests/test_loading.py tests/test_evaluators.py tests/test_resample.py \
	tests/test_flexi.py tests/test_packing.py tests/test_contract.py tests/test_resume_kill.py

test-latest: $(LATEST_STAMP)
	$(LATEST) -m pytest -q -n 2 --dist loadfile README.md tests

test-latest-core: $(LATEST_STAMP)
	$(LATEST) -m pytest -q -n 2 --dist loadfile --durations=10 $(CORE_TESTS)

$(LATEST_STAMP): requirements-latest.txt pyproject.toml
	test -x $(LATEST) || $(LATEST_PY) -m venv .venv-latest
	$(LATEST) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(LATEST) $(UV_INSTALL) --python $(LATEST) -r requirements-latest.txt
	$(LATEST) -m uv pip install -q --python $(LATEST) --no-deps -e .
	touch $(LATEST_STAMP)

train: install
	$(PY) -m vit_jax.main --config=$(CONFIG) --workdir=$(WORKDIR)

# Benchmarks (benchmarks/RESULTS.md); bench-peers also times timm, from its own venv: torch and
# timm are never vit_jax dependencies. pip (not uv) takes torch from this machine's local cache.
bench: install
	$(PY) -m benchmarks.throughput

# The device check on this machine's accelerator (~7 min on one H200; `make install ACCEL=...`
# first): writes benchmarks/RESULTS_GPU.md. timm's side comes from .venv-peers when present.
# The host input pipeline per CPU core on ImageNet-style JPEGs (benchmarks/INPUT_PIPELINE.md);
# torchvision beside it from .venv-peers when present.
bench-input: install
	$(PY) -m benchmarks.input_pipeline --peers

# Packed (NaViT) vs padded training on images of mixed sizes (benchmarks/PACKING.md).
bench-packing: install
	$(PY) -m benchmarks.packing

device-check: install
	PYTHON=$(PY) scripts/device_check.sh

bench-peers: install $(PEERS_STAMP)
	$(PY) -m benchmarks.throughput --peers

$(PEERS_STAMP):
	test -x $(PEERS) || python3 -m venv .venv-peers
	$(PEERS) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PEERS) -m pip install -q timm==1.0.31
	touch $(PEERS_STAMP)

clean:
	rm -rf .venv .venv-latest runs
