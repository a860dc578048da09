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


def stable_uniforms(n: int, *key: int) -> np.ndarray:
    """``n`` float64 draws from (0, 1) fixed by ``key``, the same whatever the numpy version (SplitMix64)."""
    mixed = 0
    for part in key:
        mixed = _splitmix64(mixed ^ (part & _MASK64))
    hashes = _splitmix64_array(np.arange(n, dtype=np.uint64) + np.uint64(mixed))
    # The top 53 bits, centred in their interval: never exactly 0 or 1 (logarithms of them are finite).
    return ((hashes >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def stable_log_gamma_variates(shape: float, n: int, *key: int) -> np.ndarray:
    """log of ``n`` Gamma(shape, 1) draws fixed by ``key``, numpy-version independent (stable_uniforms).

    Marsaglia and Tsang's method (ACM TOMS 26(3), 2000) for shape + 1, with their boost
    Gamma(a) = Gamma(a + 1) * U^(1/a) for any a, kept in logarithms: with a small shape (a Dirichlet
    alpha of 0.01) U^(1/a) underflows float64, its logarithm does not. Vectorised; each round
    redraws only the rejected ones (about 2-5% per round)."""
    d = shape + 1.0 - 1.0 / 3.0
    c = 1.0 / np.sqrt(9.0 * d)
    log_values = np.empty(n)
    pending = np.arange(n)
    for attempt in range(1000):  # each round accepts > 95%: 1000 rounds are never needed
        if len(pending) == 0:
            break
        u1, u2, u3 = (stable_uniforms(len(pending), *key, attempt, which) for which in range(3))
        x = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)  # Box-Muller: a standard normal
        v = (1.0 + c * x) ** 3
        ok = v > 0
        safe_v = np.where(ok, v, 1.0)
        accepted = ok & (np.log(u3) < 0.5 * x * x + d - d * safe_v + d * np.log(safe_v))
        log_values[pending[accepted]] = np.log(d * safe_v[accepted])
        pending = pending[~accepted]
    if len(pending):
        raise RuntimeError("gamma sampling did not converge")  # probability below 1e-1000
    boost = np.log(stable_uniforms(n, *key, 1 << 32)) / shape
    result: np.ndarray = log_values + boost
    return result
