"""The IID partition a board trains on, and the test set the server evaluates on.

Partition ``cid`` of ``num_partitions`` is one slice of a fixed permutation of
the training indices, so the partitions are disjoint, cover the training set,
and come out identical on every board. Only that slice's rows are read from
the memory-mapped store: a board never decodes or holds another board's data
(the embedded-devices example this grows from loaded all 50 on every board).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgefld.data.permutation import stable_permutation
from edgefld.data.prepare import ensure_dataset
from edgefld.errors import DataError

DEFAULT_PARTITION_SEED = 42


class PartitionError(DataError):
    """A partition that does not exist: cid out of range, or more partitions than samples allow."""


@dataclass(frozen=True)
class Partition:
    """One board's samples, in memory: 90% to train on, 10% to validate on."""

    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray


def partition_indices(
    num_samples: int, cid: int, num_partitions: int, seed: int = DEFAULT_PARTITION_SEED
) -> np.ndarray:
    """The sorted training-set indices of partition ``cid`` (sorted: sequential reads of the map)."""
    if num_partitions < 1:
        raise PartitionError(f"num_partitions is {num_partitions}: it must be at least 1")
    if not 0 <= cid < num_partitions:
        raise PartitionError(
            f"cid {cid} is out of range: with num_partitions {num_partitions}, cid must be 0..{num_partitions - 1}"
        )
    # Two samples at least, so that both the training and the validation part hold one.
    if num_partitions > num_samples // 2:
        raise PartitionError(
            f"num_partitions {num_partitions} is too many for {num_samples} training samples: "
            f"at most {num_samples // 2} (two samples each)"
        )
    order = stable_permutation(num_samples, seed)
    return np.sort(np.array_split(order, num_partitions)[cid])


def split_validation(indices: np.ndarray, cid: int, num_partitions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices, sorted: a tenth (rounded up) of the partition validates."""
    num_validation = (len(indices) + 9) // 10
    order = stable_permutation(len(indices), seed, num_partitions, cid)
    return np.sort(indices[order[num_validation:]]), np.sort(indices[order[:num_validation]])


def load_partition(
    dataset: str,
    data_dir: str | os.PathLike[str],
    cid: int,
    num_partitions: int,
    seed: int = DEFAULT_PARTITION_SEED,
) -> Partition:
    """Partition ``cid`` of ``dataset``'s training set, split 90/10 into training and validation."""
    store = ensure_dataset(dataset, data_dir)
    indices = partition_indices(len(store.train_y), cid, num_partitions, seed)
    train, validation = split_validation(indices, cid, num_partitions, seed)
    # Fancy indexing the memory map reads just these rows into new arrays (plain
    # ndarrays: asarray drops the memmap subclass, whose file the copy does not use).
    images, labels = np.asarray(store.train_x), np.asarray(store.train_y)
    return Partition(train_x=images[train], train_y=labels[train], val_x=images[validation], val_y=labels[validation])


def load_test(dataset: str, data_dir: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The whole test set as in-memory (images, labels), for the server's centralised evaluation."""
    store = ensure_dataset(dataset, data_dir)
    return np.array(store.test_x), np.array(store.test_y)
