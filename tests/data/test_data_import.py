"""`edgefl data import PATH` on files in the published formats: MNIST IDX, CIFAR-10 pickles."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from edgefld.data import import_dataset, open_store
from edgefld.data.importer import parse_idx
from edgefld.errors import DataError
from tests.data.real_format_files import (
    CIFAR_BATCH,
    Expected,
    cifar_arrays,
    cifar_members,
    idx_bytes,
    md5,
    mnist_arrays,
    python2_pickle,
    write_cifar_dir,
    write_cifar_tarball,
    write_mnist,
)


def assert_store_holds(data_dir: Path, name: str, expected: Expected) -> None:
    store = open_store(name, data_dir, verify=True)
    np.testing.assert_array_equal(store.train_x, expected.train_x)
    np.testing.assert_array_equal(store.train_y, expected.train_y)
    np.testing.assert_array_equal(store.test_x, expected.test_x)
    np.testing.assert_array_equal(store.test_y, expected.test_y)


# --- MNIST ---------------------------------------------------------------------------------


def test_mnist_gz_directory_is_imported_pixel_exact_and_checksummed(tmp_path: Path) -> None:
    expected = mnist_arrays()
    checksums = write_mnist(tmp_path / "mnist", expected)

    assert import_dataset(tmp_path / "mnist", tmp_path / "data", checksums=checksums) == "mnist"

    assert_store_holds(tmp_path / "data", "mnist", expected)
    source = open_store("mnist", tmp_path / "data").meta["source"]
    assert sorted(source["checksum_verified"]) == sorted(checksums)
    assert source["imported_from"] == str((tmp_path / "mnist").resolve())


def test_mnist_gunzipped_directory_is_imported_without_checksums(tmp_path: Path) -> None:
    expected = mnist_arrays(seed=5)
    write_mnist(tmp_path / "mnist", expected, gz=False)

    assert import_dataset(tmp_path / "mnist", tmp_path / "data") == "mnist"

    assert_store_holds(tmp_path / "data", "mnist", expected)
    assert open_store("mnist", tmp_path / "data").meta["source"]["checksum_verified"] == []


def test_mnist_gz_under_published_name_with_wrong_md5_is_refused(tmp_path: Path) -> None:
    checksums = write_mnist(tmp_path / "mnist", mnist_arrays())

    # No override: the generated files are checked against the real published md5s.
    with pytest.raises(DataError) as raised:
        import_dataset(tmp_path / "mnist", tmp_path / "data")

    message = str(raised.value)
    assert f"its md5 is {checksums['train-images-idx3-ubyte.gz']}, expected f68b3c2dcbeaaa9fbdd348bbdeb94873" in message
    assert "`edgefl data download mnist`" in message and "`edgefl data import PATH`" in message
    assert not (tmp_path / "data" / "mnist").exists()


def test_parse_idx_reads_the_big_endian_header() -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    content = idx_bytes(images)
    assert content[:16] == bytes.fromhex("00000803000000020000001c0000001c")

    parsed = parse_idx(content, images=True)

    assert parsed.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(parsed[..., 0], images)
    np.testing.assert_array_equal(parse_idx(idx_bytes(np.array([7, 0, 9], np.uint8)), images=False), [7, 0, 9])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate_gz", "is truncated or corrupt"),
        ("truncate_raw", "header promises 235216 bytes for 300 items, file has 235000"),
        ("labels_magic_for_images", "magic number 0x00000801, expected 0x00000803"),
        ("wrong_image_size", "images are 28x27, MNIST's are 28x28"),
        ("label_out_of_range", "label 10 is not a digit"),
    ],
)
def test_damaged_mnist_files_are_refused_with_a_fix(tmp_path: Path, damage: str, message: str) -> None:
    directory = tmp_path / "mnist"
    expected = mnist_arrays()
    write_mnist(directory, expected, gz=damage == "truncate_gz")
    if damage == "truncate_gz":
        path = directory / "train-images-idx3-ubyte.gz"
        path.write_bytes(path.read_bytes()[:5000])
    elif damage == "truncate_raw":
        path = directory / "train-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:235000])
    elif damage == "labels_magic_for_images":
        (directory / "train-images-idx3-ubyte").write_bytes(idx_bytes(expected.train_y))
    elif damage == "wrong_image_size":
        (directory / "train-images-idx3-ubyte").write_bytes(idx_bytes(expected.train_x[:, :, :27, 0]))
    else:
        (directory / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([1, 10, 2], np.uint8)))

    # The override matches the damaged files, so what is tested is the parsing, not the md5.
    checksums = {path.name: md5(path) for path in directory.iterdir()}
    with pytest.raises(DataError) as raised:
        import_dataset(directory, tmp_path / "data", checksums=checksums)

    assert message in str(raised.value)
    assert "edgefl data import PATH" in str(raised.value)
    assert not (tmp_path / "data" / "mnist").exists()


def test_mnist_directory_missing_a_file_names_it(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", mnist_arrays())
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()

    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte \(.gz or gunzipped\)"):
        import_dataset(tmp_path / "mnist", tmp_path / "data")


def test_mnist_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    expected = mnist_arrays()
    write_mnist(tmp_path / "mnist", expected, gz=False)
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(expected.train_y[:299]))

    with pytest.raises(DataError, match="MNIST train files disagree: 300 images, 299 labels"):
        import_dataset(tmp_path / "mnist", tmp_path / "data")


# --- CIFAR-10 ------------------------------------------------------------------------------


def test_cifar_tarball_is_imported_with_rows_turned_into_hwc(tmp_path: Path) -> None:
    expected = cifar_arrays()
    archive = tmp_path / "cifar-10-python.tar.gz"
    digest = write_cifar_tarball(archive, cifar_members(expected))

    assert import_dataset(archive, tmp_path / "data", checksums={archive.name: digest}) == "cifar10"

    assert_store_holds(tmp_path / "data", "cifar10", expected)
    store = open_store("cifar10", tmp_path / "data")
    assert store.train_x.shape == (5 * CIFAR_BATCH, 32, 32, 3)
    assert store.meta["source"]["checksum_verified"] == ["cifar-10-python.tar.gz"]


def test_cifar_row_layout_is_channel_major(tmp_path: Path) -> None:
    # Independent of the helper's own conversion: one sample whose every byte says where it sits.
    rows = (np.arange(3072) % 251).astype(np.uint8)[None, :]
    batch = {b"data": rows, b"labels": [4], b"batch_label": b"x", b"filenames": [b"a.png"]}
    members = {f"data_batch_{n}": python2_pickle(batch) for n in range(1, 6)}
    members["test_batch"] = python2_pickle(batch)
    directory = write_cifar_dir(tmp_path, members)

    import_dataset(directory, tmp_path / "data")

    image = open_store("cifar10", tmp_path / "data").train_x[0]
    for height, width, channel in [(0, 0, 0), (0, 1, 0), (1, 0, 0), (31, 31, 2), (5, 7, 1)]:
        assert image[height, width, channel] == (channel * 1024 + height * 32 + width) % 251


def test_cifar_tarball_under_published_name_with_wrong_md5_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    digest = write_cifar_tarball(archive, cifar_members(cifar_arrays()))

    with pytest.raises(DataError) as raised:
        import_dataset(archive, tmp_path / "data")

    assert f"its md5 is {digest}, expected c58f30108f718f92721af3b95e74349a" in str(raised.value)
    assert "`edgefl data download cifar10`" in str(raised.value)


def test_cifar_tarball_under_another_name_is_imported_unchecked(tmp_path: Path) -> None:
    expected = cifar_arrays(seed=3)
    archive = tmp_path / "cifar10-copy.tgz"
    write_cifar_tarball(archive, cifar_members(expected))

    assert import_dataset(archive, tmp_path / "data") == "cifar10"

    assert_store_holds(tmp_path / "data", "cifar10", expected)
    assert open_store("cifar10", tmp_path / "data").meta["source"]["checksum_verified"] == []


@pytest.mark.parametrize("give", ["batches_dir", "its_parent", "dir_with_archive"])
def test_cifar_directory_forms_are_detected(tmp_path: Path, give: str) -> None:
    expected = cifar_arrays()
    members = cifar_members(expected)
    if give == "dir_with_archive":
        path = tmp_path / "downloads"
        digest = write_cifar_tarball(path / "cifar-10-python.tar.gz", members)
        checksums = {"cifar-10-python.tar.gz": digest}
    else:
        batches_dir = write_cifar_dir(tmp_path / "extracted", members)
        path = batches_dir if give == "batches_dir" else batches_dir.parent
        checksums = {}

    assert import_dataset(path, tmp_path / "data", checksums=checksums) == "cifar10"

    assert_store_holds(tmp_path / "data", "cifar10", expected)


def test_cifar_pickled_by_python3_protocol_4_is_accepted(tmp_path: Path) -> None:
    # Same dict, re-pickled by numpy 2 under Python 3: numpy._core.multiarray._reconstruct.
    expected = cifar_arrays(seed=8)
    directory = write_cifar_dir(tmp_path, cifar_members(expected, lambda obj: pickle.dumps(obj, protocol=4)))

    import_dataset(directory, tmp_path / "data")

    assert_store_holds(tmp_path / "data", "cifar10", expected)


class _RunsShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("packaging", ["directory", "tarball"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, packaging: str) -> None:
    marker = tmp_path / "pwned"
    members = cifar_members(cifar_arrays())
    members["data_batch_3"] = pickle.dumps({b"data": _RunsShellCommand(marker), b"labels": []}, protocol=4)
    if packaging == "directory":
        path = write_cifar_dir(tmp_path / "in", members)
    else:
        path = tmp_path / "evil.tar.gz"
        write_cifar_tarball(path, members)

    with pytest.raises(DataError) as raised:
        import_dataset(path, tmp_path / "data")

    assert "data_batch_3 is not a CIFAR-10 batch as published, refused: it asks for posix.system" in str(raised.value)
    assert not marker.exists()
    assert not (tmp_path / "data" / "cifar10").exists()


def test_pickle_with_object_dtype_array_is_refused(tmp_path: Path) -> None:
    members = cifar_members(cifar_arrays())
    members["test_batch"] = pickle.dumps({b"data": np.array([b"x", 1], dtype=object), b"labels": [1, 2]}, protocol=4)
    directory = write_cifar_dir(tmp_path, members)

    with pytest.raises(DataError, match=r"refused: refusing dtype 'O8': a CIFAR-10 batch holds only uint8"):
        import_dataset(directory, tmp_path / "data")


def test_cifar_batch_with_bad_labels_is_refused(tmp_path: Path) -> None:
    members = cifar_members(cifar_arrays())
    batch = pickle.loads(members["data_batch_2"], encoding="bytes")
    batch[b"labels"][0] = 10
    members["data_batch_2"] = python2_pickle(batch)
    directory = write_cifar_dir(tmp_path, members)

    with pytest.raises(DataError, match=r"data_batch_2 has no b'labels' list of 12 classes 0\.\.9"):
        import_dataset(directory, tmp_path / "data")


def test_truncated_cifar_tarball_is_refused_with_a_fix(tmp_path: Path) -> None:
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_cifar_tarball(archive, cifar_members(cifar_arrays()))
    content = archive.read_bytes()
    archive.write_bytes(content[: len(content) // 2])

    with pytest.raises(DataError) as raised:
        import_dataset(archive, tmp_path / "data", checksums={archive.name: md5(archive)})

    assert "cifar-10-python.tar.gz is truncated or corrupt" in str(raised.value)
    assert "`edgefl data import PATH`" in str(raised.value)


def test_cifar_tarball_missing_a_batch_names_it(tmp_path: Path) -> None:
    members = cifar_members(cifar_arrays())
    del members["test_batch"]
    archive = tmp_path / "partial.tar.gz"
    write_cifar_tarball(archive, members)

    with pytest.raises(DataError, match="lacks cifar-10-batches-py/test_batch"):
        import_dataset(archive, tmp_path / "data")


# --- what PATH is --------------------------------------------------------------------------


def test_unrecognised_path_lists_what_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8")

    with pytest.raises(DataError) as raised:
        import_dataset(tmp_path / "photos", tmp_path / "data")

    assert str(raised.value) == (
        f"{tmp_path / 'photos'} is not a dataset edgefl can import: give a directory with the four MNIST IDX "
        "files (.gz or gunzipped), cifar-10-python.tar.gz, or an extracted cifar-10-batches-py directory"
    )


def test_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nothing-here does not exist: give a directory"):
        import_dataset(tmp_path / "nothing-here", tmp_path / "data")


def test_single_mnist_file_asks_for_its_directory(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", mnist_arrays())

    with pytest.raises(DataError, match="is one MNIST file: import the directory holding all four"):
        import_dataset(tmp_path / "mnist" / "train-images-idx3-ubyte.gz", tmp_path / "data")
