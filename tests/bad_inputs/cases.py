"""The bad-input corpus: broken files and arguments given to every `edgefl` command that reads them.

One row per case: the command line (``{d}`` is the case's own directory), a
function that writes the broken input there, the exit code the registry
(edgefld/exit_codes.py) gives that failure, and a regular expression the one
line on stderr must match. tests/config/test_bad_configs.py holds the
config-value cases; these are the rest: TOML structure, sizes and encodings,
dataset files, checkpoints and metrics, PKI files, command-line arguments.

Every case runs with ``EDGEFL_CONFIG={d}/edgefl.toml``, a valid config whose
paths all lie under ``{d}`` (BASE_CONFIG), and ``{d}`` holds a valid digits
store: the test hashes ``{d}`` before and after, so a command that fails must
leave everything already stored as it was.
"""

from __future__ import annotations

import datetime
import gzip
import io
import os
import pickle
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgefld.exit_codes import ExitCode
from tests.data.real_format_files import (
    cifar_arrays,
    cifar_batches,
    cifar_members,
    idx_bytes,
    mnist_arrays,
    python2_pickle,
    write_cifar_dir,
    write_cifar_tarball,
)

BASE_CONFIG = """\
[client]
cid = 0
server = "127.0.0.1:9092"
data_dir = "data"
state_dir = "client"

[server]
listen = "127.0.0.1:9092"
data_dir = "data"
state_dir = "server"
enrolled_keys = "pki/enrolled"
tls_cert = "pki/server.crt"
tls_key = "pki/server.key"
rounds = 1
"""

CONFIG, USAGE, DATA, FAILURE = ExitCode.CONFIG, ExitCode.USAGE, ExitCode.DATA, ExitCode.FAILURE


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]  # after `edgefl`; "{d}" is the case's directory
    code: int
    stderr: str  # regular expression the one stderr line must match (re.search)
    make: Callable[[Path], None] | None = None
    one_line: bool = True  # False: a run that succeeds may log several lines; none may be a traceback


CASES: list[Case] = []


def case(id: str, argv: str | tuple[str, ...], code: int, stderr: str, one_line: bool = True):
    """Decorator form: the decorated function writes the case's input under its directory."""
    def register(make: Callable[[Path], None] | None) -> Callable[[Path], None] | None:
        CASES.append(Case(id, tuple(argv.split()) if isinstance(argv, str) else argv, int(code), stderr, make,
                          one_line))
        return make
    return register


def plain(id: str, argv: str | tuple[str, ...], code: int, stderr: str) -> None:
    case(id, argv, code, stderr)(None)


def write(relative: str, content: bytes) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        path = d / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return make


# --- TOML structure, sizes and encodings (`edgefl check-config`) -------------------------------
VALID = b'[client]\ncid = 1\nserver = "10.0.0.5:9092"\n'

