"""Random-access example sources: `len(r)`, `r[i] -> {"image": bytes|array, "label": int}`.

Every source can also `describe(i)` where example i lives (a file path, `dataset/split[i]`), so
any failure further down the pipeline can name the exact example at fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np


class Records(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...

    def describe(self, index: int) -> str: ...


class TfdsRecords:
    """A `tfds.data_source` reduced to (image, label); images stay encoded until `decode`."""

    def __init__(self, source: Sequence[dict], where: str, image_key: str, label_key: str):
        self.source, self.where = source, where
        self.image_key, self.label_key = image_key, label_key

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> dict[str, Any]:
        example = self.source[index]
        return {"image": example[self.image_key], "label": int(example[self.label_key])}

    def describe(self, index: int) -> str:
        return f"{self.where}[{index}]"


class Subset:
    """The examples `indices` of `records`, in that order (train_subset, skipped corrupt files)."""

    def __init__(self, records: Records, indices: Sequence[int]):
        self.records, self.indices = records, np.asarray(indices, np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.records[int(self.indices[index])]

    def describe(self, index: int) -> str:
        return self.records.describe(int(self.indices[index]))
