"""The partition a board trains on, and the test set the server evaluates on.

IID (the default): partition ``cid`` of ``num_partitions`` is one slice of a fixed
permutation of the training indices. Dirichlet (non-IID): each class's indices,
in a fixed permutation, are cut among the partitions in proportions drawn from
Dirichlet(alpha) (Hsu, Qi and Brown 2019, "Measuring the effects of non-identical
data distribution", as Flower Datasets' DirichletPartitioner does), so partitions
differ in size and label mix. Either way the partitions are disjoint, cover the
training set, and come out identical on every board (every draw is numpy-version
independent: edgefld.data.permutation). A board reads the label column (one byte
a sample) to compute a Dirichlet split, and only its own partition's images from
the memory-mapped store: it never decodes or holds another board's data (the
embedded-devices example this grows from loaded all 50 on every board).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgefld.config.schema import key
from edgefld.data.permutation import stable_log_gamma_variates, stable_permutation
from edgefld.data.prepare import ensure_dataset
from edgefld.errors import DataError

DEFAULT_PARTITION_SEED = 42
PARTITIONINGS = key("server", "partitioning").choices  # the schema says which there are
# A Dirichlet draw that leaves a partition with fewer than MIN_PARTITION_SAMPLES (one to train on, one to
# validate on) is drawn again, at most this many times, as Flower Datasets' DirichletPartitioner does.
DIRICHLET_ATTEMPTS = 10
MIN_PARTITION_SAMPLES = 2


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


def dirichlet_partitions(labels: np.ndarray, num_partitions: int, alpha: float,
                         seed: int = DEFAULT_PARTITION_SEED) -> list[np.ndarray]:
    """Every partition's sorted training-set indices under a Dirichlet(alpha) split of each class."""
    if num_partitions < 1:
        raise PartitionError(f"num_partitions is {num_partitions}: it must be at least 1")
    if not alpha > 0:
        raise PartitionError(f"dirichlet alpha is {alpha}: it must be > 0")
    labels = np.asarray(labels)
    classes = np.unique(labels)
    sizes = np.zeros(num_partitions, dtype=np.int64)
    for attempt in range(DIRICHLET_ATTEMPTS):
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_partitions)]
        for label in classes:
            members = np.flatnonzero(labels == label)
            members = members[stable_permutation(len(members), seed, attempt, int(label))]
            log_gammas = stable_log_gamma_variates(alpha, num_partitions, seed, attempt, int(label))
            shares = np.exp(log_gammas - log_gammas.max())
            shares /= shares.sum()
            cuts = np.floor(np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
            for partition, chunk in enumerate(np.split(members, np.minimum(cuts, len(members)))):
                chunks[partition].append(chunk)
        parts = [np.sort(np.concatenate(c)) for c in chunks]
        sizes = np.array([len(p) for p in parts])
        if sizes.min() >= MIN_PARTITION_SAMPLES:
            return parts
    raise PartitionError(
        f"a dirichlet split with alpha {alpha} leaves partition {int(sizes.argmin())} of {num_partitions} with "
        f"{int(sizes.min())} sample(s) in {DIRICHLET_ATTEMPTS} draws: raise dirichlet_alpha or lower num_partitions")


def partition_of(labels: np.ndarray, cid: int, num_partitions: int, seed: int = DEFAULT_PARTITION_SEED,
                 partitioning: str = "iid", alpha: float = 0.5) -> np.ndarray:
    """The sorted training-set indices of partition ``cid`` under ``partitioning`` ("iid" or "dirichlet")."""
    if partitioning == "iid":
        return partition_indices(len(labels), cid, num_partitions, seed)
    if partitioning != "dirichlet":
        raise PartitionError(f'partitioning "{partitioning}" is unknown: one of {", ".join(PARTITIONINGS)}')
    if not 0 <= cid < num_partitions:
        raise PartitionError(
            f"cid {cid} is out of range: with num_partitions {num_partitions}, cid must be 0..{num_partitions - 1}")
    return dirichlet_partitions(labels, num_partitions, alpha, seed)[cid]


def validation_size(partition_size: int) -> int:
    """Rows of a partition that validate: a tenth, rounded up; the rest train."""
    return (partition_size + 9) // 10


def split_validation(indices: np.ndarray, cid: int, num_partitions: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices, sorted (sizes: validation_size)."""
    num_validation = validation_size(len(indices))
    order = stable_permutation(len(indices), seed, num_partitions, cid)
    return np.sort(indices[order[num_validation:]]), np.sort(indices[order[:num_validation]])


def load_partition(
    dataset: str,
    data_dir: str | os.PathLike[str],
    cid: int,
    num_partitions: int,
    seed: int = DEFAULT_PARTITION_SEED,
    partitioning: str = "iid",
    alpha: float = 0.5,
) -> Partition:
    """Partition ``cid`` of ``dataset``'s training set, split 90/10 into training and validation."""
    store = ensure_dataset(dataset, data_dir)
    if partitioning == "iid":  # the labels are not needed: nothing but this partition's rows is read
        indices = partition_indices(len(store.train_y), cid, num_partitions, seed)
    else:
        indices = partition_of(np.asarray(store.train_y), cid, num_partitions, seed, partitioning, alpha)
    train, validation = split_validation(indices, cid, num_partitions, seed)
    # Fancy indexing the memory map reads just these rows into new arrays (plain
    # ndarrays: asarray drops the memmap subclass, whose file the copy does not use).
    images, labels = np.asarray(store.train_x), np.asarray(store.train_y)
    return Partition(train_x=images[train], train_y=labels[train], val_x=images[validation], val_y=labels[validation])


def load_test(dataset: str, data_dir: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """The whole test set as in-memory (images, labels), for the server's centralised evaluation."""
    store = ensure_dataset(dataset, data_dir)
    return np.array(store.test_x), np.array(store.test_y)


@dataclass(frozen=True)
class PartitionSummary:
    """One partition as `edgefl data status --partitions` shows it."""

    cid: int
    size: int  # training-set samples, before the 90/10 validation split
    label_counts: tuple[int, ...]  # per class, 0..num_classes - 1


def partition_summaries(dataset: str, data_dir: str | os.PathLike[str], num_partitions: int,
                        seed: int = DEFAULT_PARTITION_SEED, partitioning: str = "iid",
                        alpha: float = 0.5) -> list[PartitionSummary]:
    """Every partition's size and label histogram (reads the label column only)."""
    store = ensure_dataset(dataset, data_dir)
    labels = np.asarray(store.train_y)
    num_classes = int(labels.max()) + 1 if len(labels) else 0
    if partitioning == "dirichlet":
        parts = dirichlet_partitions(labels, num_partitions, alpha, seed)
    else:
        partition_indices(len(labels), 0, num_partitions, seed)  # its checks of num_partitions
        parts = [np.sort(part) for part in np.array_split(stable_permutation(len(labels), seed), num_partitions)]
    return [PartitionSummary(cid, len(part), tuple(int(n) for n in np.bincount(labels[part], minlength=num_classes)))
            for cid, part in enumerate(parts)]
