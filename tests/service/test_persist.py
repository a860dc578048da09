"""edgefld.persist: atomic writes, round checkpoints with fallback, the JSONL metrics log."""

from __future__ import annotations

import io
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgefld import persist
from edgefld.errors import StateWriteError
from edgefld.exit_codes import ExitCode
from edgefld.persist import (
    CHECKPOINT_FORMAT,
    KEEP_CHECKPOINTS,
    append_jsonl,
    atomic_write_bytes,
    load_latest_checkpoint,
    read_checkpoint,
    read_jsonl,
    reconcile_metrics,
    save_checkpoint,
    weights_digest,
)


def _weights(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [
        rng.standard_normal((4, 3)).astype(np.float32),
        rng.standard_normal(5).astype(np.float64),
        rng.integers(-100, 100, (2, 2, 2), dtype=np.int64),
        np.array(7, dtype=np.int32),  # a 0-d array
        np.zeros((0, 3), dtype=np.float32),  # an empty one
        np.array([np.nan, np.inf, -0.0, 1e-45], dtype=np.float32),  # values that compare oddly
    ]


def _assert_bit_exact(got: list[np.ndarray], want: list[np.ndarray]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        assert a.dtype == b.dtype
        assert a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# --- atomic_write_bytes ----------------------------------------------------------------------


def test_atomic_write_content_mode_and_no_temp_files(tmp_path):
    target = tmp_path / "state.json"
    atomic_write_bytes(target, b"first")
    assert target.read_bytes() == b"first"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    atomic_write_bytes(target, b"\x00second\xff", mode=0o600)
    assert target.read_bytes() == b"\x00second\xff"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_atomic_write_mode_is_not_masked_by_umask(tmp_path):
    old = os.umask(0o077)
    try:
        atomic_write_bytes(tmp_path / "f", b"x", mode=0o640)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640


def test_atomic_write_creates_parent_directories(tmp_path):
    target = tmp_path / "a" / "b" / "c.bin"
    atomic_write_bytes(str(target), b"")
    assert target.read_bytes() == b""
    assert _leftovers(target.parent) == []


def test_atomic_write_replaces_a_symlink_not_its_target(tmp_path):
    real = tmp_path / "real"
    real.write_bytes(b"keep")
    link = tmp_path / "link"
    link.symlink_to(real)
    atomic_write_bytes(link, b"new")
    assert real.read_bytes() == b"keep"
    assert not link.is_symlink() and link.read_bytes() == b"new"


@pytest.mark.parametrize("depth", [1, 2])
def test_atomic_write_under_a_file_raises_state_write_error(tmp_path, depth):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"i am a file")
    target = blocker / "x.json" if depth == 1 else blocker / "sub" / "x.json"
    with pytest.raises(StateWriteError) as info:
        atomic_write_bytes(target, b"data")
    assert info.value.exit_code == ExitCode.CANT_CREATE
    # depth 1: mkdir(exist_ok=True) of the file itself says EEXIST; depth 2: ENOTDIR.
    reason = "File exists" if depth == 1 else "Not a directory"
    assert str(info.value) == f"cannot write {target}: {reason}"
    assert blocker.read_bytes() == b"i am a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_atomic_write_onto_a_directory_keeps_it_and_cleans_up(tmp_path):
    # os.replace of a file over a directory fails after the temporary file exists.
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"1")
    with pytest.raises(StateWriteError) as info:
        atomic_write_bytes(target, b"data")
    assert str(info.value).endswith("; the previous version is intact")
    assert (target / "inside").read_bytes() == b"1"
    assert _leftovers(tmp_path) == []


def _write_as_nobody(target: Path, data: bytes) -> str:
    """atomic_write_bytes in a forked child that dropped root; returns the error text or 'ok'."""
    from tests.unprivileged import run_as_nobody

    def write() -> str:
        try:
            atomic_write_bytes(target, data)
        except StateWriteError as exc:
            return f"StateWriteError:{exc}"
        return "ok"

    return run_as_nobody(write)


