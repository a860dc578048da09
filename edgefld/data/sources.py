"""What edgefl knows about each dataset: shapes, counts and where the originals come from.

Plain data: the downloader, the importer and the store read these records, so
adding a mirror or a dataset is a change here and nowhere else.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from edgefld.errors import DataError


@dataclass(frozen=True)
class SourceFile:
    """One published file of a dataset and the checksum its publisher (or torchvision) lists."""

    filename: str
    algorithm: str  # a hashlib name: "md5" for the published files, "sha256" for the shipped one
    digest: str  # lower-case hex


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    image_shape: tuple[int, int, int]  # height, width, channels: how the store keeps images
    num_classes: int
    train_count: int  # as published; an import of a subset stores what it was given
    test_count: int
    value_range: tuple[int, int]  # inclusive range of the uint8 pixel values
    sources: tuple[SourceFile, ...]
    mirrors: tuple[str, ...]  # base URLs tried in order; a file's URL is mirror + filename
    fix_hint: str  # what a person runs when the dataset is missing or corrupt
    class_names: tuple[str, ...]  # label i's name, as the dataset publishes it (an exported model's metadata)

    def __post_init__(self) -> None:
        if len(self.class_names) != self.num_classes:
            raise ValueError(f"dataset {self.name}: {self.num_classes} classes but {len(self.class_names)} names")

    @property
    def downloadable(self) -> bool:
        return bool(self.mirrors)


MNIST = DatasetSpec(
    name="mnist",
    image_shape=(28, 28, 1),
    num_classes=10,
    train_count=60_000,
    test_count=10_000,
    value_range=(0, 255),
    sources=(
        SourceFile("train-images-idx3-ubyte.gz", "md5", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        SourceFile("train-labels-idx1-ubyte.gz", "md5", "d53e105ee54ea40749a09fcbcd1e9432"),
        SourceFile("t10k-images-idx3-ubyte.gz", "md5", "9fb629c4189551a2d022fa330f9573f3"),
        SourceFile("t10k-labels-idx1-ubyte.gz", "md5", "ec29112dd5afa0611ce80d1b7f02629c"),
    ),
    # The mirrors torchvision uses, in its order: yann.lecun.com is often unreachable.
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    fix_hint=(
        "run `edgefl data download mnist`, or on a board without internet copy the four MNIST "
        "IDX files into a directory and run `edgefl data import PATH`"
    ),
    class_names=tuple(str(digit) for digit in range(10)),
)

CIFAR10 = DatasetSpec(
    name="cifar10",
    image_shape=(32, 32, 3),
    num_classes=10,
    train_count=50_000,
    test_count=10_000,
    value_range=(0, 255),
    sources=(SourceFile("cifar-10-python.tar.gz", "md5", "c58f30108f718f92721af3b95e74349a"),),
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
    fix_hint=(
        "run `edgefl data download cifar10`, or on a board without internet copy "
        "cifar-10-python.tar.gz to it and run `edgefl data import PATH`"
    ),
    # batches.meta's label_names.
    class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
)

# scikit-learn's copy of the UCI test set, shipped inside edgefl (see
# edgefld/datasets/digits/LICENSE.md): the demo dataset that needs no network.
DIGITS = DatasetSpec(
    name="digits",
    image_shape=(8, 8, 1),
    num_classes=10,
    train_count=1497,
    test_count=300,
    value_range=(0, 16),
    sources=(
        SourceFile(
            "digits.csv.gz",
            "sha256",
            "09f66e6debdee2cd2b5ae59e0d6abbb73fc2b0e0185d2e1957e9ebb51e23aa22",
        ),
    ),
    mirrors=(),
    fix_hint=(
        "run `edgefl data download digits` to rebuild it from the copy shipped with edgefl "
        "(no network needed); if that fails, reinstall edgefl"
    ),
    class_names=tuple(str(digit) for digit in range(10)),
)

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in (MNIST, CIFAR10, DIGITS)}


def dataset_spec(name: str) -> DatasetSpec:
    try:
        return DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        raise DataError(f"unknown dataset {name!r}: edgefl knows {known}") from None


_DIGEST_BLOCK_BYTES = 1 << 20


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in blocks so a 170 MB archive never sits in memory."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        while block := file.read(_DIGEST_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()
