"""``tiny_config()`` as a config file, for tests that run ``python -m vit_jax.main``:

  python -m vit_jax.main --config=tests/config_tiny.py --workdir=/tmp/w --config.total_steps=10

(run from the repository root, so that ``tests.helpers`` imports).
"""

from tests.helpers import tiny_config


def get_config(arg: str | None = None):
    return tiny_config()
