"""`edgefl data import PATH`: turn the original published files into a store.

Accepted, and told apart by what PATH holds:

- MNIST: a directory with the four IDX files, gzipped as published or already
  gunzipped;
- CIFAR-10: ``cifar-10-python.tar.gz`` (or a directory holding it), or the
  extracted ``cifar-10-batches-py/`` directory (or its parent).

Archives under their published names are checked against the published md5;
extracted or gunzipped files have no published checksum, so their structure
is checked strictly instead. CIFAR-10's batches are Python pickles, and
unpickling runs code: they are loaded by an unpickler that can build nothing
but dicts, lists, bytes, ints and uint8 numpy arrays.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, cast

import numpy as np

from edgefld.data.sources import CIFAR10, MNIST, DatasetSpec, file_digest
from edgefld.data.store import write_store
from edgefld.errors import DataError

try:  # numpy >= 2 moved the reconstructor; numpy 1.x boards (older JetPacks) only have the old name
    from numpy._core.multiarray import _reconstruct as _numpy_reconstruct
except ImportError:  # pragma: no cover - depends on the installed numpy
    from numpy.core.multiarray import _reconstruct as _numpy_reconstruct  # type: ignore[no-redef]  # the same function

IDX_IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension

# Store array -> IDX file name without ".gz", as published.
MNIST_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}

CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{number}" for number in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
_CIFAR10_ROW_BYTES = 3 * 32 * 32

_IMPORT_FORMS = (
    "a directory with the four MNIST IDX files (.gz or gunzipped), cifar-10-python.tar.gz, "
    "or an extracted cifar-10-batches-py directory"
)


def import_dataset(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str],
    *,
    checksums: Mapping[str, str] | None = None,
) -> str:
    """Store the dataset found at ``path`` under ``data_dir``; returns its name.

    ``checksums`` replaces published digests by file name (the same algorithm
    as the published one): for a re-hosted file, and for tests.
    """
    if not os.fspath(path):
        raise DataError(f"an empty path (it would mean the current directory): give {_IMPORT_FORMS}")
    source = Path(path)
    return import_from(source, data_dir, checksums or {}, {"imported_from": str(source.resolve())})


def import_from(
    source: Path,
    data_dir: str | os.PathLike[str],
    checksums: Mapping[str, str],
    origin: Mapping[str, Any],
) -> str:
    """import_dataset with the ``source`` record that meta.json keeps (the downloader passes its URLs)."""
    if source.is_dir():
        if any(_idx_candidates(source, base) for base in MNIST_IDX_FILES.values()):
            return _import_mnist(source, data_dir, checksums, origin)
        if (source / CIFAR10_TRAIN_BATCHES[0]).is_file():
            return _import_cifar10_dir(source, data_dir, origin)
        if (source / CIFAR10_DIR).is_dir():
            return _import_cifar10_dir(source / CIFAR10_DIR, data_dir, origin)
        if (source / CIFAR10_ARCHIVE).is_file():
            return _import_cifar10_archive(source / CIFAR10_ARCHIVE, data_dir, checksums, origin)
    elif source.is_file():
        if source.name.endswith((".tar.gz", ".tgz", ".tar")) or tarfile.is_tarfile(source):
            return _import_cifar10_archive(source, data_dir, checksums, origin)
        if source.name.removesuffix(".gz") in MNIST_IDX_FILES.values():
            raise DataError(f"{source} is one MNIST file: import the directory holding all four")
    else:
        raise DataError(f"{source} does not exist: give {_IMPORT_FORMS}")
    raise DataError(f"{source} is not a dataset edgefl can import: give {_IMPORT_FORMS}")


def _verify_published(path: Path, spec: DatasetSpec, checksums: Mapping[str, str]) -> bool:
    """Check a file that carries a published name against its digest; False if it has none."""
    published = next((source for source in spec.sources if source.filename == path.name), None)
    if published is None:
        return False
    expected = checksums.get(path.name, published.digest)
    actual = file_digest(path, published.algorithm)
    if actual != expected:
        raise DataError(
            f"{path} is corrupt or not the original: its {published.algorithm} is {actual}, expected "
            f"{expected}; fetch it again, or {spec.fix_hint}"
        )
    return True


# --- MNIST ---------------------------------------------------------------------------------


def _idx_candidates(directory: Path, base: str) -> list[Path]:
    """The files that can hold one IDX file, the published .gz first (it can be checksummed)."""
    return [path for path in (directory / f"{base}.gz", directory / base) if path.is_file()]


def _import_mnist(
    directory: Path, data_dir: str | os.PathLike[str], checksums: Mapping[str, str], origin: Mapping[str, Any]
) -> str:
    missing = [base for base in MNIST_IDX_FILES.values() if not _idx_candidates(directory, base)]
    if missing:
        raise DataError(f"{directory} lacks {', '.join(missing)} (.gz or gunzipped): {MNIST.fix_hint}")
    arrays: dict[str, np.ndarray] = {}
    verified: list[str] = []
    for key, base in MNIST_IDX_FILES.items():
        path = _idx_candidates(directory, base)[0]
        if _verify_published(path, MNIST, checksums):
            verified.append(path.name)
        arrays[key] = _read_idx(path, images=key.endswith("_x"))
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise DataError(
                f"MNIST {split} files disagree: {len(arrays[f'{split}_x'])} images, "
                f"{len(arrays[f'{split}_y'])} labels; {MNIST.fix_hint}"
            )
    write_store(
        data_dir,
        MNIST.name,
        {key: [array] for key, array in arrays.items()},
        {**origin, "checksum_verified": verified},
    )
    return MNIST.name


def _read_idx(path: Path, *, images: bool) -> np.ndarray:
    """An MNIST IDX file as uint8 images N x 28 x 28 x 1, or labels N."""
    try:
        content = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path} is truncated or corrupt ({exc}): {MNIST.fix_hint}") from None
    try:
        return parse_idx(content, images=images)
    except ValueError as exc:
        raise DataError(f"{path} is not a valid MNIST IDX file: {exc}; {MNIST.fix_hint}") from None


def parse_idx(content: bytes, *, images: bool) -> np.ndarray:
    """Parse IDX bytes (big-endian header: magic, then one uint32 per dimension) strictly.

    Raises ValueError saying what does not match MNIST: the magic number, the
    image size, the length the header promises, or a label above 9.
    """
    magic = IDX_IMAGES_MAGIC if images else IDX_LABELS_MAGIC
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    if len(content) < header_bytes:
        raise ValueError(f"{len(content)} bytes is shorter than the {header_bytes}-byte header")
    found = int.from_bytes(content[:4], "big")
    if found != magic:
        raise ValueError(f"magic number 0x{found:08x}, expected 0x{magic:08x}")
    dims = tuple(int(d) for d in np.frombuffer(content, dtype=">u4", count=ndim, offset=4))
    if images and dims[1:] != MNIST.image_shape[:2]:
        raise ValueError(f"images are {dims[1]}x{dims[2]}, MNIST's are 28x28")
    expected_bytes = header_bytes + int(np.prod(dims))
    if len(content) != expected_bytes:
        raise ValueError(f"header promises {expected_bytes} bytes for {dims[0]} items, file has {len(content)}")
    if dims[0] == 0:
        raise ValueError("it holds no items")
    values = np.frombuffer(content, dtype=np.uint8, offset=header_bytes)
    if images:
        return values.reshape(dims[0], *MNIST.image_shape)
    if int(values.max()) >= MNIST.num_classes:
        raise ValueError(f"label {int(values.max())} is not a digit")
    return values


# --- CIFAR-10 ------------------------------------------------------------------------------


def _import_cifar10_archive(
    archive: Path, data_dir: str | os.PathLike[str], checksums: Mapping[str, str], origin: Mapping[str, Any]
) -> str:
    verified = [archive.name] if _verify_published(archive, CIFAR10, checksums) else []
    wanted = {f"{CIFAR10_DIR}/{batch}": batch for batch in (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)}
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        # Members are read in memory by name and never extracted, so a crafted archive cannot
        # write outside data_dir; one sequential pass suits the gzip stream.
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                batch = wanted.get(member.name)
                if batch is None or not member.isfile():
                    continue
                member_file = tar.extractfile(member)
                assert member_file is not None  # isfile() members always have content
                batches[batch] = _parse_cifar10_batch(member_file.read(), f"{archive}:{member.name}")
    except tarfile.ReadError:
        # tarfile's own text lists every compression it tried, over several lines.
        raise DataError(f"{archive} is truncated or corrupt (not a readable tar archive): {CIFAR10.fix_hint}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive} is truncated or corrupt ({exc}): {CIFAR10.fix_hint}") from None
    missing = [name for name in wanted if wanted[name] not in batches]
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: {CIFAR10.fix_hint}")
    return _store_cifar10(batches, data_dir, {**origin, "checksum_verified": verified})


def _import_cifar10_dir(directory: Path, data_dir: str | os.PathLike[str], origin: Mapping[str, Any]) -> str:
    batch_names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    missing = [name for name in batch_names if not (directory / name).is_file()]
    if missing:
        raise DataError(f"{directory} lacks {', '.join(missing)}: {CIFAR10.fix_hint}")
    batches = {}
    for name in batch_names:
        path = directory / name
        try:
            content = path.read_bytes()
        except OSError as exc:
            raise DataError(f"cannot read {path}: {exc}") from None
        batches[name] = _parse_cifar10_batch(content, str(path))
    return _store_cifar10(batches, data_dir, {**origin, "checksum_verified": []})


def _store_cifar10(
    batches: Mapping[str, tuple[np.ndarray, np.ndarray]], data_dir: str | os.PathLike[str], source: Mapping[str, Any]
) -> str:
    train = [batches[name] for name in CIFAR10_TRAIN_BATCHES]
    test = [batches[CIFAR10_TEST_BATCH]]
    arrays = {
        "train_x": [images for images, _ in train],
        "train_y": [labels for _, labels in train],
        "test_x": [images for images, _ in test],
        "test_y": [labels for _, labels in test],
    }
    write_store(data_dir, CIFAR10.name, arrays, source)
    return CIFAR10.name


def _parse_cifar10_batch(content: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch pickle -> (images N x 32 x 32 x 3, labels N), both uint8."""
    try:
        batch = _CifarBatchUnpickler(io.BytesIO(content), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{where} is not a CIFAR-10 batch as published, refused: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, AttributeError, KeyError) as exc:
        raise DataError(f"{where} is truncated or corrupt ({exc}): {CIFAR10.fix_hint}") from None
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not (isinstance(data, np.ndarray) and data.ndim == 2 and data.shape[1] == _CIFAR10_ROW_BYTES):
        raise DataError(f"{where} has no b'data' array of {_CIFAR10_ROW_BYTES}-byte rows: {CIFAR10.fix_hint}")
    if not (
        isinstance(labels, list)
        and len(labels) == len(data)
        and all(type(label) is int and 0 <= label < CIFAR10.num_classes for label in labels)
    ):
        raise DataError(f"{where} has no b'labels' list of {len(data)} classes 0..9: {CIFAR10.fix_hint}")
    # Rows are channel-major (1024 red, 1024 green, 1024 blue); the store keeps height x width x channel.
    images = np.ascontiguousarray(data.reshape(len(data), 3, 32, 32).transpose(0, 2, 3, 1))
    return images, np.asarray(labels, dtype=np.uint8)


