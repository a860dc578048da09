"""The digits dataset shipped inside edgefl, so the demo trains without any network.

The file is scikit-learn's ``digits.csv.gz`` (see edgefld/datasets/digits/LICENSE.md):
1797 rows of 64 pixel counts 0..16 (8x8, row-major) and the label last. It is
converted into the same store as the downloaded datasets, with a fixed
train/test split, so everything downstream treats it like any other dataset.
"""

from __future__ import annotations

import gzip
import os
import zlib
from importlib import resources

import numpy as np

from edgefld.data.permutation import stable_permutation
from edgefld.data.sources import DIGITS, file_digest
from edgefld.data.store import write_store
from edgefld.errors import DataError

DIGITS_SAMPLES = DIGITS.train_count + DIGITS.test_count
# Any fixed value: the split must be the same on every board and every release.
DIGITS_SPLIT_SEED = 20240601
SHIPPED_DIGITS_PATH = f"datasets/digits/{DIGITS.sources[0].filename}"  # inside the edgefld package


def read_shipped_digits() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 samples as (images N x 8 x 8 x 1, labels N), uint8, in the file's order."""
    source = DIGITS.sources[0]
    reinstall = "the copy shipped with edgefl is damaged: reinstall edgefl"
    shipped = resources.files("edgefld") / SHIPPED_DIGITS_PATH
    # as_file: a real path even where the package is imported from a zip.
    with resources.as_file(shipped) as path:
        try:
            if file_digest(path, source.algorithm) != source.digest:
                raise DataError(f"{path}: {source.algorithm} mismatch, {reinstall}")
            with gzip.open(path, "rt", encoding="ascii") as text:
                table = np.loadtxt(text, delimiter=",", dtype=np.int64, ndmin=2)
        except (OSError, EOFError, zlib.error, ValueError) as exc:
            raise DataError(f"cannot read {path} ({exc}): {reinstall}") from None
    pixels, labels = table[:, :-1], table[:, -1]
    low, high = DIGITS.value_range
    if (
        table.shape != (DIGITS_SAMPLES, 65)
        or pixels.min() < low
        or pixels.max() > high
        or labels.min() < 0
        or labels.max() >= DIGITS.num_classes
    ):
        raise DataError(f"{shipped} is not the 1797 x 65 table of digits: {reinstall}")
    images = pixels.astype(np.uint8).reshape(DIGITS_SAMPLES, *DIGITS.image_shape)
    return images, labels.astype(np.uint8)


def build_digits(data_dir: str | os.PathLike[str]) -> None:
    """Store the shipped digits under ``data_dir`` with the fixed split (1497 train, 300 test)."""
    images, labels = read_shipped_digits()
    order = stable_permutation(DIGITS_SAMPLES, DIGITS_SPLIT_SEED)
    test = np.sort(order[: DIGITS.test_count])
    train = np.sort(order[DIGITS.test_count :])
    write_store(
        data_dir,
        DIGITS.name,
        {"train_x": [images[train]], "train_y": [labels[train]], "test_x": [images[test]], "test_y": [labels[test]]},
        {"shipped_file": f"edgefld/{SHIPPED_DIGITS_PATH}", "sha256": DIGITS.sources[0].digest},
    )
