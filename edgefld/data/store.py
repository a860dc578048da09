"""The preprocessed form of a dataset, stored once under ``data_dir/<dataset>/``.

Layout: ``train_x.npy``, ``train_y.npy``, ``test_x.npy``, ``test_y.npy`` (uint8;
images N x H x W x C, labels N) and ``meta.json`` (format version, counts,
shapes, sha256 of each .npy, source). Readers memory-map the arrays, so
opening a store costs a few small reads whatever the dataset's size, and a
board only ever pages in the samples of its own partition.

A store is written in a staging directory next to it and swapped in with two
renames, so a crash (or a power cut: SD cards) leaves either the old store or
the new one, never a mix. The crash window between the two renames leaves the
old store at ``.<dataset>.old``: readers fall back to it and the next writer
puts it back.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from edgefld.data.sources import DatasetSpec, dataset_spec, file_digest
from edgefld.errors import DataError, StateWriteError
from edgefld.persist import fsync_dir

FORMAT_VERSION = 1
ARRAY_NAMES = ("train_x", "train_y", "test_x", "test_y")
META_FILENAME = "meta.json"


@dataclass(frozen=True)
class StoredDataset:
    """A store opened for reading: the arrays are read-only memory maps."""

    name: str
    path: Path
    meta: dict[str, Any]
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray

    @property
    def size_bytes(self) -> int:
        return sum((self.path / f"{key}.npy").stat().st_size for key in ARRAY_NAMES)


def store_path(data_dir: str | os.PathLike[str], name: str) -> Path:
    return Path(data_dir) / name


def _previous_path(data_dir: Path, name: str) -> Path:
    return data_dir / f".{name}.old"


def _readable_path(data_dir: Path, name: str) -> Path:
    current = store_path(data_dir, name)
    previous = _previous_path(data_dir, name)
    if not (current / META_FILENAME).exists() and previous.is_dir():
        return previous  # a writer stopped between its two renames
    return current


def open_store(name: str, data_dir: str | os.PathLike[str], *, verify: bool = False) -> StoredDataset:
    """Open a stored dataset; ``verify`` also checks every file's sha256 and the value ranges."""
    spec = dataset_spec(name)
    path = _readable_path(Path(data_dir), name)
    meta_path = path / META_FILENAME
    if not meta_path.exists():
        raise DataError(f"dataset {name} is not stored in {data_dir}: {spec.fix_hint}")

    def corrupt(problem: str) -> DataError:
        return DataError(f"dataset {name} in {path} is corrupt ({problem}): {spec.fix_hint}")

    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise corrupt(f"cannot read {META_FILENAME}: {exc}") from None
    problem = _meta_problem(meta, spec)
    if problem:
        raise corrupt(problem)

    arrays: dict[str, np.ndarray] = {}
    for key in ARRAY_NAMES:
        expected = meta["arrays"][key]
        file = path / f"{key}.npy"
        try:
            array = np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise corrupt(f"cannot map {file.name}: {exc}") from None
        if array.dtype != np.uint8 or list(array.shape) != expected["shape"]:
            raise corrupt(
                f"{file.name} holds {array.dtype} {list(array.shape)}, meta.json says uint8 {expected['shape']}"
            )
        if verify and file_digest(file, "sha256") != expected["sha256"]:
            raise corrupt(f"{file.name} does not match its sha256 in {META_FILENAME}")
        arrays[key] = array

    if verify:
        problem = _value_problem(arrays, spec)
        if problem:
            raise corrupt(problem)
    return StoredDataset(name=name, path=path, meta=meta, **arrays)


def _meta_problem(meta: Any, spec: DatasetSpec) -> str | None:
    """What is wrong with a parsed meta.json, or None; checks it describes a store of ``spec``."""
    try:
        if meta["format_version"] != FORMAT_VERSION:
            return f"format version {meta['format_version']}, this edgefl reads {FORMAT_VERSION}"
        if meta["dataset"] != spec.name:
            return f"meta.json describes dataset {meta['dataset']!r}"
        counts = {"train": meta["counts"]["train"], "test": meta["counts"]["test"]}
        for split, count in counts.items():
            if not isinstance(count, int) or count < 1:
                return f"{split} count {count!r} is not a positive integer"
            images, labels = meta["arrays"][f"{split}_x"], meta["arrays"][f"{split}_y"]
            if images["shape"] != [count, *spec.image_shape]:
                return f"{split}_x shape {images['shape']} is not [{count}, {', '.join(map(str, spec.image_shape))}]"
            if labels["shape"] != [count]:
                return f"{split}_y shape {labels['shape']} is not [{count}]"
            for entry in (images, labels):
                if entry["dtype"] != "uint8" or not isinstance(entry["sha256"], str):
                    return "an array entry has no uint8 dtype or sha256"
    except (KeyError, TypeError):
        return "meta.json lacks a required field"
    return None


