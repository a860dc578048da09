"""Crash-safe files: atomic writes, round checkpoints, the metrics log.

A pulled power plug must leave either the old file or the new one, never a
torn one: write to a temporary file in the same directory, fsync it, rename it
over the target, fsync the directory. Checkpoints are kept per round (the last
few), so a corrupt newest one falls back to the one before.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgefld.errors import StateWriteError

if TYPE_CHECKING:  # numpy is imported where arrays are handled: the client daemon writes only files
    import numpy as np

CHECKPOINT_FORMAT = 1
KEEP_CHECKPOINTS = 3
_CHECKPOINT_RE = re.compile(r"^round-(\d{6})\.npz$")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, mode: int = 0o644, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one step, through a temporary file of a unique name (writers may overlap).

    ``durable``: fsync the file and its directory, so that the new version survives a power cut. A
    report that is rewritten often and may be lost (a board's status file) skips the cost on slow storage.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise StateWriteError(f"cannot write {target}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        if durable:
            fsync_dir(target.parent)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise StateWriteError(f"cannot write {target}: {exc.strerror or exc}; the previous version is intact") from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def weights_digest(weights: list[np.ndarray]) -> str:
    import numpy as np

    digest = hashlib.sha256()
    for array in weights:
        digest.update(str(array.dtype).encode() + str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    round: int  # the last completed round; 0 = the initial model
    weights: list[np.ndarray]
    meta: dict[str, Any]  # task, run identity, the round's metrics record, ...
    path: Path
    # The server optimiser's state after this round by name (FedAdam's moments, FedAvgM's momentum):
    # in the same file as the model, so a restart never pairs a model with another round's state.
    state: dict[str, np.ndarray] = field(default_factory=dict)


def save_checkpoint(directory: str | os.PathLike[str], round_: int, weights: list[np.ndarray],
                    meta: dict[str, Any], state: dict[str, np.ndarray] | None = None) -> Path:
    import numpy as np

    directory = Path(directory)
    state = state or {}
    names = sorted(state)
    state_arrays = [np.asarray(state[name]) for name in names]
    full_meta = dict(meta, format=CHECKPOINT_FORMAT, round=round_, sha256=weights_digest(weights),
                     count=len(weights))
    if names:
        full_meta.update(state_names=names, state_sha256=weights_digest(state_arrays))
    buffer = io.BytesIO()
    arrays = {f"w{i:04d}": np.asarray(w) for i, w in enumerate(weights)}
    arrays.update({f"s{i:04d}": array for i, array in enumerate(state_arrays)})
    np.savez(buffer, allow_pickle=False, meta=np.frombuffer(json.dumps(full_meta).encode(), dtype=np.uint8), **arrays)
    path = directory / f"round-{round_:06d}.npz"
    atomic_write_bytes(path, buffer.getvalue())
    # Checkpoints of later rounds than this one belong to a timeline that was abandoned (the run
    # resumed from an earlier, good checkpoint because they were unusable): they go, then the oldest
    # beyond the few kept.
    existing = checkpoint_files(directory)
    stale = [p for r, p in existing if r > round_] + [p for _, p in
                                                     [e for e in existing if e[0] <= round_][:-KEEP_CHECKPOINTS]]
    for old in stale:
        try:
            old.unlink()
        except OSError:
            pass
    return path


def checkpoint_files(directory: Path) -> list[tuple[int, Path]]:
    """(round, path) of every file named as a checkpoint in ``directory``, oldest first; none read."""
    if not directory.is_dir():
        return []
    found = []
    for entry in directory.iterdir():
        match = _CHECKPOINT_RE.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry))
    return sorted(found)


def read_checkpoint(path: Path) -> Checkpoint:
    """Read and verify one checkpoint; ValueError says what is wrong with it."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(bytes(archive["meta"]).decode())
            weights = [archive[f"w{i:04d}"] for i in range(int(meta["count"]))]
            names = meta.get("state_names", [])
            state_arrays = [archive[f"s{i:04d}"] for i in range(len(names))]
    except Exception as exc:  # noqa: BLE001 - zipfile and numpy raise a zoo of types on a torn file
        raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"format {meta.get('format') if isinstance(meta, dict) else meta!r}, "
                         f"expected {CHECKPOINT_FORMAT}")
    if not isinstance(meta.get("round"), int) or meta["round"] < 0:
        raise ValueError(f"no valid round number in its metadata ({meta.get('round')!r})")
    if weights_digest(weights) != meta.get("sha256"):
        raise ValueError("checksum mismatch: the weights are corrupt")
    if names and weights_digest(state_arrays) != meta.get("state_sha256"):
        raise ValueError("checksum mismatch: the server optimiser's state is corrupt")
    return Checkpoint(meta["round"], weights, meta, path, dict(zip(names, state_arrays, strict=True)))


