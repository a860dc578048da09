"""The digits dataset shipped inside edgefl: no network, the same store as the others."""

from __future__ import annotations

import csv
import gzip
import hashlib
from pathlib import Path

import numpy as np

import edgefld
from edgefld.data import DATASETS, dataset_status, ensure_dataset, load_partition, open_store

SHIPPED = Path(edgefld.__file__).parent / "datasets" / "digits"
SHA256 = "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22"
# Label counts of the 1797 samples, 0..9, as the UCI test set has them.
LABEL_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def read_csv_independently() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(SHIPPED / "digits.csv.gz", "rt") as text:
        rows = [[int(value) for value in row] for row in csv.reader(text)]
    table = np.array(rows)
    return table[:, :64].reshape(-1, 8, 8, 1), table[:, 64]


def test_shipped_file_and_its_licence_note() -> None:
    assert hashlib.sha256((SHIPPED / "digits.csv.gz").read_bytes()).hexdigest() == SHA256
    licence = (SHIPPED / "LICENSE.md").read_text()
    for needed in (SHA256, "scikit-learn **1.9.1**", "CC BY 4.0", "BSD 3-Clause", "E. Alpaydin and C. Kaynak"):
        assert needed in licence


def test_ensure_builds_digits_from_the_package(tmp_path: Path) -> None:
    images, labels = read_csv_independently()

    store = ensure_dataset("digits", tmp_path)

    assert (len(store.train_y), len(store.test_y)) == (1497, 300)
    assert store.train_x.shape == (1497, 8, 8, 1) and store.train_x.dtype == np.uint8
    all_labels = np.concatenate([store.train_y, store.test_y])
    assert np.bincount(all_labels).tolist() == LABEL_COUNTS
    all_images = np.concatenate([store.train_x, store.test_x])
    assert (int(all_images.min()), int(all_images.max())) == (0, 16)
    # Every stored sample is a row of the shipped file, each row used once.
    stored = {(image.tobytes(), int(label)) for image, label in zip(all_images, all_labels, strict=True)}
    shipped = {(image.astype(np.uint8).tobytes(), int(label)) for image, label in zip(images, labels, strict=True)}
    assert len(stored) == len(shipped) and stored == shipped
    assert DATASETS["digits"].value_range == (0, 16)


def test_digits_split_is_fixed(tmp_path: Path) -> None:
    store = ensure_dataset("digits", tmp_path)

    assert np.bincount(store.test_y, minlength=10).tolist() == [30, 34, 29, 28, 25, 35, 27, 35, 24, 33]
    assert (
        store.meta["arrays"]["test_y"]["sha256"] == "9ef093596e8126f150672bb30317e316ee2bb4ad539baa203473d0edb37c2114"
    )
    assert (
        store.meta["arrays"]["train_x"]["sha256"] == "a063e8523a3bd8a80a174b4e27c1c4b413e858a2bdc9ac9a9e368c32556238f7"
    )


def test_partition_of_digits_needs_nothing_but_data_dir(tmp_path: Path) -> None:
    part = load_partition("digits", tmp_path / "data", cid=49, num_partitions=50)

    assert (len(part.train_x), len(part.val_x)) == (26, 3)  # 1497 / 50: the last partitions get 29
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".digits.lock", "digits"]


def test_corrupt_digits_store_is_rebuilt(tmp_path: Path) -> None:
    ensure_dataset("digits", tmp_path)
    (tmp_path / "digits" / "meta.json").write_text("{}")
    assert dataset_status("digits", tmp_path).ready is False

    store = ensure_dataset("digits", tmp_path)

    assert open_store("digits", tmp_path, verify=True).meta["counts"] == {"train": 1497, "test": 300}
    assert store.meta["source"]["sha256"] == SHA256
