"""The ViT size table: the single source of truth for every variant string.

Widths, depths, MLP sizes and head counts follow Table 2 of "Scaling Vision Transformers"
(Zhai et al., 2021), as big_vision does. A variant string is ``"<size>/<patch>"`` (``"B/16"``,
``"S/1"`` for pixel tokens) or ``"<size>/<ph>x<pw>"`` for rectangular patches.
"""

from __future__ import annotations

from typing import NamedTuple


class Size(NamedTuple):
    width: int
    depth: int
    mlp_dim: int
    num_heads: int


SIZES: dict[str, Size] = {
    "mu": Size(32, 1, 128, 2),
    "Ti": Size(192, 12, 768, 3),
    "S": Size(384, 12, 1536, 6),
    "M": Size(512, 12, 2048, 8),
    "B": Size(768, 12, 3072, 12),
    "L": Size(1024, 24, 4096, 16),
    "So400m": Size(1152, 27, 4304, 16),
    "H": Size(1280, 32, 5120, 16),
    "g": Size(1408, 40, 6144, 16),
    "g-opt": Size(1536, 40, 6144, 16),
    "G": Size(1664, 48, 8192, 16),
    "G-opt": Size(1536, 48, 8192, 16),
    "e": Size(1792, 56, 15360, 16),
}


def parse_variant(variant: str) -> dict:
    """``"B/16"`` -> dict(width=768, depth=12, mlp_dim=3072, num_heads=12, patch_size=(16, 16)).

    The patch part is optional (``"B"`` gives the size only) so a config can set it separately.
    """
    if not isinstance(variant, str) or not variant:
        raise ValueError(f"variant must be a string like 'B/16', got {variant!r}")
    name, _, patch = variant.partition("/")
    if name not in SIZES:
        raise ValueError(
            f"unknown ViT size {name!r} in variant {variant!r}; valid sizes: {', '.join(SIZES)}"
        )
    out = SIZES[name]._asdict()
    if patch:
        out["patch_size"] = _parse_patch(patch, variant)
    return out


def _parse_patch(text: str, variant: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sizes = tuple(int(p) for p in parts)
    except ValueError:
        sizes = ()
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 1:
        raise ValueError(
            f"bad patch size {text!r} in variant {variant!r}; "
            "use a positive integer ('B/16') or HxW ('B/16x8')"
        )
    return sizes  # type: ignore[return-value]
