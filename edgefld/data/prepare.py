"""Whether a dataset is ready to train on, and making it so where that needs no person."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

from edgefld.data.digits import build_digits
from edgefld.data.download import download_dataset
from edgefld.data.sources import dataset_spec
from edgefld.data.store import StoredDataset, open_store, store_path
from edgefld.errors import DataError


def ensure_dataset(name: str, data_dir: str | os.PathLike[str], *, download: bool = False) -> StoredDataset:
    """Open ``name``'s store, first building it where no person is needed.

    A valid store is used as it is. digits is built from the copy shipped with
    edgefl; another dataset is downloaded only with ``download=True`` and
    otherwise raises DataError saying how to get it (a board may have no internet).
    """
    spec = dataset_spec(name)
    try:
        return open_store(name, data_dir)
    except DataError:
        if spec.downloadable and not download:
            raise
    if spec.downloadable:
        download_dataset(name, data_dir)
    else:
        build_digits(data_dir)
    return open_store(name, data_dir)


@dataclass(frozen=True)
class DatasetStatus:
    """What `edgefl data status` shows for one dataset."""

    name: str
    ready: bool
    path: str
    train_count: int | None
    test_count: int | None
    size_bytes: int | None
    source: dict[str, Any] | None  # how the store was made: meta.json's "source"
    problem: str | None  # why it is not ready, with the command that fixes it

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def dataset_status(name: str, data_dir: str | os.PathLike[str], *, verify: bool = False) -> DatasetStatus:
    """Report on ``name``'s store without changing anything; ``verify`` also checks every hash."""
    dataset_spec(name)  # an unknown name is an error, not a "missing" dataset
    try:
        store = open_store(name, data_dir, verify=verify)
    except DataError as exc:
        return DatasetStatus(name, False, str(store_path(data_dir, name)), None, None, None, None, str(exc))
    return DatasetStatus(
        name=name,
        ready=True,
        path=str(store.path),
        train_count=len(store.train_y),
        test_count=len(store.test_y),
        size_bytes=store.size_bytes,
        source=store.meta["source"],
        problem=None,
    )