def _value_problem(arrays: Mapping[str, np.ndarray], spec: DatasetSpec) -> str | None:
    low, high = spec.value_range
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if int(labels.max()) >= spec.num_classes:
            return f"{split} labels go up to {int(labels.max())}, {spec.name} has {spec.num_classes} classes"
        if int(images.min()) < low or int(images.max()) > high:
            return f"{split} pixel values leave {low}..{high}"
    return None


def write_store(
    data_dir: str | os.PathLike[str],
    name: str,
    arrays: Mapping[str, Sequence[np.ndarray]],
    source: Mapping[str, Any],
) -> Path:
    """Store a dataset atomically, replacing any previous store of it; returns the store's path.

    ``arrays`` maps each of ARRAY_NAMES to the chunks that make it up, in order
    (CIFAR-10 arrives in batches), so no full-size concatenated copy is ever
    held in memory: the chunks are copied straight into the new files.
    """
    spec = dataset_spec(name)
    _check_arrays(arrays, spec)
    root = Path(data_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        with _store_lock(root, name):
            _recover(root, name)
            staging = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=root))
            try:
                entries = {key: _write_npy(staging / f"{key}.npy", arrays[key]) for key in ARRAY_NAMES}
                meta = {
                    "format_version": FORMAT_VERSION,
                    "dataset": name,
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                    "source": dict(source),
                    "counts": {"train": entries["train_x"]["shape"][0], "test": entries["test_x"]["shape"][0]},
                    "arrays": entries,
                }
                _write_durably(staging / META_FILENAME, json.dumps(meta, indent=2).encode("utf-8") + b"\n")
                fsync_dir(staging)
                _swap_in(root, name, staging)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    except OSError as exc:
        raise StateWriteError(
            f"cannot write dataset {name} under {root}: {exc} (check free space and that this user owns {root})"
        ) from None
    return store_path(root, name)


def _check_arrays(arrays: Mapping[str, Sequence[np.ndarray]], spec: DatasetSpec) -> None:
    """Refuse to store arrays that the readers would reject: a bug upstream, not bad input."""
    if set(arrays) != set(ARRAY_NAMES):
        raise ValueError(f"write_store needs exactly {ARRAY_NAMES}, got {sorted(arrays)}")
    for key, chunks in arrays.items():
        trailing = spec.image_shape if key.endswith("_x") else ()
        for chunk in chunks:
            if chunk.dtype != np.uint8 or chunk.shape[1:] != trailing:
                raise ValueError(f"{key} chunk is {chunk.dtype} {chunk.shape}, want uint8 (N, *{trailing})")
    for split in ("train", "test"):
        images = sum(len(chunk) for chunk in arrays[f"{split}_x"])
        labels = sum(len(chunk) for chunk in arrays[f"{split}_y"])
        if images != labels or images == 0:
            raise ValueError(f"{split}: {images} images and {labels} labels")


@contextmanager
def _store_lock(root: Path, name: str) -> Iterator[None]:
    """Serialise writers of one dataset (two `edgefl data import` at once); readers take no lock."""
    with open(root / f".{name}.lock", "a") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _recover(root: Path, name: str) -> None:
    """Undo what a writer that died left behind (under the lock, so no writer is running)."""
    current, previous = store_path(root, name), _previous_path(root, name)
    if previous.is_dir():
        if current.exists():
            shutil.rmtree(previous)
        else:
            previous.rename(current)
    for staging in root.glob(f".{name}.staging-*"):
        shutil.rmtree(staging, ignore_errors=True)


def _swap_in(root: Path, name: str, staging: Path) -> None:
    current, previous = store_path(root, name), _previous_path(root, name)
    if current.exists():
        current.rename(previous)
    staging.rename(current)
    fsync_dir(root)
    shutil.rmtree(previous, ignore_errors=True)


def _write_npy(path: Path, chunks: Sequence[np.ndarray]) -> dict[str, Any]:
    shape = (sum(len(chunk) for chunk in chunks), *chunks[0].shape[1:])
    target = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    start = 0
    for chunk in chunks:
        target[start : start + len(chunk)] = chunk
        start += len(chunk)
    target.flush()
    del target
    with open(path, "rb+") as written:
        os.fsync(written.fileno())
    return {"dtype": "uint8", "shape": list(shape), "sha256": file_digest(path, "sha256")}


def _write_durably(path: Path, content: bytes) -> None:
    with open(path, "wb") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())
