"""The real download path, against generated files served from 127.0.0.1."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import numpy as np
import pytest

from edgefld.data import download_dataset, open_store
from edgefld.data.download import _ProgressBar
from edgefld.errors import DataError
from tests.data.real_format_files import (
    cifar_arrays,
    cifar_members,
    md5,
    mnist_arrays,
    write_cifar_tarball,
    write_mnist,
)

MNIST_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_download_verifies_and_stores_then_drops_the_archives(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base_url = http_root
    expected = mnist_arrays()
    checksums = write_mnist(root / "mirror", expected)
    log = io.StringIO()

    download_dataset("mnist", tmp_path / "data", mirrors=[base_url + "mirror/"], checksums=checksums, progress=log)

    store = open_store("mnist", tmp_path / "data", verify=True)
    np.testing.assert_array_equal(store.train_x, expected.train_x)
    np.testing.assert_array_equal(store.test_y, expected.test_y)
    assert store.meta["source"]["downloaded_from"] == [base_url + "mirror/" + name for name in MNIST_FILES]
    assert sorted(store.meta["source"]["checksum_verified"]) == sorted(MNIST_FILES)
    assert not (tmp_path / "data" / ".downloads" / "mnist").exists()
    # Not a terminal (journald): whole lines, the last one at 100% for each file.
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    size = (root / "mirror" / "train-labels-idx1-ubyte.gz").stat().st_size
    assert f"mnist train-labels-idx1-ubyte.gz: 100% of {size / 1e6:.1f} MB" in lines
    assert sum(line.endswith("MB") and ": 100% of" in line for line in lines) == 4


def test_first_mirror_404_falls_back_to_the_second(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base_url = http_root
    (root / "empty").mkdir()
    expected = cifar_arrays()
    digest = write_cifar_tarball(root / "good" / "cifar-10-python.tar.gz", cifar_members(expected))

    download_dataset(
        "cifar10",
        tmp_path / "data",
        mirrors=[base_url + "empty/", base_url + "good/"],
        checksums={"cifar-10-python.tar.gz": digest},
        quiet=True,
    )

    store = open_store("cifar10", tmp_path / "data", verify=True)
    np.testing.assert_array_equal(store.train_x, expected.train_x)
    assert store.meta["source"]["downloaded_from"] == [base_url + "good/cifar-10-python.tar.gz"]


def test_checksum_mismatch_on_every_mirror_fails_with_import_hint(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base_url = http_root
    checksums = write_mnist(root / "a", mnist_arrays())
    write_mnist(root / "b", mnist_arrays(seed=9))
    wrong = {name: "0" * 32 for name in checksums}

    with pytest.raises(DataError) as raised:
        download_dataset(
            "mnist", tmp_path / "data", mirrors=[base_url + "a", base_url + "b/"], checksums=wrong, quiet=True
        )

    assert str(raised.value) == (
        "could not download train-images-idx3-ubyte.gz ("
        f"{base_url}a/train-images-idx3-ubyte.gz: md5 {checksums['train-images-idx3-ubyte.gz']}, expected {'0' * 32}; "
        f"{base_url}b/train-images-idx3-ubyte.gz: md5 {md5(root / 'b' / 'train-images-idx3-ubyte.gz')}, "
        f"expected {'0' * 32}"
        "); on a board without internet copy the files to it and run `edgefl data import PATH`"
    )
    downloads = tmp_path / "data" / ".downloads" / "mnist"
    assert sorted(path.name for path in downloads.iterdir()) == []  # no .part, nothing under a final name
    assert not (tmp_path / "data" / "mnist").exists()


def test_published_checksums_reject_generated_files(http_root: tuple[Path, str], tmp_path: Path) -> None:
    root, base_url = http_root
    write_mnist(root / "m", mnist_arrays())

    with pytest.raises(DataError, match=r"md5 [0-9a-f]{32}, expected f68b3c2dcbeaaa9fbdd348bbdeb94873\)"):
        download_dataset("mnist", tmp_path / "data", mirrors=[base_url + "m/"], quiet=True)


def test_unreachable_mirror_is_reported(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    with pytest.raises(DataError) as raised:
        download_dataset("cifar10", tmp_path / "data", mirrors=[f"http://127.0.0.1:{port}/"], quiet=True)

    assert f"http://127.0.0.1:{port}/cifar-10-python.tar.gz: [Errno 111] Connection refused" in str(raised.value)
    assert "`edgefl data import PATH`" in str(raised.value)


def test_file_already_downloaded_and_valid_is_not_fetched_again(http_root: tuple[Path, str], tmp_path: Path) -> None:
    _, base_url = http_root
    expected = cifar_arrays()
    archive = tmp_path / "data" / ".downloads" / "cifar10" / "cifar-10-python.tar.gz"
    digest = write_cifar_tarball(archive, cifar_members(expected))

    # The mirror serves nothing: only the file already there can satisfy the download.
    download_dataset("cifar10", tmp_path / "data", mirrors=[base_url], checksums={archive.name: digest}, quiet=True)

    np.testing.assert_array_equal(open_store("cifar10", tmp_path / "data").test_x, expected.test_x)
    assert open_store("cifar10", tmp_path / "data").meta["source"]["downloaded_from"] == [
        f"{archive} (downloaded earlier)"
    ]


def test_digits_download_builds_from_the_shipped_file(tmp_path: Path) -> None:
    download_dataset("digits", tmp_path / "data", quiet=True)

    assert open_store("digits", tmp_path / "data").meta["counts"] == {"train": 1497, "test": 300}


def test_progress_on_a_log_prints_a_line_per_tenth() -> None:
    log = io.StringIO()
    bar = _ProgressBar(log, "mnist x.gz", 1_000_000)
    for done in range(50_000, 1_000_001, 50_000):
        bar.update(done)
    bar.finish(1_000_000)

    assert log.getvalue().splitlines() == [f"mnist x.gz: {p}% of 1.0 MB" for p in range(10, 101, 10)]


def test_progress_on_a_terminal_redraws_one_line() -> None:
    terminal = _Terminal()
    bar = _ProgressBar(terminal, "cifar10 c.tar.gz", 2_000_000)
    bar.update(1_000_000)
    bar.finish(2_000_000)

    assert terminal.getvalue() == (
        "\rcifar10 c.tar.gz [###############               ]  50% 1.0/2.0 MB"
        "\rcifar10 c.tar.gz [##############################] 100% 2.0/2.0 MB\n"
    )


def test_progress_without_a_known_size_logs_the_total() -> None:
    log = io.StringIO()
    bar = _ProgressBar(log, "d", None)
    for done in (5_000_000, 12_000_000, 25_000_000):
        bar.update(done)
    bar.finish(27_000_000)

    assert log.getvalue().splitlines() == ["d: 12.0 MB", "d: 25.0 MB", "d: 27.0 MB"]
