"""What every command line of the project shares: bad input is one line on stderr, exit code 2.

absl and ml_collections report a mistyped ``--config.x=y`` as a page of traceback (or a
``FATAL Flags parsing error`` naming no valid choice). ``run`` parses the flags itself and, when
that fails, works out what the user got wrong: a config file that does not exist or whose
argument it rejects, a key that is not in the config (with the nearest valid key and the valid
keys of that section), or a value of the wrong type.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from absl import app, flags

USAGE_EXIT = 2  # what argparse and most Unix tools return for bad usage


def print_error(message: str) -> None:
    """``error: message`` on stderr, folded onto one line."""
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """Prints ``error: message`` (one line) and exits with code 2."""
    print_error(message)
    sys.exit(USAGE_EXIT)


def run(main: Callable[[list[str]], Any], *, config_flag: str = "config") -> None:
    """``absl.app.run(main)`` with flag errors explained in one line (see module docstring).
    ``main`` receives argv as with absl; a leftover positional argument is an error."""

    def parse(argv: list[str]) -> list[str]:
        try:
            rest = flags.FLAGS(argv)
            config = flags.FLAGS[config_flag].value if config_flag in flags.FLAGS else None
            if config is not None:  # a file that failed to load raises only when used
                config.keys()
        except Exception as e:  # noqa: BLE001 -- every parse failure becomes one line
            fail(explain_flag_error(argv[1:], e, config_flag))
        if len(rest) > 1:
            fail(f"unexpected arguments {rest[1:]}: every option is a --flag=value "
                 f"(see --help)")
        return rest

    app.run(main, flags_parser=parse)


def explain_flag_error(args: Sequence[str], error: BaseException, config_flag: str) -> str:
    """One line saying which flag was wrong and what would be valid."""
    value = _flag_value(args, config_flag)
    if value is not None:
        config, problem = config_from_flag(value, config_flag)
        if problem:
            return problem
        for name, _ in _overrides(args, config_flag):
            problem = unknown_key(config, name, config_flag)
            if problem:
                return problem
    text = str(error).strip().strip("'\"")
    first = text.splitlines()[0] if text else type(error).__name__
    if "is not supported for overriding" in first:  # a None field without a declared type
        first = first.split(" Currently supported")[0]
    return first.removeprefix("flag ")


def config_from_flag(value: str, flag: str = "config") -> tuple[Any, str | None]:
    """(the config ``--flag=PATH[:ARG]`` names, None) or (None, what is wrong with it)."""
    path, _, arg = value.partition(":")
    if not os.path.isfile(os.path.expanduser(path)):
        here = sorted(f for f in os.listdir("configs") if f.endswith(".py")) \
            if os.path.isdir("configs") else []
        hint = f"; configs/ here has {', '.join(here)}" if here else ""
        return None, (f"--{flag}={value}: no such config file (relative paths start in "
                      f"{os.getcwd()}){hint}")
    from vit_jax.config import load_config_file  # jax and flax: only once something failed

    try:
        config = load_config_file(path, arg or None)
    except Exception as e:  # noqa: BLE001 -- the config file's own message is the story
        return None, f"--{flag}={value}: {type(e).__name__}: {e}"
    return config, None


def unknown_key(config: Any, name: str, flag: str = "config") -> str | None:
    """What is wrong with the dotted key ``name`` of ``config`` (None when it exists)."""
    node, walked = config, flag
    for part in name.split("."):
        keys = list(node.keys()) if hasattr(node, "keys") else []
        if part not in keys:
            if not keys:
                return f"--{walked}.{part}: {walked} is a value ({node!r}), not a section"
            near = difflib.get_close_matches(part, keys, n=1)
            hint = f" (did you mean {walked}.{near[0]}?)" if near else ""
            return (f"--{walked}.{part}: no key {part!r} in {walked}{hint}; valid keys: "
                    f"{', '.join(sorted(keys))}")
        node, walked = node[part], f"{walked}.{part}"
    return None


def _flag_value(args: Sequence[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(f"--{name}="):
            return a.split("=", 1)[1]
        if a == f"--{name}" and i + 1 < len(args):
            return args[i + 1]
    return None


def _overrides(args: Sequence[str], name: str) -> list[tuple[str, str | None]]:
    """(dotted key, value) of every ``--name.key=value`` in ``args``."""
    out = []
    for a in args:
        if a.startswith(f"--{name}."):
            key, eq, val = a[len(name) + 3:].partition("=")
            out.append((key, val if eq else None))
    return out