def load_latest_checkpoint(directory: str | os.PathLike[str]) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint that verifies, and a note for each newer one that did not."""
    problems: list[str] = []
    for _, path in reversed(checkpoint_files(Path(directory))):
        try:
            return read_checkpoint(path), problems
        except ValueError as exc:
            problems.append(f"checkpoint {path} is unusable: {exc}")
    return None, problems


def append_jsonl(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Append one line and fsync it: a line is either wholly there or absent after a crash."""
    line = json.dumps(record, sort_keys=True) + "\n"
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            # A crash mid-append leaves a torn last line without its newline: start a fresh line,
            # or this record would be glued to the torn bytes and be unreadable too.
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = "\n" + line
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StateWriteError(f"cannot append to {path}: {exc.strerror or exc}") from None


def read_jsonl(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """All intact records, and a note for each line that is not (a torn last line after a crash)."""
    records: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return records, problems
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            records.append(record)
        except (ValueError, RecursionError):
            problems.append(f"{path}:{number}: not a JSON record, ignored")
    return records, problems


def reconcile_metrics(path: str | os.PathLike[str], last_round: int,
                      restored: dict[str, Any] | None = None) -> str | None:
    """Make the metrics log agree with the checkpoint a run resumes from; one line saying what changed.

    Unreadable lines (a torn write) and records of rounds after ``last_round`` (a timeline
    abandoned because its checkpoints were unusable: those rounds run again) would read as
    garbage or as rounds done twice. They move to ``<name>.rejected`` (nothing is thrown
    away) and the log is rewritten atomically. ``restored``, the checkpoint's own record of
    ``last_round``, is put back if its line is missing (a crash between the two writes).
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raw = b""
    except OSError as exc:
        raise StateWriteError(f"cannot read {path}: {exc.strerror or exc}") from None
    kept: list[bytes] = []
    rejected: list[bytes] = []
    torn: list[int] = []
    later: list[int] = []
    rounds: set[int] = set()
    # Bytes, not text: a line set aside must be kept exactly as it was, undecodable bytes included.
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
            if not isinstance(record, dict):
                raise ValueError("not an object")
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            rejected.append(line)
            torn.append(number)
            continue
        round_ = record.get("round")
        if isinstance(round_, int) and round_ > last_round:
            rejected.append(line)
            later.append(round_)
            continue
        if isinstance(round_, int):
            rounds.add(round_)
        kept.append(line)
    parts = []
    if torn:
        parts.append(f"line {torn[0]} not a JSON record (a torn write?)" if len(torn) == 1
                     else f"lines {', '.join(map(str, torn))} not JSON records (torn writes? bad storage?)")
    if later:
        parts.append(f"round {', '.join(map(str, later))} after the last usable checkpoint (round {last_round}), "
                     "to run again")
    if rejected:
        aside = path.with_name(path.name + ".rejected")
        try:
            with open(aside, "ab") as handle:
                handle.write(b"".join(line + b"\n" for line in rejected))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise StateWriteError(f"cannot write {aside}: {exc.strerror or exc}") from None
        parts[-1] += f"; set aside in {aside.name}"
    if restored is not None and last_round > 0 and last_round not in rounds:
        kept.append(json.dumps(restored, sort_keys=True).encode())
        parts.append(f"round {last_round} restored from its checkpoint")
    if not parts:
        return None
    atomic_write_bytes(path, b"".join(line + b"\n" for line in kept))
    return f"{path}: " + "; ".join(parts)


def iter_rounds(records: list[dict[str, Any]]) -> Iterator[int]:
    for record in records:
        if isinstance(record.get("round"), int):
            yield record["round"]