class _Refused(pickle.UnpicklingError):
    """The pickle asks for something a published batch never holds: refused, never built."""


def _empty_ndarray(subtype: type, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not np.ndarray:
        raise _Refused(f"refusing to build an array of type {subtype!r}")
    return cast(np.ndarray, _numpy_reconstruct(np.ndarray, shape, typecode))


def _uint8_dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    # The only dtype in a CIFAR batch. Object dtypes would let the array's state hold arbitrary objects.
    if spec not in (b"u1", "u1"):
        raise _Refused(f"refusing dtype {spec!r}: a CIFAR-10 batch holds only uint8")
    return np.dtype("u1", align=bool(align), copy=bool(copy))


class _CifarBatchUnpickler(pickle.Unpickler):
    """Builds only what the published batches contain.

    The batches are Python 2 pickles of ``{b"batch_label": bytes, b"labels": [int],
    b"data": uint8 ndarray, b"filenames": [bytes]}``; the array is the only thing
    that needs a global: numpy's ``_reconstruct`` plus ``ndarray`` and ``dtype``
    (a pickle of the same dict by Python 3 with protocol 3 or 4 names the same
    globals, under numpy 2's module name). Anything else, os.system first, is refused.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("numpy.core.multiarray", "_reconstruct"): _empty_ndarray,
        ("numpy._core.multiarray", "_reconstruct"): _empty_ndarray,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): _uint8_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        allowed = self._ALLOWED.get((module, name))
        if allowed is None:
            raise _Refused(f"it asks for {module}.{name}")
        return allowed