for id_, content, expected in [
    ("toml-dotted-key-then-table", b'server.rounds = 3\n[server]\nrounds = 4\n', r"only once|TOML syntax error"),
    ("toml-inline-table-then-header", b'server = { rounds = 3 }\n[server]\n', r"TOML syntax error"),
    ("toml-array-of-tables", b'[[server]]\nrounds = 3\n', r"\[server\]|server: must be a table"),
    ("toml-header-twice-with-subtable", b'[server.x]\n[server]\n[server.x]\n', r"TOML syntax error.*only once"),
    ("toml-float-1e400", b'[server]\nsample_fraction = 1e400\n', r"sample_fraction: must be .*got inf"),
    ("toml-int-2-pow-70", b'[server]\nrounds = 1180591620717411303424\n', r"rounds: must be .*<= 1000000, got 1180591620717411303424"),
    ("toml-int-minus-2-pow-70", b'[client]\ncid = -1180591620717411303424\nserver = "a:1"\n', r"cid: must be .*>= 0"),
    ("toml-int-5000-digits", b"[server]\nrounds = " + b"7" * 5000 + b"\n", r"2: \[server\] rounds: .*(too large|digits)"),
    ("toml-int-beyond-int64", b'[server]\nbatch_size = 99999999999999999999999999999999999999\n', r"batch_size: must be .*<= 65536"),
    ("toml-10mb-string", b'[log]\nlevel = "' + b"x" * (10 << 20) + b'"\n', r"larger than 1048576 bytes"),
    ("toml-900kb-string-value", b'[log]\nlevel = "' + b"v" * 900_000 + b'"\n', r'\[log\] level: must be one of .*got "v{10,40}\.\.\."$'),
    ("toml-900kb-key", b"[log]\n" + b"k" * 900_000 + b" = 1\n", r"\[log\] k{10,80}\.\.\.: unknown key"),
    ("toml-deep-arrays", b"x = " + b"[" * 400_000 + b"]" * 400_000 + b"\n", r"nesting is too deep|TOML"),
    ("toml-deep-inline-tables", b"x = " + b"{a=" * 200_000 + b"1" + b"}" * 200_000 + b"\n", r"nesting is too deep|TOML"),
    # tomllib is quadratic in a key's parts: this header took ~40 s to parse before the loader refused it.
    ("toml-deep-dotted-table", b"[server" + b".a" * 100_000 + b"]\n", r":1: a key or table name of more than 64 dotted parts"),
    ("toml-deep-dotted-key", b"[server]\n" + b"a." * 300_000 + b"b = 1\n", r":2: a key or table name of more than 64 dotted parts"),
    ("toml-dotted-key-65-parts", b"[server]\n" + b"a." * 65 + b"b = 1\n", r":2: a key or table name of more than 64 dotted parts"),
    ("toml-date-value", b'[server]\nrounds = 1979-05-27\n', r"rounds: must be an integer .*got date"),
    ("toml-table-value", b'[server]\nrounds = { n = 3 }\n', r"rounds: must be an integer .*got table"),
    ("toml-control-char-in-string", b'[log]\nlevel = "in\x01fo"\n', r"2: \[log\] level: TOML syntax error"),
    ("toml-bare-cr-line-ends", b'[client]\rcid = 1\r', r"TOML syntax error"),
    ("toml-homoglyph-bare-key", '[client]\n\u0441id = 1\nserver = "a:1"\n'.encode(), r":2: \[client\]: TOML syntax error"),
    ("toml-homoglyph-quoted-key", '[client]\n"\u0441id" = 1\nserver = "a:1"\n'.encode(), r'unknown key \(did you mean "cid"\?\)'),
    ("enc-utf16-le-no-bom", "[client]\ncid = 1\n".encode("utf-16-le"), r":1: contains a NUL byte"),
    ("enc-utf16-be-bom", "[client]\ncid = 1\n".encode("utf-16"), r"not valid UTF-8"),
    ("enc-utf32-bom", "[client]\ncid = 1\n".encode("utf-32"), r"not valid UTF-8|NUL"),
    ("enc-latin1-value", b'[log]\nlevel = "d\xe9bug"\n', r":2: is not valid UTF-8 \(byte 0xe9"),
    ("enc-surrogate-bytes", b'[log]\nlevel = "\xed\xa0\x80"\n', r"not valid UTF-8 \(byte 0xed"),
    ("enc-nul-first-byte", b"\x00" + VALID, r":1: contains a NUL byte"),
    ("enc-random-binary", np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes(),
     r"not valid UTF-8|NUL|TOML syntax error"),
]:
    case(id_, "check-config {d}/bad.toml", CONFIG, expected)(write("bad.toml", content))


# A UTF-8 BOM is accepted (Windows editors add one; TOML forbids it but the intent is plain), so it is
# not an error: check-config says OK.
case("enc-utf8-bom-accepted", "check-config {d}/bom.toml", ExitCode.OK, r"^$", one_line=False)(
    write("bom.toml", b"\xef\xbb\xbf" + VALID))
case("enc-utf8-bom-twice", "check-config {d}/bom.toml", CONFIG, r"TOML syntax error")(
    write("bom.toml", b"\xef\xbb\xbf\xef\xbb\xbf" + VALID))


@case("file-fifo-not-read", "check-config {d}/fifo.toml", CONFIG, r"fifo\.toml: is not a regular file")
def _fifo(d: Path) -> None:
    os.mkfifo(d / "fifo.toml")  # opening it would block for ever: it must be refused, not read


