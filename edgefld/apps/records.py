"""Model weights <-> Flower records, in the task's one canonical order."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord


def weights_from(record: ArrayRecord) -> list[np.ndarray]:
    return [array.numpy() for array in record.values()]


def record_from(weights: list[np.ndarray]) -> ArrayRecord:
    # Positional keys keep the order of the task's weight layout (see the backends' weight_names).
    return ArrayRecord({f"{i:04d}": Array(np.ascontiguousarray(w)) for i, w in enumerate(weights)})
