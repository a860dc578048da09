"""Datasets: fetched or imported once, stored preprocessed, read one partition at a time.

Numpy only: no training framework is imported here, so every backend (and the
server) reads the same uint8 arrays and converts them itself.

    ensure_dataset("mnist", data_dir)          # DataError saying how to get it, if missing
    part = load_partition("mnist", data_dir, cid=3, num_partitions=50)
    part.train_x.shape                          # (1080, 28, 28, 1), uint8
"""

from __future__ import annotations

from edgefld.data.download import download_dataset
from edgefld.data.importer import import_dataset
from edgefld.data.partition import (
    DEFAULT_PARTITION_SEED,
    Partition,
    PartitionError,
    PartitionSummary,
    load_partition,
    load_test,
    partition_summaries,
)
from edgefld.data.prepare import DatasetStatus, dataset_status, ensure_dataset
from edgefld.data.sources import DATASETS, DatasetSpec, SourceFile
from edgefld.data.store import StoredDataset, open_store

__all__ = [
    "DATASETS",
    "DEFAULT_PARTITION_SEED",
    "DatasetSpec",
    "DatasetStatus",
    "Partition",
    "PartitionError",
    "PartitionSummary",
    "SourceFile",
    "StoredDataset",
    "dataset_status",
    "download_dataset",
    "ensure_dataset",
    "import_dataset",
    "load_partition",
    "load_test",
    "open_store",
    "partition_summaries",
]