def test_atomic_write_into_read_only_directory_keeps_previous_file(tmp_path):
    directory = tmp_path / "ro"
    directory.mkdir()
    tmp_path.chmod(0o755)
    target = directory / "state.json"
    target.write_bytes(b"previous")
    target.chmod(0o666)  # even a writable file must not be written in place
    directory.chmod(0o555)
    try:
        result = _write_as_nobody(target, b"next")
    finally:
        directory.chmod(0o755)
    assert result == f"StateWriteError:cannot write {target}: Permission denied"
    assert target.read_bytes() == b"previous"
    assert sorted(p.name for p in directory.iterdir()) == ["state.json"]


# --- checkpoints ------------------------------------------------------------------------------


def test_checkpoint_round_trip_bit_exact(tmp_path):
    weights = _weights()
    meta = {"task": "digits", "run": {"id": 7, "nodes": [1, 2]}, "metrics": {"loss": 0.25}}
    path = save_checkpoint(tmp_path, 3, weights, meta)
    assert path == tmp_path / "round-000003.npz"
    assert _leftovers(tmp_path) == []
    checkpoint = read_checkpoint(path)
    assert checkpoint.round == 3
    assert checkpoint.path == path
    _assert_bit_exact(checkpoint.weights, weights)
    assert checkpoint.meta == {
        **meta,
        "format": CHECKPOINT_FORMAT,
        "round": 3,
        "sha256": weights_digest(weights),
        "count": len(weights),
    }
    latest, problems = load_latest_checkpoint(str(tmp_path))
    assert problems == []
    assert latest is not None and latest.round == 3
    _assert_bit_exact(latest.weights, weights)


def test_checkpoint_does_not_mutate_callers_meta(tmp_path):
    meta = {"task": "digits"}
    save_checkpoint(tmp_path, 0, _weights(), meta)
    assert meta == {"task": "digits"}


def test_checkpoint_round_zero_and_no_weights(tmp_path):
    save_checkpoint(tmp_path, 0, [], {})
    latest, problems = load_latest_checkpoint(tmp_path)
    assert problems == []
    assert latest is not None and latest.round == 0 and latest.weights == []


def test_weights_digest_depends_on_dtype_and_shape():
    a = np.arange(6, dtype=np.int32)
    assert weights_digest([a]) != weights_digest([a.reshape(2, 3)])
    assert weights_digest([a]) != weights_digest([a.view(np.float32)])
    assert weights_digest([a]) != weights_digest([a[:3], a[3:]])
    assert weights_digest([a.reshape(2, 3).T]) == weights_digest([np.ascontiguousarray(a.reshape(2, 3).T)])


def test_keeps_only_the_last_checkpoints(tmp_path):
    for round_ in range(1, 8):
        save_checkpoint(tmp_path, round_, _weights(round_), {"r": round_})
        kept = sorted(p.name for p in tmp_path.iterdir())
        first = max(1, round_ - KEEP_CHECKPOINTS + 1)
        assert kept == [f"round-{r:06d}.npz" for r in range(first, round_ + 1)]
    assert KEEP_CHECKPOINTS == 3
    latest, problems = load_latest_checkpoint(tmp_path)
    assert problems == [] and latest is not None and latest.round == 7
    _assert_bit_exact(latest.weights, _weights(7))


def test_pruning_ignores_unrelated_files(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "round-1.npz").write_bytes(b"not ours")
    (tmp_path / "round-000001.npz.bak").write_bytes(b"not ours")
    for round_ in range(1, 6):
        save_checkpoint(tmp_path, round_, _weights(), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "metrics.jsonl", "round-1.npz", "round-000001.npz.bak",
        "round-000003.npz", "round-000004.npz", "round-000005.npz"])
    latest, problems = load_latest_checkpoint(tmp_path)
    assert problems == [] and latest is not None and latest.round == 5