@case("file-symlink-loop", "check-config {d}/loop.toml", CONFIG, r"loop\.toml: cannot be read: Too many levels")
def _loop(d: Path) -> None:
    os.symlink(d / "loop.toml", d / "loop.toml")


plain("file-dev-zero", "check-config /dev/zero", CONFIG, r"/dev/zero: is not a regular file")
plain("config-flag-empty-path", ("client", "--config", ""), CONFIG, r"--config: an empty path")

# --- command-line arguments --------------------------------------------------------------------
plain("cli-unknown-subcommand", "frobnicate", USAGE, r"^edgefl: argument COMMAND: invalid choice: 'frobnicate'")
plain("cli-no-subcommand", (), USAGE, r"^edgefl: the following arguments are required: COMMAND")
plain("cli-unknown-flag", "check-config --frob", USAGE, r"unrecognized arguments: --frob")
plain("cli-extra-argument", "exit-codes extra", USAGE, r"unrecognized arguments: extra")
plain("cli-cid-empty", ("client", "--cid", ""), CONFIG, r'^edgefl: --cid: must be an integer >= 0 and <= 1000000, got ""$')
plain("cli-cid-minus-one", "client --cid -1", CONFIG, r"^edgefl: --cid: must be an integer >= 0 and <= 1000000, got -1$")
plain("cli-cid-hex", "client --cid 0x10", CONFIG, r'--cid: must be an integer .*got "0x10"')
plain("cli-cid-float", "client --cid 1e3", CONFIG, r'--cid: must be an integer .*got "1e3"')
plain("cli-cid-huge", "client --cid 99999999999999999999999999", CONFIG, r"--cid: must be an integer .*<= 1000000, got 99999999999999999999999999$")
plain("cli-cid-4300-digits", ("client", "--cid", "9" * 5000), CONFIG, r'--cid: must be an integer .*got "9{10,40}\.\.\."$')
plain("cli-threads-negative", "client --threads -1", CONFIG, r"--threads: must be an integer >= 0")
plain("cli-runtime-port-privileged", "client --runtime-port 80", CONFIG, r"--runtime-port: must be 0 \(pick a free port\) or 1024..65535")
plain("cli-server-empty", ("client", "--server", ""), CONFIG, r'--server: "" is not a valid address')
plain("cli-tls-word", "client --tls yes", CONFIG, r'--tls: must be true, false or "auto", got "yes"')
plain("cli-guards-word", "client --guards auto", CONFIG, r'--guards: must be true or false, got "auto"')
plain("cli-backend-empty", ("client", "--backend", ""), CONFIG, r'--backend: must be one of .*got ""')
plain("cli-rounds-zero", "server --rounds 0", CONFIG, r"--rounds: must be an integer >= 1")
plain("cli-fraction-nan", "server --sample-fraction nan", CONFIG, r"--sample-fraction: must be a number > 0 and <= 1, got nan")
plain("cli-fraction-1e400", "server --sample-fraction 1e400", CONFIG, r"--sample-fraction: .*got inf")
plain("cli-batch-float", "server --batch-size 1.5", CONFIG, r'--batch-size: must be an integer .*got "1.5"')
plain("cli-listen-empty", ("server", "--listen", ""), CONFIG, r'--listen: "" is not a valid address')
plain("cli-task-unknown", "server --task imagenet", CONFIG, r'--task: must be one of "cifar10", "mnist", "digits", got "imagenet"')
plain("cli-log-level-empty", ("server", "--log-level", ""), CONFIG, r'--log-level: must be one of')
plain("cli-demo-clients-zero", "demo --clients 0", USAGE, r"argument --clients: invalid choice: 0")
plain("cli-demo-rounds-word", "demo --rounds many", USAGE, r"argument --rounds: invalid int value: 'many'")
plain("cli-demo-epochs-huge", "demo --epochs 99999999999999999999", USAGE, r"argument --epochs: invalid choice")
plain("cli-data-unknown-dataset", "data download imagenet", USAGE, r"argument dataset: invalid choice: 'imagenet'")
plain("cli-data-import-no-path", "data import", USAGE, r"the following arguments are required: path")
plain("cli-data-import-empty-path", ("data", "import", ""), DATA, r"an empty path")
plain("cli-data-dir-empty", ("data", "status", "--data-dir", ""), CONFIG, r"--data-dir: an empty path")
plain("cli-detect-sysroot-missing", "detect --sysroot {d}/no-such-root", USAGE, r"argument --sysroot: .*no-such-root is not a directory")
plain("cli-pki-days-zero", "pki init-ca --dir {d}/pki --days 0", USAGE, r"argument --days: must be 1\.\.36500 days, got 0")
plain("cli-pki-days-negative", "pki init-ca --dir {d}/pki --days -5", USAGE, r"argument --days: must be 1\.\.36500 days, got -5")
plain("cli-pki-days-huge", "pki init-ca --dir {d}/pki --days 99999999999", USAGE, r"argument --days: must be 1\.\.36500 days")
plain("cli-pki-days-word", "pki init-ca --dir {d}/pki --days soon", USAGE, r"argument --days: must be 1\.\.36500 days, got 'soon'")
plain("cli-pki-client-key-cid-negative", "pki client-key --dir {d}/pki --cid -1", USAGE, r"argument --cid: must be an integer 0\.\.1000000, got -1")
plain("cli-pki-client-key-cid-huge", "pki client-key --dir {d}/pki --cid 10000000000000000000000", USAGE, r"argument --cid: must be an integer 0\.\.1000000")
plain("cli-pki-client-key-out-empty", ("pki", "client-key", "--out", ""), USAGE, r"argument --out: an empty path")
plain("cli-pki-dir-empty", ("pki", "init-ca", "--dir", ""), USAGE, r"argument --dir: an empty path")


