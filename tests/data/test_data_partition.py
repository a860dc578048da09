"""IID partitions: disjoint, covering, identical on every board, and only a board's own rows loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgefld.data import PartitionError, import_dataset, load_partition, load_test, open_store
from edgefld.data.partition import partition_indices, split_validation
from edgefld.data.permutation import _splitmix64, stable_permutation
from edgefld.errors import DataError
from tests.data.real_format_files import MNIST_TRAIN, Expected, mnist_arrays, write_mnist

NUM_PARTITIONS = 10


@pytest.fixture
def mnist_dir(tmp_path: Path) -> tuple[Path, Expected]:
    expected = mnist_arrays()
    checksums = write_mnist(tmp_path / "raw", expected)
    import_dataset(tmp_path / "raw", tmp_path / "data", checksums=checksums)
    return tmp_path / "data", expected


def row_ids(images: np.ndarray, full: np.ndarray) -> list[int]:
    """Which rows of ``full`` the given images are (the generated images are all distinct)."""
    lookup = {full[index].tobytes(): index for index in range(len(full))}
    return [lookup[image.tobytes()] for image in images]


def test_partitions_are_disjoint_and_cover_the_training_set(mnist_dir: tuple[Path, Expected]) -> None:
    data_dir, expected = mnist_dir
    seen: list[int] = []
    for cid in range(NUM_PARTITIONS):
        part = load_partition("mnist", data_dir, cid, NUM_PARTITIONS)
        seen += row_ids(part.train_x, expected.train_x) + row_ids(part.val_x, expected.train_x)

    assert sorted(seen) == list(range(MNIST_TRAIN))


def test_partition_k_holds_exactly_its_rows_of_the_full_set(mnist_dir: tuple[Path, Expected]) -> None:
    data_dir, expected = mnist_dir
    indices = partition_indices(MNIST_TRAIN, 7, NUM_PARTITIONS)
    train, validation = split_validation(indices, 7, NUM_PARTITIONS, 42)

    part = load_partition("mnist", data_dir, 7, NUM_PARTITIONS)

    np.testing.assert_array_equal(part.train_x, expected.train_x[train])
    np.testing.assert_array_equal(part.train_y, expected.train_y[train])
    np.testing.assert_array_equal(part.val_x, expected.train_x[validation])
    np.testing.assert_array_equal(part.val_y, expected.train_y[validation])
    assert sorted(np.concatenate([train, validation]).tolist()) == indices.tolist()
    # Plain arrays in memory, detached from the map: nothing else of the store is kept.
    for array in (part.train_x, part.train_y, part.val_x, part.val_y):
        assert type(array) is np.ndarray and array.flags.owndata


def test_split_is_ninety_ten(mnist_dir: tuple[Path, Expected]) -> None:
    data_dir, _ = mnist_dir

    part = load_partition("mnist", data_dir, 0, NUM_PARTITIONS)
    uneven = load_partition("mnist", data_dir, 0, 7)  # 300 / 7: 43 rows, a tenth rounded up validates

    assert (len(part.train_x), len(part.train_y), len(part.val_x), len(part.val_y)) == (27, 27, 3, 3)
    assert (len(uneven.train_x), len(uneven.val_x)) == (38, 5)


def test_partitions_are_pinned_across_runs_and_numpy_versions() -> None:
    # SplitMix64's published first output for state 0: the hash is the reference algorithm.
    assert _splitmix64(0) == 0xE220A8397B1DCDAF
    assert stable_permutation(12, 42).tolist() == [11, 0, 3, 2, 4, 9, 10, 5, 6, 8, 1, 7]
    assert [partition_indices(20, cid, 4).tolist() for cid in range(4)] == [
        [11, 12, 13, 15, 18],
        [0, 2, 3, 4, 9],
        [5, 10, 14, 16, 17],
        [1, 6, 7, 8, 19],
    ]
    assert partition_indices(20, 1, 4, seed=7).tolist() == [6, 7, 8, 9, 14]
    train, validation = split_validation(np.array([0, 2, 3, 4, 9]), 1, 4, 42)
    assert (train.tolist(), validation.tolist()) == ([2, 3, 4, 9], [0])


def test_same_partition_twice_is_identical(mnist_dir: tuple[Path, Expected]) -> None:
    data_dir, _ = mnist_dir
    first = load_partition("mnist", data_dir, 4, NUM_PARTITIONS, seed=123)
    second = load_partition("mnist", data_dir, 4, NUM_PARTITIONS, seed=123)
    other_seed = load_partition("mnist", data_dir, 4, NUM_PARTITIONS, seed=124)

    np.testing.assert_array_equal(first.train_x, second.train_x)
    np.testing.assert_array_equal(first.val_y, second.val_y)
    assert not np.array_equal(first.train_x, other_seed.train_x)


@pytest.mark.parametrize(
    ("cid", "num_partitions", "message"),
    [
        (10, 10, "cid 10 is out of range: with num_partitions 10, cid must be 0..9"),
        (-1, 10, "cid -1 is out of range: with num_partitions 10, cid must be 0..9"),
        (0, 0, "num_partitions is 0: it must be at least 1"),
        (0, 151, "num_partitions 151 is too many for 300 training samples: at most 150 (two samples each)"),
    ],
)
def test_impossible_partition_is_a_partition_error(
    mnist_dir: tuple[Path, Expected], cid: int, num_partitions: int, message: str
) -> None:
    data_dir, _ = mnist_dir

    with pytest.raises(PartitionError) as raised:
        load_partition("mnist", data_dir, cid, num_partitions)

    assert str(raised.value) == message
    assert isinstance(raised.value, DataError)


def test_load_test_is_the_whole_test_set(mnist_dir: tuple[Path, Expected]) -> None:
    data_dir, expected = mnist_dir

    images, labels = load_test("mnist", data_dir)

    np.testing.assert_array_equal(images, expected.test_x)
    np.testing.assert_array_equal(labels, expected.test_y)
    assert type(images) is np.ndarray and images.flags.writeable


def test_loading_a_missing_dataset_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"dataset mnist is not stored in .*`edgefl data download mnist`"):
        load_partition("mnist", tmp_path, 0, 50)


def test_store_is_opened_by_memory_map_not_read_whole(mnist_dir: tuple[Path, Expected]) -> None:
    data_dir, _ = mnist_dir
    store = open_store("mnist", data_dir)

    assert isinstance(store.train_x, np.memmap) and Path(store.train_x.filename) == data_dir / "mnist" / "train_x.npy"
