"""The SuperLink's SQLite database: migrated before Flower opens it, all at once, and rebuilt when unusable.

Flower 1.42 migrates its database (Alembic, about 40 revisions) when the SuperLink
starts, and SQLite commits each DDL statement on its own: a SuperLink stopped in
that second leaves a database no later start can migrate ("table nonce_store
already exists", "duplicate column", "no such table: context"), and a server
that can never start again. So edgefl runs those migrations itself, before it
starts the SuperLink, on a copy that is renamed into place when complete: a kill
leaves either the old file or the new one, and the SuperLink finds its database
at the newest revision with nothing left to migrate.

A database that cannot be used anyway (half-migrated by an edgefl before this
one, damaged by a bad card) is set aside, never deleted, and a fresh one takes
its place. Nothing of edgefl's is lost with it: the database holds Flower's
runs, node registrations and messages in flight, and edgefl rebuilds what
matters from its own state at every start: the run resumes from the last
checkpoint, the enrolled keys are registered again.

The Alembic configuration and metadata are Flower internals (pinned flwr):
tests/service/test_superlink_db.py pins them.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from edgefld.persist import fsync_dir

SIDECARS = ("-wal", "-shm", "-journal")
WORK_SUFFIX = ".new"  # the copy being migrated; a leftover is the work of a killed start
ASIDE_INFIX = ".unusable-"


@dataclass(frozen=True)
class DatabaseState:
    """What a database file holds: ``problem`` is None when Flower can open it as it is."""

    revisions: frozenset[str]
    problem: str | None = None
    behind: bool = False  # intact, at an older revision: migrating a copy brings it up to date


def _flower_heads() -> frozenset[str]:
    from alembic.script import ScriptDirectory
    from flwr.supercore.state.alembic.utils import build_alembic_config
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        return frozenset(ScriptDirectory.from_config(build_alembic_config(engine)).get_heads())
    finally:
        engine.dispose()


def _flower_tables() -> frozenset[str]:
    from flwr.supercore.state.alembic.utils import get_combined_metadata

    return frozenset(get_combined_metadata().tables)


def _migrate(path: Path) -> None:
    """Bring the database at ``path`` to Flower's newest revision, as the SuperLink would at start."""
    from flwr.supercore.state.alembic.utils import run_migrations
    from sqlalchemy import create_engine

    quiet = logging.getLogger("alembic")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # one INFO line per revision otherwise
    engine = create_engine(f"sqlite:///{path}")
    try:
        run_migrations(engine)
    finally:
        engine.dispose()
        quiet.setLevel(level)


def inspect_database(path: Path) -> DatabaseState:
    """Read ``path`` without changing it (Flower's WAL is left to Flower)."""
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    except sqlite3.Error as exc:
        return DatabaseState(frozenset(), f"cannot be opened: {exc}")
    try:
        check = [row[0] for row in connection.execute("PRAGMA quick_check(3)")]
        if check != ["ok"]:
            return DatabaseState(frozenset(), "damaged: " + "; ".join(check))
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        tables = {name for name in tables if not name.startswith("sqlite_")}
        if "alembic_version" not in tables:
            if tables:
                return DatabaseState(frozenset(), "half-created: tables without a schema revision "
                                                  "(stopped during its first migrations?)")
            return DatabaseState(frozenset(), behind=True)  # a file SQLite created, no schema yet
        revisions = frozenset(row[0] for row in connection.execute("SELECT version_num FROM alembic_version"))
    except sqlite3.Error as exc:
        return DatabaseState(frozenset(), f"unreadable: {exc}")
    finally:
        connection.close()
    if revisions != _flower_heads():
        return DatabaseState(revisions, behind=True)
    missing = sorted(_flower_tables() - tables)
    if missing:
        return DatabaseState(revisions, f"at the newest revision but without table(s) {', '.join(missing)} "
                                        "(half-migrated?)")
    return DatabaseState(revisions)


def prepare_database(path: Path) -> str | None:
    """Leave at ``path`` a database the SuperLink opens without migrating; a line saying what was done, if anything.

    Each step leaves a startable state if the process is killed during it: the
    work happens on ``<name>.new`` and one rename publishes it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    work = path.with_name(path.name + WORK_SUFFIX)
    _remove(work)
    if not path.exists() or path.stat().st_size == 0:
        # First start, or a file created and killed before SQLite wrote its header: nothing in it.
        for sidecar in _sidecars(path):  # journals of a file that is gone: not ours to apply
            _set_aside(sidecar, time.strftime("%Y%m%dT%H%M%S"))
        _build(path, work, source=None)
        return None
    state = inspect_database(path)
    if state.problem is None and not state.behind:
        return None
    problem = state.problem
    if problem is None:
        try:
            _build(path, work, source=path)
            before = ", ".join(sorted(state.revisions)) or "empty"
            return f"{path}: Flower's schema migrated from revision {before} to the newest, in one step"
        except Exception as exc:  # Alembic and SQLAlchemy raise many types; all mean "unusable"
            _remove(work)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            problem = f"half-migrated: continuing its migration fails ({first[:200]})"
    stamp = time.strftime("%Y%m%dT%H%M%S")
    kept = _set_aside(path, stamp)
    for sidecar in _sidecars(path):
        _set_aside(sidecar, stamp)
    _build(path, work, source=None)
    return (f"{path} was unusable ({problem}): kept as {kept.name}, started with a fresh one; the run resumes "
            "from edgefl's checkpoint and enrolled keys are registered again")


def _build(path: Path, work: Path, source: Path | None) -> None:
    if source is not None:
        # Fold the WAL into the file (the SuperLink is not running), so the file alone is the whole database.
        connection = sqlite3.connect(source, timeout=5)
        try:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            connection.execute("PRAGMA journal_mode=DELETE")
        finally:
            connection.close()
        shutil.copyfile(source, work)
    _migrate(work)
    connection = sqlite3.connect(work, timeout=5)
    try:  # a file without a WAL beside it: renamed alone, it is complete
        connection.execute("PRAGMA journal_mode=DELETE")
    finally:
        connection.close()
    for sidecar in _sidecars(work):
        _remove(sidecar)
    with open(work, "rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(work, path)
    fsync_dir(path.parent)


def _sidecars(path: Path) -> list[Path]:
    return [candidate for suffix in SIDECARS if (candidate := path.with_name(path.name + suffix)).exists()]


def _set_aside(path: Path, stamp: str) -> Path:
    target = path.with_name(f"{path.name}{ASIDE_INFIX}{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}{ASIDE_INFIX}{stamp}.{n}")
    os.replace(path, target)
    return target


def _remove(path: Path) -> None:
    for candidate in (path, *_sidecars(path)):
        try:
            candidate.unlink()
        except FileNotFoundError:
            pass