def test_load_latest_from_missing_or_empty_directory(tmp_path):
    assert load_latest_checkpoint(tmp_path / "nope") == (None, [])
    assert load_latest_checkpoint(tmp_path) == (None, [])


def _flip_byte_in_first_array(path: Path) -> None:
    """Flip one byte inside the stored data of w0000 (npz members are stored uncompressed)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("w0000.npy")
        assert info.compress_type == zipfile.ZIP_STORED
        member = archive.read("w0000.npy")
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    data_start = info.header_offset + 30 + name_len + extra_len
    assert bytes(raw[data_start:data_start + len(member)]) == member
    raw[data_start + len(member) - 1] ^= 0x01  # the last byte of the array's data
    path.write_bytes(bytes(raw))


def _rewrite_member(path: Path, name: str, content: bytes) -> None:
    with zipfile.ZipFile(path) as archive:
        members = {n: archive.read(n) for n in archive.namelist()}
    members[name] = content
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member_name, data in members.items():
            archive.writestr(member_name, data)
    path.write_bytes(buffer.getvalue())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _meta_npy(meta: dict) -> bytes:
    return _npy(np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))


def _corrupt(path: Path, kind: str) -> str:
    """Damage ``path``; returns a fragment the problem note must contain."""
    if kind == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return "unreadable ("
    if kind == "empty":
        path.write_bytes(b"")
        return "unreadable ("
    if kind == "garbage":
        path.write_bytes(os.urandom(4096))
        return "unreadable ("
    if kind == "flipped-byte":
        _flip_byte_in_first_array(path)
        return "unreadable (BadZipFile"  # the zip member's CRC catches it first
    if kind == "flipped-byte-crc-fixed":
        # The same damage with a valid CRC (a member rewritten by a buggy tool): the sha256 catches it.
        with zipfile.ZipFile(path) as archive:
            array = np.load(io.BytesIO(archive.read("w0000.npy")))
        array = array.copy()
        array.view(np.uint8).reshape(-1)[0] ^= 0x80
        _rewrite_member(path, "w0000.npy", _npy(array))
        return "checksum mismatch: the weights are corrupt"
    if kind == "wrong-format":
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(bytes(np.load(io.BytesIO(archive.read("meta.npy")))).decode())
        _rewrite_member(path, "meta.npy", _meta_npy(dict(meta, format=2)))
        return "format 2, expected 1"
    if kind == "no-format":
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(bytes(np.load(io.BytesIO(archive.read("meta.npy")))).decode())
        del meta["format"]
        _rewrite_member(path, "meta.npy", _meta_npy(meta))
        return "format None, expected 1"
    if kind == "missing-array":
        with zipfile.ZipFile(path) as archive:
            members = {n: archive.read(n) for n in archive.namelist() if n != "w0001.npy"}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            for member_name, data in members.items():
                archive.writestr(member_name, data)
        path.write_bytes(buffer.getvalue())
        return "unreadable (KeyError"
    if kind == "meta-not-json":
        _rewrite_member(path, "meta.npy", _npy(np.frombuffer(b"{not json", dtype=np.uint8)))
        return "unreadable (JSONDecodeError"
    if kind == "meta-a-list":
        _rewrite_member(path, "meta.npy", _npy(np.frombuffer(b"[1, 2]", dtype=np.uint8)))
        return "unreadable (TypeError"
    if kind == "pickled-array":
        _rewrite_member(path, "w0000.npy", _npy(np.array([{"a": 1}], dtype=object)))
        return "unreadable (ValueError"
    raise AssertionError(kind)


CORRUPTIONS = ["truncated", "empty", "garbage", "flipped-byte", "flipped-byte-crc-fixed", "wrong-format",
               "no-format", "missing-array", "meta-not-json", "meta-a-list", "pickled-array"]


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_newest_checkpoint_falls_back_to_previous(tmp_path, kind):
    save_checkpoint(tmp_path, 4, _weights(4), {"task": "digits", "n": 4})
    newest = save_checkpoint(tmp_path, 5, _weights(5), {"task": "digits", "n": 5})
    fragment = _corrupt(newest, kind)
    with pytest.raises(ValueError) as info:
        read_checkpoint(newest)
    assert fragment in str(info.value)
    latest, problems = load_latest_checkpoint(tmp_path)
    assert latest is not None
    assert latest.round == 4 and latest.meta["n"] == 4
    _assert_bit_exact(latest.weights, _weights(4))
    assert problems == [f"checkpoint {newest} is unusable: {info.value}"]


def test_all_checkpoints_corrupt_reports_each_newest_first(tmp_path):
    paths = [save_checkpoint(tmp_path, r, _weights(r), {}) for r in (1, 2, 3)]
    for path in paths:
        path.write_bytes(b"garbage")
    latest, problems = load_latest_checkpoint(tmp_path)
    assert latest is None
    assert len(problems) == 3
    assert [p.split(" is unusable")[0] for p in problems] == [f"checkpoint {p}" for p in reversed(paths)]


def test_two_corrupt_newest_fall_back_two_rounds(tmp_path):
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, r, _weights(r), {})
    (tmp_path / "round-000003.npz").write_bytes(b"x")
    _corrupt(tmp_path / "round-000002.npz", "truncated")
    latest, problems = load_latest_checkpoint(tmp_path)
    assert latest is not None and latest.round == 1
    assert len(problems) == 2
    assert problems[0].startswith(f"checkpoint {tmp_path / 'round-000003.npz'} is unusable: unreadable (")
    assert problems[1].startswith(f"checkpoint {tmp_path / 'round-000002.npz'} is unusable: unreadable (")


def test_failed_checkpoint_write_keeps_previous_and_raises(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, _weights(1), {})

    def refuse(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(persist.os, "replace", refuse)
    with pytest.raises(StateWriteError) as info:
        save_checkpoint(tmp_path, 2, _weights(2), {})
    assert str(info.value) == (f"cannot write {tmp_path / 'round-000002.npz'}: No space left on device; "
                               "the previous version is intact")
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000001.npz"]
    latest, problems = load_latest_checkpoint(tmp_path)
    assert problems == [] and latest is not None and latest.round == 1


# --- JSONL log --------------------------------------------------------------------------------


def test_jsonl_round_trip(tmp_path):
    log = tmp_path / "sub" / "metrics.jsonl"
    records = [{"round": 1, "loss": 0.5}, {"round": 2, "text": "é\n\"x\"", "nested": {"a": [1, 2]}}, {}]
    for record in records:
        append_jsonl(log, record)
    assert log.read_text().splitlines() == [json.dumps(r, sort_keys=True) for r in records]
    assert read_jsonl(log) == (records, [])
    assert stat.S_IMODE(log.stat().st_mode) & 0o666 == 0o644 & ~_umask() & 0o666
    assert list(persist.iter_rounds(records + [{"round": "3"}, {"round": 4}])) == [1, 2, 4]


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


def test_jsonl_missing_file_is_empty(tmp_path):
    assert read_jsonl(tmp_path / "missing.jsonl") == ([], [])


def test_jsonl_torn_last_line_is_ignored_and_reported(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"round": 1})
    append_jsonl(log, {"round": 2})
    with open(log, "ab") as handle:
        handle.write(b'{"round": 3, "lo')  # the power went out mid-write
    records, problems = read_jsonl(log)
    assert records == [{"round": 1}, {"round": 2}]
    assert problems == [f"{log}:3: not a JSON record, ignored"]
    # The next append after the crash starts a fresh line: the torn bytes spoil only their own.
    append_jsonl(log, {"round": 3})
    records, problems = read_jsonl(log)
    assert records == [{"round": 1}, {"round": 2}, {"round": 3}]
    assert problems == [f"{log}:3: not a JSON record, ignored"]


def test_jsonl_non_objects_and_bad_bytes_are_reported(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"round": 1}\n[1, 2]\n"text"\n42\nnull\n\n   \n\xff\xfe\n{"round": 2}\n')
    records, problems = read_jsonl(str(log))
    assert records == [{"round": 1}, {"round": 2}]
    assert problems == [f"{log}:{n}: not a JSON record, ignored" for n in (2, 3, 4, 5, 8)]


def test_jsonl_deeply_nested_garbage_is_reported_not_raised(tmp_path):
    # Garbage on disk must never crash the reader: it is reported like any other bad line.
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"round": 1}\n' + b"[" * 100_000 + b"\n")
    records, problems = read_jsonl(log)
    assert records == [{"round": 1}]
    assert problems == [f"{log}:2: not a JSON record, ignored"]


def test_append_jsonl_under_a_file_raises_state_write_error(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"")
    with pytest.raises(StateWriteError) as info:
        append_jsonl(blocker / "metrics.jsonl", {"round": 1})
    assert str(info.value).startswith(f"cannot append to {blocker / 'metrics.jsonl'}: ")
    assert info.value.exit_code == ExitCode.CANT_CREATE


def test_checkpoint_meta_without_round_is_reported_not_raised(tmp_path):
    save_checkpoint(tmp_path, 1, _weights(1), {})
    newest = save_checkpoint(tmp_path, 2, _weights(2), {})
    with zipfile.ZipFile(newest) as archive:
        meta = json.loads(bytes(np.load(io.BytesIO(archive.read("meta.npy")))).decode())
    del meta["round"]  # format and checksum still valid
    _rewrite_member(newest, "meta.npy", _meta_npy(meta))
    latest, problems = load_latest_checkpoint(tmp_path)
    assert latest is not None and latest.round == 1
    assert problems == [f"checkpoint {newest} is unusable: no valid round number in its metadata (None)"]


@pytest.mark.parametrize("bad_round", [-1, "2", 2.0, None, [2]])
def test_checkpoint_meta_with_a_bad_round_is_reported(tmp_path, bad_round):
    save_checkpoint(tmp_path, 1, _weights(1), {})
    newest = save_checkpoint(tmp_path, 2, _weights(2), {})
    with zipfile.ZipFile(newest) as archive:
        meta = json.loads(bytes(np.load(io.BytesIO(archive.read("meta.npy")))).decode())
    meta["round"] = bad_round
    _rewrite_member(newest, "meta.npy", _meta_npy(meta))
    latest, problems = load_latest_checkpoint(tmp_path)
    assert latest is not None and latest.round == 1
    assert len(problems) == 1
    assert problems[0].startswith(f"checkpoint {newest} is unusable: no valid round number in its metadata (")


def test_new_checkpoints_survive_when_the_newer_ones_are_all_corrupt(tmp_path):
    # Rounds 5..7 on disk, all corrupt: training starts over, and its checkpoints must be kept
    # (pruning by round number alone deletes each new file right after writing it).
    for r in (5, 6, 7):
        save_checkpoint(tmp_path, r, _weights(r), {}).write_bytes(b"garbage")
    assert load_latest_checkpoint(tmp_path)[0] is None
    path = save_checkpoint(tmp_path, 1, _weights(1), {})
    assert path.exists()
    # The abandoned timeline's files go, so they can never shadow the new one.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000001.npz"]
    latest, problems = load_latest_checkpoint(tmp_path)
    assert problems == [] and latest is not None and latest.round == 1
    _assert_bit_exact(latest.weights, _weights(1))


def test_resuming_from_an_earlier_checkpoint_replaces_the_corrupt_later_ones(tmp_path):
    for r in (3, 4, 5):
        save_checkpoint(tmp_path, r, _weights(r), {})
    (tmp_path / "round-000005.npz").write_bytes(b"torn")
    latest, problems = load_latest_checkpoint(tmp_path)
    assert latest is not None and latest.round == 4 and len(problems) == 1
    save_checkpoint(tmp_path, 5, _weights(50), {})  # the resumed run redoes round 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000003.npz", "round-000004.npz",
                                                          "round-000005.npz"]
    save_checkpoint(tmp_path, 6, _weights(60), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000004.npz", "round-000005.npz",
                                                          "round-000006.npz"]
    latest, problems = load_latest_checkpoint(tmp_path)
    assert problems == [] and latest is not None and latest.round == 6
    _assert_bit_exact(latest.weights, _weights(60))


def test_resaving_an_existing_round_keeps_the_earlier_ones(tmp_path):
    for r in (1, 2, 3):
        save_checkpoint(tmp_path, r, _weights(r), {})
    save_checkpoint(tmp_path, 3, _weights(33), {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["round-000001.npz", "round-000002.npz",
                                                          "round-000003.npz"]
    _assert_bit_exact(read_checkpoint(tmp_path / "round-000003.npz").weights, _weights(33))


# --- reconcile_metrics -----------------------------------------------------------------------


def test_reconcile_sets_torn_lines_and_later_rounds_aside_in_one_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    for round_ in (1, 2, 3):
        append_jsonl(log, {"round": round_})
    with open(log, "ab") as handle:
        handle.write(b'{"round": 4, "lo')  # the power went out mid-write
    note = reconcile_metrics(log, 2)  # round 3's checkpoint was unusable: the run resumes after 2
    assert note == (f"{log}: line 4 not a JSON record (a torn write?); round 3 after the last usable checkpoint "
                    "(round 2), to run again; set aside in metrics.jsonl.rejected")
    assert read_jsonl(log) == ([{"round": 1}, {"round": 2}], [])
    assert (tmp_path / "metrics.jsonl.rejected").read_text() == '{"round": 3}\n{"round": 4, "lo\n'
    assert _leftovers(tmp_path) == []
    assert reconcile_metrics(log, 2) is None  # nothing left to fix: the file is not rewritten
    append_jsonl(log, {"round": 3})
    assert read_jsonl(log) == ([{"round": 1}, {"round": 2}, {"round": 3}], [])


def test_reconcile_restores_the_round_whose_line_a_crash_lost(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"round": 1})
    note = reconcile_metrics(log, 2, {"round": 2, "eval_loss": 0.5})
    assert note == f"{log}: round 2 restored from its checkpoint"
    assert read_jsonl(log) == ([{"round": 1}, {"eval_loss": 0.5, "round": 2}], [])
    assert not (tmp_path / "metrics.jsonl.rejected").exists()


def test_reconcile_of_a_good_or_missing_log_changes_nothing(tmp_path):
    log = tmp_path / "metrics.jsonl"
    assert reconcile_metrics(log, 0) is None
    assert not log.exists()
    append_jsonl(log, {"round": 1})
    before = log.stat().st_mtime_ns, log.read_bytes()
    assert reconcile_metrics(log, 1, {"round": 1}) is None
    assert (log.stat().st_mtime_ns, log.read_bytes()) == before


def test_reconcile_that_cannot_set_lines_aside_raises_state_write_error_and_changes_nothing(tmp_path):
    log = tmp_path / "metrics.jsonl"
    append_jsonl(log, {"round": 1})
    append_jsonl(log, {"round": 2})
    (tmp_path / "metrics.jsonl.rejected").mkdir()  # in the way, as a full or read-only disk would be
    before = log.read_bytes()
    with pytest.raises(StateWriteError) as info:
        reconcile_metrics(log, 1)
    assert str(info.value).startswith(f"cannot write {tmp_path / 'metrics.jsonl.rejected'}: ")
    assert log.read_bytes() == before


def test_reconcile_names_every_bad_line_in_its_one_line(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"round": 1}\n\xff\xfe garbage\n[1, 2]\n{"round": 2}\n')
    note = reconcile_metrics(log, 2)
    assert note == (f"{log}: lines 2, 3 not JSON records (torn writes? bad storage?); "
                    "set aside in metrics.jsonl.rejected")
    assert read_jsonl(log) == ([{"round": 1}, {"round": 2}], [])
