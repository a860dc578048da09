"""A permutation that is the same on every board, whatever its numpy version.

Every client of a federation computes the partitions on its own, so all of
them must shuffle identically. numpy's generators do not promise the same
stream across releases (NEP 19) and a fleet mixes old JetPack numpy 1.x with
numpy 2 on newer boards. This permutation sorts indices by a SplitMix64 hash
of (key, index): fixed arithmetic, vectorised, no per-index Python work.
"""

from __future__ import annotations

import numpy as np

_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB


def _splitmix64(value: int) -> int:
    z = (value + _GAMMA) & _MASK64
    z = ((z ^ (z >> 30)) * _MUL1) & _MASK64
    z = ((z ^ (z >> 27)) * _MUL2) & _MASK64
    return z ^ (z >> 31)


def _splitmix64_array(values: np.ndarray) -> np.ndarray:
    # uint64 array arithmetic wraps modulo 2**64, which is what SplitMix64 specifies.
    z = values + np.uint64(_GAMMA)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(_MUL1)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(_MUL2)
    return z ^ (z >> np.uint64(31))


def stable_permutation(n: int, *key: int) -> np.ndarray:
    """A permutation of range(n) (int64) fixed by ``key`` (e.g. a seed, then a partition id)."""
    mixed = 0
    for part in key:
        mixed = _splitmix64(mixed ^ (part & _MASK64))
    hashes = _splitmix64_array(np.arange(n, dtype=np.uint64) + np.uint64(mixed))
    return np.argsort(hashes, kind="stable").astype(np.int64)
