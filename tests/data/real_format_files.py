"""Small datasets written byte for byte in the formats MNIST and CIFAR-10 are published in.

The real files cannot be downloaded here, so the tests run the real import and
download code on these: same names, same headers, same pickles, fewer samples.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MNIST_TRAIN, MNIST_TEST = 300, 60
CIFAR_BATCH, CIFAR_TEST = 12, 10  # rows per training batch (5 batches) and in test_batch


@dataclass(frozen=True)
class Expected:
    """The arrays a store must hold after importing the generated files."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


# --- MNIST: IDX files ----------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX as published: two zero bytes, type 0x08 (ubyte), ndim, big-endian uint32 sizes, data."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def mnist_arrays(seed: int = 0) -> Expected:
    rng = np.random.default_rng(seed)
    return Expected(
        train_x=rng.integers(0, 256, (MNIST_TRAIN, 28, 28, 1), dtype=np.uint8),
        train_y=rng.integers(0, 10, MNIST_TRAIN, dtype=np.uint8),
        test_x=rng.integers(0, 256, (MNIST_TEST, 28, 28, 1), dtype=np.uint8),
        test_y=rng.integers(0, 10, MNIST_TEST, dtype=np.uint8),
    )


def write_mnist(directory: Path, expected: Expected, *, gz: bool = True) -> dict[str, str]:
    """The four IDX files (gzipped as published, or gunzipped); returns md5 by file name."""
    directory.mkdir(parents=True, exist_ok=True)
    contents = {
        "train-images-idx3-ubyte": idx_bytes(expected.train_x[..., 0]),
        "train-labels-idx1-ubyte": idx_bytes(expected.train_y),
        "t10k-images-idx3-ubyte": idx_bytes(expected.test_x[..., 0]),
        "t10k-labels-idx1-ubyte": idx_bytes(expected.test_y),
    }
    checksums = {}
    for base, content in contents.items():
        path = directory / (f"{base}.gz" if gz else base)
        path.write_bytes(gzip.compress(content, mtime=0) if gz else content)
        checksums[path.name] = md5(path)
    return checksums


# --- CIFAR-10: pickled batches in a tarball ------------------------------------------------


def python2_pickle(obj: Any) -> bytes:
    """Pickle ``obj`` as Python 2's cPickle (protocol 2) wrote the CIFAR-10 batches.

    Python 3 cannot write these: its protocol 2 turns bytes into calls of
    _codecs.encode. Python 2 wrote str as SHORT_BINSTRING/BINSTRING, and numpy
    arrays through numpy.core.multiarray._reconstruct, as done here. (cPickle's
    memo PUT opcodes are left out: they do not change what is built.)
    """
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    return bytes(out + b".")


def _emit(obj: Any, out: bytearray) -> None:
    if obj is None:
        out += b"N"
    elif obj is False:
        out += b"\x89"
    elif isinstance(obj, int):
        if 0 <= obj < 256:
            out += b"K" + bytes([obj])
        elif 0 <= obj < 65536:
            out += b"M" + struct.pack("<H", obj)
        else:
            out += b"J" + struct.pack("<i", obj)
    elif isinstance(obj, bytes):
        out += (b"U" + bytes([len(obj)]) if len(obj) < 256 else b"T" + struct.pack("<i", len(obj))) + obj
    elif isinstance(obj, tuple):
        out += b"("
        for item in obj:
            _emit(item, out)
        out += b"t"
    elif isinstance(obj, list):
        out += b"]("
        for item in obj:
            _emit(item, out)
        out += b"e"
    elif isinstance(obj, dict):
        out += b"}("
        for key, value in obj.items():
            _emit(key, out)
            _emit(value, out)
        out += b"u"
    elif isinstance(obj, np.dtype):
        out += b"cnumpy\ndtype\n"
        _emit((obj.str[1:].encode(), 0, 1), out)
        out += b"R"
        _emit((3, b"|", None, None, None, -1, -1, 0), out)
        out += b"b"
    elif isinstance(obj, np.ndarray):
        out += b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
        _emit((0,), out)
        _emit(b"b", out)
        out += b"\x87R"  # TUPLE3, REDUCE
        _emit((1, obj.shape, obj.dtype, False, obj.tobytes()), out)
        out += b"b"
    else:
        raise TypeError(f"python2_pickle cannot write {type(obj)}")


