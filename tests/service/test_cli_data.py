"""`edgefl data status|import` through the real CLI entry, in process (no network anywhere)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgefld.data import ensure_dataset, load_partition, open_store
from edgefld.data.sources import CIFAR10, DIGITS, MNIST
from tests.data.real_format_files import MNIST_TEST, MNIST_TRAIN, md5, mnist_arrays, write_mnist

FORMS = ("a directory with the four MNIST IDX files (.gz or gunzipped), cifar-10-python.tar.gz, "
         "or an extracted cifar-10-batches-py directory")


def _missing_line(name: str, data_dir: Path, hint: str) -> str:
    return f"{name:<8} missing  dataset {name} is not stored in {data_dir}: {hint}"


def _status_json(edgefl_cli, data_dir: Path) -> dict[str, dict]:
    code, out, err = edgefl_cli("data", "status", "--json", "--data-dir", str(data_dir))
    assert (code, err) == (0, "")
    parsed = json.loads(out)
    assert isinstance(parsed, list)
    assert [entry["name"] for entry in parsed] == ["mnist", "cifar10", "digits"]
    for entry in parsed:
        assert set(entry) == {"name", "ready", "path", "train_count", "test_count", "size_bytes", "source",
                              "problem"}
    return {entry["name"]: entry for entry in parsed}


def test_status_on_an_empty_data_dir(edgefl_cli, tmp_path):
    data_dir = tmp_path / "data"
    code, out, err = edgefl_cli("data", "status", "--data-dir", str(data_dir))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        _missing_line("mnist", data_dir, MNIST.fix_hint),
        _missing_line("cifar10", data_dir, CIFAR10.fix_hint),
        _missing_line("digits", data_dir, DIGITS.fix_hint),
    ]
    assert not data_dir.exists()  # status changes nothing


def test_status_json_on_an_empty_data_dir(edgefl_cli, tmp_path):
    statuses = _status_json(edgefl_cli, tmp_path)
    for name, spec in (("mnist", MNIST), ("cifar10", CIFAR10), ("digits", DIGITS)):
        assert statuses[name] == {
            "name": name, "ready": False, "path": str(tmp_path / name), "train_count": None, "test_count": None,
            "size_bytes": None, "source": None,
            "problem": f"dataset {name} is not stored in {tmp_path}: {spec.fix_hint}",
        }


@pytest.mark.parametrize("how", ["ensure_dataset", "load_partition"])
def test_digits_ready_after_it_is_built(edgefl_cli, tmp_path, how):
    data_dir = tmp_path / "data"
    if how == "ensure_dataset":
        ensure_dataset("digits", data_dir)
    else:
        part = load_partition("digits", data_dir, cid=0, num_partitions=5)
        assert part.train_x.shape[1:] == (8, 8, 1)
    store = open_store("digits", data_dir)
    code, out, err = edgefl_cli("data", "status", "--data-dir", str(data_dir))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[:2] == [_missing_line("mnist", data_dir, MNIST.fix_hint),
                         _missing_line("cifar10", data_dir, CIFAR10.fix_hint)]
    assert lines[2] == (f"digits   ready    1497 train / 300 test, {store.size_bytes / 1e6:.1f} MB in "
                        f"{data_dir / 'digits'}")
    assert len(lines) == 3

    digits = _status_json(edgefl_cli, data_dir)["digits"]
    assert digits == {
        "name": "digits", "ready": True, "path": str(data_dir / "digits"), "train_count": 1497,
        "test_count": 300, "size_bytes": store.size_bytes, "source": store.meta["source"], "problem": None,
    }
    assert digits["source"]["sha256"] == DIGITS.sources[0].digest

    code, out, err = edgefl_cli("data", "status", "--verify", "--data-dir", str(data_dir))
    assert (code, err) == (0, "") and out.splitlines()[2].startswith("digits   ready    1497 train / 300 test")


def test_status_verify_reports_a_corrupt_store(edgefl_cli, tmp_path):
    ensure_dataset("digits", tmp_path)
    train_x = tmp_path / "digits" / "train_x.npy"
    raw = bytearray(train_x.read_bytes())
    raw[-1] ^= 0x01  # a pixel in range stays plausible: only --verify's hashes can tell
    train_x.write_bytes(bytes(raw))
    code, out, err = edgefl_cli("data", "status", "--verify", "--data-dir", str(tmp_path))
    assert (code, err) == (0, "")
    line = out.splitlines()[2]
    assert line.startswith(f"digits   missing  dataset digits in {tmp_path / 'digits'} is corrupt (")
    assert line.endswith(DIGITS.fix_hint)
    statuses = _status_json(edgefl_cli, tmp_path)  # without --verify the shapes still look right
    assert statuses["digits"]["ready"] is True


def test_import_mnist_idx_directory(edgefl_cli, tmp_path):
    expected = mnist_arrays(seed=3)
    source = tmp_path / "usb" / "mnist"
    write_mnist(source, expected, gz=False)
    data_dir = tmp_path / "data"
    code, out, err = edgefl_cli("data", "import", str(source), "--data-dir", str(data_dir))
    assert (code, err) == (0, "")
    assert out == f"mnist: imported from {source} into {data_dir}\n"
    store = open_store("mnist", data_dir, verify=True)
    np.testing.assert_array_equal(store.train_x, expected.train_x)
    np.testing.assert_array_equal(store.train_y, expected.train_y)
    np.testing.assert_array_equal(store.test_x, expected.test_x)
    np.testing.assert_array_equal(store.test_y, expected.test_y)

    mnist = _status_json(edgefl_cli, data_dir)["mnist"]
    assert (mnist["ready"], mnist["train_count"], mnist["test_count"]) == (True, MNIST_TRAIN, MNIST_TEST)
    assert mnist["source"]["imported_from"] == str(source.resolve())
    assert mnist["source"]["checksum_verified"] == []

    # Importing again replaces the store with the new files.
    again = mnist_arrays(seed=4)
    write_mnist(source, again, gz=False)
    code, out, _ = edgefl_cli("data", "import", str(source), "--data-dir", str(data_dir))
    assert code == 0
    np.testing.assert_array_equal(open_store("mnist", data_dir).train_y, again.train_y)


def test_import_mnist_gz_that_are_not_the_published_files_exits_65(edgefl_cli, tmp_path):
    source = tmp_path / "mnist"
    write_mnist(source, mnist_arrays(), gz=True)
    first = source / "train-images-idx3-ubyte.gz"
    code, out, err = edgefl_cli("data", "import", str(source), "--data-dir", str(tmp_path / "data"))
    assert (code, out) == (65, "")
    assert err == (f"edgefl: {first} is corrupt or not the original: its md5 is {md5(first)}, expected "
                   f"{MNIST.sources[0].digest}; fetch it again, or {MNIST.fix_hint}\n")
    assert not (tmp_path / "data" / "mnist").exists()


def test_import_of_an_unrecognisable_directory_exits_65(edgefl_cli, tmp_path):
    source = tmp_path / "stuff"
    source.mkdir()
    (source / "README.txt").write_text("holiday photos\n")
    (source / "images.bin").write_bytes(b"\x00" * 100)
    data_dir = tmp_path / "data"
    code, out, err = edgefl_cli("data", "import", str(source), "--data-dir", str(data_dir))
    assert (code, out) == (65, "")
    assert err == f"edgefl: {source} is not a dataset edgefl can import: give {FORMS}\n"
    assert len(err.splitlines()) == 1
    assert not (data_dir / "mnist").exists() and not (data_dir / "cifar10").exists()


def test_import_of_an_empty_directory_exits_65(edgefl_cli, tmp_path):
    code, out, err = edgefl_cli("data", "import", str(tmp_path), "--data-dir", str(tmp_path / "data"))
    assert (code, out, err) == (65, "", f"edgefl: {tmp_path} is not a dataset edgefl can import: give {FORMS}\n")


def test_import_of_a_missing_path_exits_65(edgefl_cli, tmp_path):
    missing = tmp_path / "nope"
    code, out, err = edgefl_cli("data", "import", str(missing), "--data-dir", str(tmp_path / "data"))
    assert (code, out, err) == (65, "", f"edgefl: {missing} does not exist: give {FORMS}\n")


def test_import_of_an_incomplete_mnist_directory_exits_65(edgefl_cli, tmp_path):
    source = tmp_path / "mnist"
    write_mnist(source, mnist_arrays(), gz=False)
    (source / "t10k-labels-idx1-ubyte").unlink()
    code, out, err = edgefl_cli("data", "import", str(source), "--data-dir", str(tmp_path / "data"))
    assert (code, out) == (65, "")
    assert err == f"edgefl: {source} lacks t10k-labels-idx1-ubyte (.gz or gunzipped): {MNIST.fix_hint}\n"


def test_import_of_one_mnist_file_exits_65(edgefl_cli, tmp_path):
    source = tmp_path / "mnist"
    write_mnist(source, mnist_arrays(), gz=False)
    one = source / "train-labels-idx1-ubyte"
    code, out, err = edgefl_cli("data", "import", str(one), "--data-dir", str(tmp_path / "data"))
    assert (code, out, err) == (65, "", f"edgefl: {one} is one MNIST file: import the directory holding all four\n")


def test_import_of_a_truncated_idx_file_exits_65(edgefl_cli, tmp_path):
    source = tmp_path / "mnist"
    write_mnist(source, mnist_arrays(), gz=False)
    images = source / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-1])
    code, out, err = edgefl_cli("data", "import", str(source), "--data-dir", str(tmp_path / "data"))
    assert (code, out) == (65, "")
    expected_bytes = 16 + MNIST_TRAIN * 28 * 28
    assert err == (f"edgefl: {images} is not a valid MNIST IDX file: header promises {expected_bytes} bytes for "
                   f"{MNIST_TRAIN} items, file has {expected_bytes - 1}; {MNIST.fix_hint}\n")


def test_import_into_an_unwritable_data_dir_exits_73(edgefl_cli, tmp_path):
    source = tmp_path / "mnist"
    write_mnist(source, mnist_arrays(), gz=False)
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    code, out, err = edgefl_cli("data", "import", str(source), "--data-dir", str(blocker / "data"))
    assert (code, out) == (73, "")
    assert len(err.splitlines()) == 1
    assert err.startswith(f"edgefl: cannot write dataset mnist under {blocker / 'data'}: ")


def test_usage_errors_exit_64(edgefl_cli, tmp_path):
    with pytest.raises(SystemExit) as info:
        edgefl_cli("data", "import", "--data-dir", str(tmp_path))
    assert info.value.code == 64
    with pytest.raises(SystemExit) as info:
        edgefl_cli("data")
    assert info.value.code == 64


def test_the_digits_fix_hint_command_works(edgefl_cli, tmp_path):
    # DIGITS.fix_hint (shown by `data status`) tells a person to run this; it needs no network.
    assert "`edgefl data download digits`" in DIGITS.fix_hint
    code, out, err = edgefl_cli("data", "download", "digits", "--quiet", "--data-dir", str(tmp_path))
    assert (code, err) == (0, "")
    assert out == f"digits: stored in {tmp_path}\n"
    assert _status_json(edgefl_cli, tmp_path)["digits"]["ready"] is True