@case("cli-enrol-name-traversal", "enrol {d}/client-0.pub --name ../../etc/passwd", FAILURE,
      r'node name "\.\./\.\./etc/passwd" must be 1-64 letters')
def _enrol_traversal(d: Path) -> None:
    from edgefld.pki import create_node_key

    _, public = create_node_key("client-0")
    (d / "client-0.pub").write_bytes(public)


# --- MNIST files (`edgefl data import DIR`) ---------------------------------------------------
MNIST = mnist_arrays()
IDX = {"train-images-idx3-ubyte": idx_bytes(MNIST.train_x[..., 0]), "train-labels-idx1-ubyte": idx_bytes(MNIST.train_y),
       "t10k-images-idx3-ubyte": idx_bytes(MNIST.test_x[..., 0]), "t10k-labels-idx1-ubyte": idx_bytes(MNIST.test_y)}


def mnist_dir(**replace: bytes | None) -> Callable[[Path], None]:
    """The four gunzipped IDX files in {d}/mnist, with some replaced (None: left out)."""
    def make(d: Path) -> None:
        (d / "mnist").mkdir()
        for name, content in IDX.items():
            content = replace.get(name.replace("-", "_"), content)
            if content is not None:
                (d / "mnist" / name).write_bytes(content)
    return make


IMPORT_MNIST = "data import {d}/mnist"
for id_, replace, expected in [
    ("idx-truncated-images", {"train_images_idx3_ubyte": IDX["train-images-idx3-ubyte"][:5000]},
     r"train-images-idx3-ubyte is not a valid MNIST IDX file: header promises 235216 bytes for 300 items, file has 5000"),
    ("idx-header-only-8-bytes", {"t10k_labels_idx1_ubyte": IDX["t10k-labels-idx1-ubyte"][:6]},
     r"t10k-labels-idx1-ubyte is not a valid MNIST IDX file: 6 bytes is shorter than the 8-byte header"),
    ("idx-wrong-magic", {"train_labels_idx1_ubyte": b"\x00\x00\x08\x03" + IDX["train-labels-idx1-ubyte"][4:]},
     r"magic number 0x00000803, expected 0x00000801"),
    ("idx-images-32x32", {"train_images_idx3_ubyte": idx_bytes(np.zeros((3, 32, 32), np.uint8))},
     r"images are 32x32, MNIST's are 28x28"),
    ("idx-count-larger-than-data", {"t10k_images_idx3_ubyte": b"\x00\x00\x08\x03\xff\xff\xff\xff\x00\x00\x00\x1c\x00\x00\x00\x1c"},
     r"header promises \d+ bytes for 4294967295 items, file has 16"),
    ("idx-zero-items", {"train_labels_idx1_ubyte": b"\x00\x00\x08\x01\x00\x00\x00\x00"}, r"it holds no items"),
    ("idx-label-out-of-range", {"t10k_labels_idx1_ubyte": idx_bytes(np.full(60, 10, np.uint8))}, r"label 10 is not a digit"),
    ("idx-counts-disagree", {"train_labels_idx1_ubyte": idx_bytes(MNIST.train_y[:299])},
     r"MNIST train files disagree: 300 images, 299 labels"),
    ("idx-file-missing", {"t10k_labels_idx1_ubyte": None}, r"lacks t10k-labels-idx1-ubyte \(\.gz or gunzipped\)"),
]:
    case(id_, IMPORT_MNIST, DATA, expected)(mnist_dir(**replace))


