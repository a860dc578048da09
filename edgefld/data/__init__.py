"""Datasets: fetched or imported once, stored preprocessed, read one partition at a time.

Numpy only: no training framework is imported here, so every backend (and the
server) reads the same uint8 arrays and converts them itself.

    ensure_dataset("mnist", data_dir)          # DataError saying how to get it, if missing
    part = load_partition("mnist", data_dir, cid=3, num_partitions=50)
    part.train_x.shape                          # (1080, 28, 28, 1), uint8
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the names as type checkers see them (tests/data check they match _HOMES)
    from edgefld.data.download import download_dataset as download_dataset
    from edgefld.data.importer import import_dataset as import_dataset
    from edgefld.data.partition import DEFAULT_PARTITION_SEED as DEFAULT_PARTITION_SEED
    from edgefld.data.partition import Partition as Partition
    from edgefld.data.partition import PartitionError as PartitionError
    from edgefld.data.partition import PartitionSummary as PartitionSummary
    from edgefld.data.partition import load_partition as load_partition
    from edgefld.data.partition import load_test as load_test
    from edgefld.data.partition import partition_summaries as partition_summaries
    from edgefld.data.prepare import DatasetStatus as DatasetStatus
    from edgefld.data.prepare import dataset_status as dataset_status
    from edgefld.data.prepare import ensure_dataset as ensure_dataset
    from edgefld.data.sources import DATASETS as DATASETS
    from edgefld.data.sources import DatasetSpec as DatasetSpec
    from edgefld.data.sources import SourceFile as SourceFile
    from edgefld.data.store import StoredDataset as StoredDataset
    from edgefld.data.store import open_store as open_store

# Each name's module, imported on first use (PEP 562): `edgefl --help`, the client daemon and the
# config tools import modules of this package (the datasets' names) without loading numpy and the
# downloaders.
_HOMES = {
    "DATASETS": "edgefld.data.sources",
    "DEFAULT_PARTITION_SEED": "edgefld.data.partition",
    "DatasetSpec": "edgefld.data.sources",
    "DatasetStatus": "edgefld.data.prepare",
    "Partition": "edgefld.data.partition",
    "PartitionError": "edgefld.data.partition",
    "PartitionSummary": "edgefld.data.partition",
    "SourceFile": "edgefld.data.sources",
    "StoredDataset": "edgefld.data.store",
    "dataset_status": "edgefld.data.prepare",
    "download_dataset": "edgefld.data.download",
    "ensure_dataset": "edgefld.data.prepare",
    "import_dataset": "edgefld.data.importer",
    "load_partition": "edgefld.data.partition",
    "load_test": "edgefld.data.partition",
    "open_store": "edgefld.data.store",
    "partition_summaries": "edgefld.data.partition",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value

