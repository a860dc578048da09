"""The training order every backend shares (base.shuffle_orders, base.batch_slices): framework-free."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from edgefld.backends.base import batch_slices, shuffle_orders


def test_orders_are_numpys_permutations_one_per_epoch():
    # The documented contract other backends (and their agreement tests) rely on:
    # np.random.default_rng(seed).permutation(n), drawn once per epoch from one generator.
    rng = np.random.default_rng(7)
    expected = [rng.permutation(10) for _ in range(3)]
    orders = list(shuffle_orders(10, 3, seed=7))
    assert len(orders) == 3 and all(np.array_equal(a, b) for a, b in zip(orders, expected, strict=True))
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[0], next(shuffle_orders(10, 1, seed=8)))


@pytest.mark.parametrize(
    ("num_examples", "batch_size", "sizes"),
    [
        (8, 4, [4, 4]),
        (9, 4, [4, 5]),  # a lone trailing sample joins the batch before it
        (10, 4, [4, 4, 2]),
        (5, 8, [5]),
        (1, 4, [1]),  # a single sample is all there is
        (3, 1, [1, 2]),  # batches of one asked for: the last still joins the one before
    ],
)
def test_batches_cover_the_order_once(num_examples, batch_size, sizes):
    slices = batch_slices(num_examples, batch_size)
    assert [s.stop - s.start for s in slices] == sizes
    assert slices[0].start == 0 and slices[-1].stop == num_examples
    assert all(a.stop == b.start for a, b in itertools.pairwise(slices))