@case("idx-gz-truncated", IMPORT_MNIST, DATA, r"train-images-idx3-ubyte\.gz is corrupt or not the original: its md5")
def _gz_truncated(d: Path) -> None:
    mnist_dir()(d)
    gz = gzip.compress(IDX["train-images-idx3-ubyte"])
    (d / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])


@case("idx-one-file-given", "data import {d}/mnist/train-images-idx3-ubyte", DATA, r"is one MNIST file: import the directory holding all four")
def _one_file(d: Path) -> None:
    mnist_dir()(d)


plain("import-path-missing", "data import {d}/nothing-here", DATA, r"nothing-here does not exist: give a directory")
case("import-empty-dir", "data import {d}/empty", DATA, r"empty is not a dataset edgefl can import")(
    lambda d: (d / "empty").mkdir())

# --- CIFAR-10 pickles and archives --------------------------------------------------------------
CIFAR = cifar_arrays()


def cifar_dir(**replace: bytes) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        members = cifar_members(CIFAR)
        members.update(replace)
        write_cifar_dir(d, members)
    return make


class _RunsCode:
    """What a malicious pickle looks like: unpickling it runs a shell command."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[[str], int], tuple[str]]:
        return (os.system, (f"touch {self.marker}",))


def _batch_with(**fields) -> bytes:
    batch = dict(cifar_batches(CIFAR)["data_batch_1"])
    batch.update({k.encode(): v for k, v in fields.items()})
    return python2_pickle(batch)


IMPORT_CIFAR = "data import {d}/cifar-10-batches-py"
for id_, replace, expected in [
    ("pickle-not-a-pickle", {"data_batch_2": b"this is not a pickle\n" * 10},
     r"data_batch_2 is (truncated or corrupt|not a CIFAR-10 batch as published)"),
    ("pickle-truncated", {"test_batch": python2_pickle(cifar_batches(CIFAR)["test_batch"])[:3000]},
     r"test_batch is truncated or corrupt"),
    ("pickle-empty-file", {"data_batch_5": b""}, r"data_batch_5 is truncated or corrupt"),
    ("pickle-asks-for-os-system", {"data_batch_1": pickle.dumps(_RunsCode("/tmp/edgefl-pwned-by-pickle"), protocol=2)},
     r"data_batch_1 is not a CIFAR-10 batch as published, refused: it asks for posix\.system"),
    ("pickle-asks-for-builtins-eval", {"data_batch_3": b"\x80\x02c__builtin__\neval\nX\x0b\x00\x00\x00print('hi')\x85R."},
     r"data_batch_3 is not a CIFAR-10 batch as published, refused: it asks for (__builtin__|builtins)\.eval"),
    ("pickle-float32-array", {"data_batch_1": _batch_with(data=np.zeros((12, 3072), np.float32))},
     r"refusing dtype b?'f4'|refused"),
    ("pickle-object-array", {"data_batch_1": pickle.dumps({b"data": np.array([None] * 3, dtype=object), b"labels": [0]}, protocol=2)},
     r"not a CIFAR-10 batch as published, refused"),
    ("pickle-rows-of-1024", {"data_batch_4": _batch_with(data=np.zeros((12, 1024), np.uint8))},
     r"data_batch_4 has no b'data' array of 3072-byte rows"),
    ("pickle-labels-out-of-range", {"data_batch_2": _batch_with(labels=[10] * 12)},
     r"data_batch_2 has no b'labels' list of 12 classes 0\.\.9"),
    ("pickle-labels-negative", {"data_batch_2": _batch_with(labels=[-1] * 12)}, r"no b'labels' list of 12 classes"),
    ("pickle-labels-short", {"test_batch": _batch_with(labels=[1, 2, 3])}, r"test_batch has no b'labels' list of 12 classes"),
    ("pickle-not-a-dict", {"data_batch_1": python2_pickle([1, 2, 3])}, r"data_batch_1 has no b'data' array"),
]:
    case(id_, IMPORT_CIFAR, DATA, expected)(cifar_dir(**replace))


@case("tar-truncated", "data import {d}/cifar-10-python.tar.gz", DATA, r"cifar-10-python\.tar\.gz is corrupt or not the original|truncated or corrupt")
def _tar_truncated(d: Path) -> None:
    write_cifar_tarball(d / "cifar-10-python.tar.gz", cifar_members(CIFAR))
    path = d / "cifar-10-python.tar.gz"
    path.write_bytes(path.read_bytes()[:2000])


@case("tar-gzip-of-garbage", "data import {d}/other.tar.gz", DATA, r"other\.tar\.gz is truncated or corrupt")
def _tar_garbage(d: Path) -> None:
    (d / "other.tar.gz").write_bytes(gzip.compress(b"not a tar archive" * 100))


@case("tar-path-traversal-members", "data import {d}/evil.tar.gz", DATA, r"evil\.tar\.gz lacks cifar-10-batches-py/data_batch_1")
def _tar_traversal(d: Path) -> None:
    with tarfile.open(d / "evil.tar.gz", "w:gz") as tar:
        for name in ("../../escaped", "/tmp/edgefl-absolute-member", "cifar-10-batches-py/../../escaped2"):
            info = tarfile.TarInfo(name)
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))


@case("tar-symlink-member", "data import {d}/link.tar.gz", DATA, r"link\.tar\.gz lacks cifar-10-batches-py/data_batch_1")
def _tar_symlink(d: Path) -> None:
    members = cifar_members(CIFAR)
    with tarfile.open(d / "link.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tar.addfile(info)
        for name, content in members.items():
            if name != "data_batch_1":
                member = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
                member.size = len(content)
                tar.addfile(member, io.BytesIO(content))


# --- a stored dataset that is corrupt (`edgefl server` reads its test split at start) ------------
# mnist, not digits: a server rebuilds a broken digits store from the copy edgefl ships (no person
# needed), while a broken mnist store needs someone to fetch the files again, so it is an error.
def _store_edit(edit: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(d: Path) -> None:
        edit(d / "data" / "mnist")
    return make


def _meta(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    import json

    def change(store: Path) -> None:
        meta = json.loads((store / "meta.json").read_text())
        edit(meta)
        (store / "meta.json").write_text(json.dumps(meta))
    return _store_edit(change)


SERVER = "server --task digits"
for id_, make, expected in [
    ("store-meta-not-json", _store_edit(lambda s: (s / "meta.json").write_bytes(b"{not json")),
     r"dataset mnist in .*mnist is corrupt \(cannot read meta\.json"),
    ("store-meta-format-99", _meta(lambda m: m.update(format_version=99)), r"is corrupt \(format version 99, this edgefl reads 1\)"),
    ("store-meta-count-string", _meta(lambda m: m["counts"].update(train="many")), r"train count 'many' is not a positive integer"),
    ("store-npy-wrong-dtype", _store_edit(lambda s: np.save(s / "test_y.npy", np.load(s / "test_y.npy").astype(np.int64))),
     r"test_y\.npy holds int64 \[\d+\], meta\.json says uint8"),
    ("store-npy-wrong-shape", _store_edit(lambda s: np.save(s / "test_x.npy", np.zeros((5, 8, 8, 1), np.uint8))),
     r"test_x\.npy holds uint8 \[5, 8, 8, 1\], meta\.json says uint8"),
    ("store-npy-object-pickle", _store_edit(lambda s: np.save(s / "train_y.npy", np.array([None], dtype=object), allow_pickle=True)),
     r"cannot map train_y\.npy"),
    ("store-npy-truncated", _store_edit(lambda s: (s / "test_x.npy").write_bytes((s / "test_x.npy").read_bytes()[:100])),
     r"cannot map test_x\.npy"),
]:
    case(id_, "server --task mnist", DATA, expected)(make)


# --- checkpoints and metrics in the server's state_dir --------------------------------------------
def _checkpoint(d: Path, round_: int, task: str = "digits") -> None:
    from edgefld.persist import save_checkpoint

    identity = {"task": task, "num-partitions": 50, "partition-seed": 42}
    save_checkpoint(d / "server" / "checkpoints", round_, [np.zeros((2, 2), np.float32)],
                    {"identity": identity, "record": None})


@case("checkpoint-of-another-run", SERVER, FAILURE, r"holds the state of another run .*'task': 'mnist'.*set another \[server\] state_dir")
def _other_run(d: Path) -> None:
    _checkpoint(d, 2, task="mnist")


@case("checkpoint-torn-and-metrics-garbage", SERVER, ExitCode.OK, r"unusable.*using the one before", one_line=False)
def _torn(d: Path) -> None:
    # Round 1 is complete (rounds = 1 in BASE_CONFIG); a torn round-2 file and garbage metrics lines are
    # named in the log (the garbage lines moved to metrics.jsonl.rejected); the server then says the run is complete.
    _checkpoint(d, 1)
    (d / "server" / "checkpoints" / "round-000002.npz").write_bytes(b"PK\x03\x04 torn")
    (d / "server" / "metrics.jsonl").write_bytes(b'{"round": 1}\n\x00\xff garbage\n[1, 2]\n{"round": ')


@case("checkpoint-not-a-zip", SERVER, FAILURE, r"holds the state of another run|unusable", one_line=False)
def _not_zip(d: Path) -> None:
    _checkpoint(d, 1, task="mnist")  # the usable one names another run: the daemon stops, touching nothing
    (d / "server" / "checkpoints" / "round-000003.npz").write_bytes(os.urandom(512))


# --- PKI files ------------------------------------------------------------------------------------
def _ca(d: Path, *, expired: bool = False, name: str = "pki") -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.datetime.now(datetime.UTC)
    start, end = (now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)) if expired else (
        now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=30))
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA384()))
    directory = d / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.key").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    (directory / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _server_cert(d: Path, *, expired: bool = False) -> None:
    """server.crt/key for 127.0.0.1 in {d}/pki, issued by a CA in {d}/pki (expired: valid until yesterday)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    _ca(d)
    ca_key = serialization.load_pem_private_key((d / "pki" / "ca.key").read_bytes(), None)
    ca_cert = x509.load_pem_x509_certificate((d / "pki" / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP384R1())
    now = datetime.datetime.now(datetime.UTC)
    end = now - datetime.timedelta(days=1) if expired else now + datetime.timedelta(days=30)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=10)).not_valid_after(end)
            .sign(ca_key, hashes.SHA384()))
    (d / "pki" / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                             serialization.PrivateFormat.PKCS8,
                                                             serialization.NoEncryption()))
    (d / "pki" / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


SERVER_TLS = "server --task digits --tls true --node-auth false"


@case("pki-server-cert-expired", SERVER_TLS, CONFIG, r"\[server\] tls_cert: .*server\.crt expired on \d{4}-\d\d-\d\d")
def _expired_server_cert(d: Path) -> None:
    _server_cert(d, expired=True)


@case("pki-server-cert-not-a-cert", SERVER_TLS, CONFIG, r"\[server\] tls_cert: .*server\.crt is not a PEM certificate")
def _server_cert_garbage(d: Path) -> None:
    _server_cert(d)
    (d / "pki" / "server.crt").write_bytes(b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n")


@case("pki-server-key-of-another-cert", SERVER_TLS, CONFIG, r"\[server\] tls_key: .*server\.key does not belong to .*server\.crt")
def _server_key_mismatch(d: Path) -> None:
    _server_cert(d)
    other = d / "other"
    other.mkdir()
    _server_cert(other)
    (d / "pki" / "server.key").write_bytes((other / "pki" / "server.key").read_bytes())


@case("pki-server-key-not-a-key", SERVER_TLS, CONFIG, r"\[server\] tls_key: .*server\.key is not a PEM private key")
def _server_key_garbage(d: Path) -> None:
    _server_cert(d)
    (d / "pki" / "server.key").write_bytes(b"hello\n")


@case("pki-server-cert-with-expired-ca", "pki server-cert --dir {d}/pki --host 10.0.0.1", FAILURE,
      r"the CA certificate .*ca\.crt expired on \d{4}-\d\d-\d\d")
def _expired_ca(d: Path) -> None:
    _ca(d, expired=True)


@case("pki-server-cert-ca-key-not-a-key", "pki server-cert --dir {d}/pki --host 10.0.0.1", FAILURE,
      r"the CA's key or certificate cannot be read")
def _ca_key_garbage(d: Path) -> None:
    _ca(d)
    (d / "pki" / "ca.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")


@case("pki-server-cert-ca-of-another-key", "pki server-cert --dir {d}/pki --host 10.0.0.1", FAILURE,
      r"the CA's key does not belong to its certificate")
def _ca_key_mismatch(d: Path) -> None:
    _ca(d)
    _ca(d, name="other")
    (d / "pki" / "ca.key").write_bytes((d / "other" / "ca.key").read_bytes())


@case("pki-server-cert-bad-host", "pki server-cert --dir {d}/pki --host bad_host!", USAGE,
      r'argument --host: "bad_host!" is not an IP address or host name')
def _ca_for_host(d: Path) -> None:
    _ca(d)


case("pki-server-cert-empty-host", ("pki", "server-cert", "--dir", "{d}/pki", "--host", ""), USAGE,
     r'argument --host: "" is not an IP address or host name')(_ca_for_host)


@case("pki-client-ca-not-a-cert", "client --ca {d}/ca.crt --server 10.0.0.5:9092", CONFIG,
      r"\[client\] ca: .*ca\.crt is not a PEM certificate")
def _client_ca_garbage(d: Path) -> None:
    (d / "ca.crt").write_bytes(b"just text\n")


@case("pki-client-ca-expired", "client --ca {d}/pki/ca.crt --server 10.0.0.5:9092", CONFIG,
      r"\[client\] ca: .*ca\.crt expired on \d{4}-\d\d-\d\d")
def _client_ca_expired(d: Path) -> None:
    _ca(d, expired=True)


@case("pki-client-key-not-a-key", "client --key {d}/client-0.key", CONFIG,
      r"\[client\] key: .*client-0\.key is not an OpenSSH EC private key")
def _client_key_garbage(d: Path) -> None:
    (d / "client-0.key").write_bytes(b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n-----END OPENSSH PRIVATE KEY-----\n")


@case("pki-client-key-is-a-directory", "client --key {d}/keydir", CONFIG, r"\[client\] key: cannot read .*keydir")
def _client_key_dir(d: Path) -> None:
    (d / "keydir").mkdir()


@case("pki-enrol-private-key", "enrol {d}/client-0.key", FAILURE, r"client-0\.key is not an OpenSSH public key")
def _enrol_private(d: Path) -> None:
    from edgefld.pki import create_node_key

    private, _ = create_node_key("x")
    (d / "client-0.key").write_bytes(private)


@case("pki-enrol-rsa-key", "enrol {d}/rsa.pub", FAILURE, r"rsa\.pub is not an ECDSA P-256/384/521 key")
def _enrol_rsa(d: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    (d / "rsa.pub").write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                              serialization.PublicFormat.OpenSSH) + b" rsa\n")


case("pki-enrol-binary", "enrol {d}/bin.pub", FAILURE, r"bin\.pub is not an OpenSSH public key")(
    write("bin.pub", bytes(range(256))))
case("pki-enrol-empty", "enrol {d}/empty.pub", FAILURE, r"empty\.pub is not an OpenSSH public key")(write("empty.pub", b""))