def cifar_arrays(seed: int = 1) -> Expected:
    rng = np.random.default_rng(seed)
    return Expected(
        train_x=rng.integers(0, 256, (5 * CIFAR_BATCH, 32, 32, 3), dtype=np.uint8),
        train_y=rng.integers(0, 10, 5 * CIFAR_BATCH, dtype=np.uint8),
        test_x=rng.integers(0, 256, (CIFAR_TEST, 32, 32, 3), dtype=np.uint8),
        test_y=rng.integers(0, 10, CIFAR_TEST, dtype=np.uint8),
    )


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 -> the published N x 3072 rows: all red, then green, then blue, row-major."""
    rows = np.empty((len(images), 3072), dtype=np.uint8)
    for channel in range(3):
        rows[:, channel * 1024 : (channel + 1) * 1024] = images[..., channel].reshape(len(images), 1024)
    return rows


def cifar_batches(expected: Expected) -> dict[str, dict[bytes, Any]]:
    """The six batch dicts as published: bytes keys, a uint8 b"data" array, a b"labels" list of ints."""
    batches = {}
    for number in range(1, 6):
        rows = slice((number - 1) * CIFAR_BATCH, number * CIFAR_BATCH)
        batches[f"data_batch_{number}"] = _batch(
            f"training batch {number} of 5", expected.train_x[rows], expected.train_y[rows]
        )
    batches["test_batch"] = _batch("testing batch 1 of 1", expected.test_x, expected.test_y)
    return batches


def _batch(label: str, images: np.ndarray, labels: np.ndarray) -> dict[bytes, Any]:
    return {
        b"batch_label": label.encode(),
        b"labels": [int(label) for label in labels],
        b"data": cifar_rows(images),
        b"filenames": [f"image_{index:05d}.png".encode() for index in range(len(images))],
    }


def cifar_members(expected: Expected, pickler: Any = python2_pickle) -> dict[str, bytes]:
    """Every member of cifar-10-batches-py/, including batches.meta (which edgefl need not read)."""
    members = {name: pickler(batch) for name, batch in cifar_batches(expected).items()}
    members["batches.meta"] = pickler(
        {
            b"num_cases_per_batch": 10000,
            b"label_names": [
                b"airplane",
                b"automobile",
                b"bird",
                b"cat",
                b"deer",
                b"dog",
                b"frog",
                b"horse",
                b"ship",
                b"truck",
            ],
            b"num_vis": 3072,
        }
    )
    members["readme.html"] = (
        b'<meta HTTP-EQUIV="REFRESH" content="0; url=http://www.cs.toronto.edu/~kriz/cifar.html">\n'
    )
    return members


def write_cifar_dir(parent: Path, members: dict[str, bytes]) -> Path:
    directory = parent / "cifar-10-batches-py"
    directory.mkdir(parents=True)
    for name, content in members.items():
        (directory / name).write_bytes(content)
    return directory


def write_cifar_tarball(path: Path, members: dict[str, bytes]) -> str:
    """A gzipped tar with the published member names; returns its md5."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        directory = tarfile.TarInfo("cifar-10-batches-py")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        tar.addfile(directory)
        for name, content in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(content))
    return md5(path)


def learnable_mnist(train: int, test: int, seed: int = 0) -> Expected:
    """MNIST-shaped images whose class shows as a bright block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 4)
            images[i, 2 + row * 8 : 8 + row * 8, 2 + col * 6 : 7 + col * 6] = 230
        return images[..., None], labels

    train_x, train_y = make(train)
    test_x, test_y = make(test)
    return Expected(train_x, train_y, test_x, test_y)
