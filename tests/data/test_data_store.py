"""The stored form: atomic replacement, memory-mapped reads, corruption reported with a fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import edgefld.data.store as store_module
from edgefld.data import dataset_status, ensure_dataset, open_store
from edgefld.data.store import write_store
from edgefld.errors import DataError, StateWriteError


def mnist_like(seed: int, train: int = 40, test: int = 10) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        "train_x": [rng.integers(0, 256, (train, 28, 28, 1), dtype=np.uint8)],
        "train_y": [rng.integers(0, 10, train, dtype=np.uint8)],
        "test_x": [rng.integers(0, 256, (test, 28, 28, 1), dtype=np.uint8)],
        "test_y": [rng.integers(0, 10, test, dtype=np.uint8)],
    }


def test_written_store_reads_back_as_read_only_memory_maps(tmp_path: Path) -> None:
    arrays = mnist_like(0)
    # Two chunks for one array, as CIFAR-10's batches arrive: they are stored back to back.
    arrays["train_x"] = [arrays["train_x"][0][:15], arrays["train_x"][0][15:]]

    path = write_store(tmp_path, "mnist", arrays, {"imported_from": "/somewhere"})

    store = open_store("mnist", tmp_path, verify=True)
    assert path == tmp_path / "mnist" == store.path
    assert sorted(p.name for p in path.iterdir()) == [
        "meta.json",
        "test_x.npy",
        "test_y.npy",
        "train_x.npy",
        "train_y.npy",
    ]
    np.testing.assert_array_equal(store.train_x, np.concatenate(arrays["train_x"]))
    np.testing.assert_array_equal(store.test_y, arrays["test_y"][0])
    assert isinstance(store.train_x, np.memmap) and not store.train_x.flags.writeable
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 1 and meta["dataset"] == "mnist"
    assert meta["counts"] == {"train": 40, "test": 10}
    assert meta["arrays"]["train_x"]["shape"] == [40, 28, 28, 1]
    assert meta["source"] == {"imported_from": "/somewhere"}
    assert store.size_bytes == sum(
        (path / f"{k}.npy").stat().st_size for k in ("train_x", "train_y", "test_x", "test_y")
    )


def test_failure_mid_write_leaves_the_previous_store_intact(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = mnist_like(1)
    write_store(tmp_path, "mnist", old, {"generation": 1})
    real_write_npy = store_module._write_npy
    written: list[str] = []

    def fail_on_third_file(path: Path, chunks: list[np.ndarray]) -> dict[str, object]:
        if len(written) == 2:
            raise OSError(28, "No space left on device")
        written.append(path.name)
        return real_write_npy(path, chunks)

    monkeypatch.setattr(store_module, "_write_npy", fail_on_third_file)

    with pytest.raises(
        StateWriteError, match=r"cannot write dataset mnist under .*: \[Errno 28\] No space left on device"
    ):
        write_store(tmp_path, "mnist", mnist_like(2), {"generation": 2})

    assert written == ["train_x.npy", "train_y.npy"]
    store = open_store("mnist", tmp_path, verify=True)
    assert store.meta["source"] == {"generation": 1}
    np.testing.assert_array_equal(store.train_x, old["train_x"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mnist.lock", "mnist"]  # no staging left behind


def test_crash_between_the_two_renames_keeps_the_old_store_readable(tmp_path: Path) -> None:
    old = mnist_like(3)
    write_store(tmp_path, "mnist", old, {"generation": 1})
    # What a crash right after the first rename leaves: the old store moved aside, no new one yet.
    (tmp_path / "mnist").rename(tmp_path / ".mnist.old")
    (tmp_path / ".mnist.staging-dead").mkdir()

    np.testing.assert_array_equal(open_store("mnist", tmp_path).train_y, old["train_y"][0])

    new = mnist_like(4)
    write_store(tmp_path, "mnist", new, {"generation": 2})
    np.testing.assert_array_equal(open_store("mnist", tmp_path, verify=True).train_y, new["train_y"][0])
    assert sorted(p.name for p in tmp_path.iterdir()) == [".mnist.lock", "mnist"]


def test_missing_store_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError) as raised:
        open_store("mnist", tmp_path)

    assert str(raised.value) == (
        f"dataset mnist is not stored in {tmp_path}: run `edgefl data download mnist`, or on a board without "
        "internet copy the four MNIST IDX files into a directory and run `edgefl data import PATH`"
    )


@pytest.mark.parametrize(
    ("damage", "problem", "needs_verify"),
    [
        ("truncate_npy", "cannot map train_x.npy", False),
        ("meta_not_json", "cannot read meta.json", False),
        ("meta_count", "train_x shape [40, 28, 28, 1] is not [41, 28, 28, 1]", False),
        ("meta_field", "meta.json lacks a required field", False),
        ("meta_version", "format version 99, this edgefl reads 1", False),
        ("flip_byte", "test_x.npy does not match its sha256 in meta.json", True),
        ("label_range", "test labels go up to 200, mnist has 10 classes", True),
    ],
)
def test_corrupt_store_is_reported_with_the_fix(tmp_path: Path, damage: str, problem: str, needs_verify: bool) -> None:
    arrays = mnist_like(5)
    if damage == "label_range":
        arrays["test_y"][0][3] = 200
    path = write_store(tmp_path, "mnist", arrays, {})
    meta_path = path / "meta.json"
    meta = json.loads(meta_path.read_text())
    if damage == "truncate_npy":
        (path / "train_x.npy").write_bytes((path / "train_x.npy").read_bytes()[:1000])
    elif damage == "meta_not_json":
        meta_path.write_text("{not json")
    elif damage == "meta_count":
        meta["counts"]["train"] = 41
    elif damage == "meta_field":
        del meta["arrays"]["test_y"]
    elif damage == "meta_version":
        meta["format_version"] = 99
    elif damage == "flip_byte":
        content = bytearray((path / "test_x.npy").read_bytes())
        content[-1] ^= 0xFF
        (path / "test_x.npy").write_bytes(bytes(content))
    if damage.startswith("meta_") and damage != "meta_not_json":
        meta_path.write_text(json.dumps(meta))

    if needs_verify:
        open_store("mnist", tmp_path)  # the cheap open does not read every byte
    with pytest.raises(DataError) as raised:
        open_store("mnist", tmp_path, verify=needs_verify)

    message = str(raised.value)
    assert message.startswith(f"dataset mnist in {path} is corrupt ({problem}")
    assert message.endswith("run `edgefl data import PATH`")
    assert "\n" not in message


def test_store_of_one_dataset_is_not_read_as_another(tmp_path: Path) -> None:
    path = write_store(tmp_path, "mnist", mnist_like(6), {})
    path.rename(tmp_path / "cifar10")

    with pytest.raises(DataError, match=r"is corrupt \(meta.json describes dataset 'mnist'\)"):
        open_store("cifar10", tmp_path)


def test_status_reports_missing_then_ready(tmp_path: Path) -> None:
    missing = dataset_status("mnist", tmp_path)
    assert (missing.ready, missing.train_count, missing.path) == (False, None, str(tmp_path / "mnist"))
    assert missing.problem is not None and "`edgefl data download mnist`" in missing.problem

    write_store(tmp_path, "mnist", mnist_like(7), {"imported_from": "/x"})

    ready = dataset_status("mnist", tmp_path, verify=True).to_json()
    assert ready["ready"] is True and ready["problem"] is None
    assert (ready["train_count"], ready["test_count"], ready["source"]) == (40, 10, {"imported_from": "/x"})


def test_unknown_dataset_name_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"^unknown dataset 'fashion': edgefl knows cifar10, digits, mnist$"):
        dataset_status("fashion", tmp_path)


def test_ensure_without_download_says_how_to_get_the_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset cifar10 is not stored in .*: run `edgefl data download cifar10`, or"):
        ensure_dataset("cifar10", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_ensure_uses_a_valid_store_as_it_is(tmp_path: Path) -> None:
    write_store(tmp_path, "mnist", mnist_like(8), {"generation": 1})
    before = (tmp_path / "mnist" / "meta.json").stat().st_mtime_ns

    store = ensure_dataset("mnist", tmp_path, download=True)  # download allowed, but not needed

    assert store.meta["source"] == {"generation": 1}
    assert (tmp_path / "mnist" / "meta.json").stat().st_mtime_ns == before
