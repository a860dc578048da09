"""Model weights <-> Flower records: every weight in one packed array, in the task's canonical order.

Flower sends each Array of a message as objects of its own, one HTTP request each,
two at a time; cifar10's MobileNetV3-small has 244 arrays, so a message of one
array per weight is hundreds of requests per board and round. Packed, a message
is a handful of objects (and a model over 5 MiB a few chunks). The shapes are not
sent: both ends know them from the task's weight layout (edgefld.backends.layout).

The packed array travels as float32 or float16 ([server] transport_dtype): float16
halves the bytes of a round. Whoever unpacks gets float32 arrays, so boards train
and the server aggregates in float32 whatever went over the wire.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

PACKED = "weights"
TRANSPORT_DTYPES = ("float32", "float16")
COMPUTE_DTYPE = np.float32


def record_from(weights: Sequence[np.ndarray], transport_dtype: str = "float32") -> ArrayRecord:
    """One Array: every weight raveled, in order, cast to ``transport_dtype``."""
    if transport_dtype not in TRANSPORT_DTYPES:
        raise ValueError(f'transport dtype "{transport_dtype}" is not one of {", ".join(TRANSPORT_DTYPES)}')
    packed = (np.concatenate([np.ravel(w) for w in weights]) if weights
              else np.zeros(0, COMPUTE_DTYPE)).astype(transport_dtype, copy=False)
    return ArrayRecord({PACKED: Array(packed)})


def transport_dtype_of(record: ArrayRecord) -> str:
    """The dtype the packed weights travelled as (a board answers in the dtype it was sent)."""
    return str(_packed(record).dtype)


def weights_from(record: ArrayRecord, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """The float32 weights of the given shapes, from a record made by record_from."""
    flat = _packed(record).astype(COMPUTE_DTYPE, copy=False)
    sizes = [int(np.prod(shape, dtype=np.int64)) for shape in shapes]
    if flat.size != sum(sizes):
        raise ValueError(f"packed weights hold {flat.size} values; the model's {len(sizes)} arrays need {sum(sizes)}")
    offsets = np.cumsum([0, *sizes])
    return [flat[start:end].reshape(shape) for start, end, shape in zip(offsets[:-1], offsets[1:], shapes, strict=True)]


def to_compute_dtype(record: ArrayRecord) -> ArrayRecord:
    """The same packed weights as float32: what the server aggregates (float16 sums lose precision)."""
    return ArrayRecord({PACKED: Array(_packed(record).astype(COMPUTE_DTYPE, copy=False))})


def to_global_model(record: ArrayRecord) -> ArrayRecord:
    """A strategy's aggregate as the float32 global model: FedAdam's and FedYogi's arithmetic with numpy
    float64 scalars (their bias correction) gives float64, which the model, its checkpoint and the wire do
    not take."""
    if list(record.keys()) != [PACKED] or record[PACKED].numpy().ndim != 1:
        raise ValueError(f'expected one packed array "{PACKED}", got {", ".join(record.keys()) or "none"}')
    flat = record[PACKED].numpy()
    if flat.dtype == COMPUTE_DTYPE:
        return record
    if not np.issubdtype(flat.dtype, np.floating):
        raise ValueError(f"the aggregate is {flat.dtype}, not floating point")
    return ArrayRecord({PACKED: Array(flat.astype(COMPUTE_DTYPE))})


def _packed(record: ArrayRecord) -> np.ndarray:
    if list(record.keys()) != [PACKED]:
        raise ValueError(f'expected one packed array "{PACKED}", got {", ".join(record.keys()) or "none"}')
    flat = record[PACKED].numpy()
    if flat.ndim != 1 or str(flat.dtype) not in TRANSPORT_DTYPES:
        raise ValueError(f"packed weights must be a vector of {' or '.join(TRANSPORT_DTYPES)}, "
                         f"got {flat.dtype} of shape {flat.shape}")
    return flat
