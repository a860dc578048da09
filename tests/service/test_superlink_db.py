"""The SuperLink's database, prepared before Flower opens it: migrated in one step, rebuilt when unusable.

The half-migrated databases here are what a SuperLink killed during its start-up
migrations leaves (the same errors as in the field: "table ... already exists").
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

from edgefld.server import superlink_db
from edgefld.server.superlink_db import inspect_database, prepare_database


def _config(path: Path):
    from flwr.supercore.state.alembic.utils import build_alembic_config

    return build_alembic_config(create_engine(f"sqlite:///{path}"))


def _revision_creating(table: str) -> tuple[str, str]:
    """(the revision whose migration creates ``table``, the one before it) in pinned Flower's history."""
    scripts = ScriptDirectory.from_config(_config(Path("/nonexistent")))
    for revision in scripts.walk_revisions():
        source = Path(revision.path).read_text()
        if f'"{table}"' in source and "create_table" in source:
            return revision.revision, revision.down_revision
    raise AssertionError(f"no revision creates {table}")


def _at_revision(path: Path, revision: str) -> None:
    command.upgrade(_config(path), revision)


def _revisions(path: Path) -> set[str]:
    with sqlite3.connect(path) as connection:
        return {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}


def _flower_starts_on(path: Path) -> None:
    """Flower's own start-up migration (what flower-superlink runs first) succeeds and has nothing to do."""
    before = path.read_bytes()
    from flwr.supercore.state.alembic.utils import run_migrations

    run_migrations(create_engine(f"sqlite:///{path}"))
    assert _revisions(path) == superlink_db._flower_heads()
    assert path.read_bytes() == before


def test_flower_internals_it_depends_on():
    """Pinned flwr: its Alembic heads and tables are where this module reads them."""
    heads = superlink_db._flower_heads()
    assert len(heads) == 1
    tables = superlink_db._flower_tables()
    assert {"run", "node", "message", "nonce_store", "alembic_version"} - tables == {"alembic_version"}


def test_first_start_creates_a_database_flower_does_not_migrate(tmp_path):
    db = tmp_path / "superlink.db"
    assert prepare_database(db) is None
    assert _revisions(db) == superlink_db._flower_heads()
    assert not list(tmp_path.glob("superlink.db?*")), list(tmp_path.iterdir())  # no .new, no WAL left
    assert prepare_database(db) is None  # the next start: nothing to do
    _flower_starts_on(db)


def test_half_migrated_database_is_set_aside_and_rebuilt(tmp_path):
    db = tmp_path / "superlink.db"
    creating, before = _revision_creating("nonce_store")
    _at_revision(db, before)
    with sqlite3.connect(db) as connection:  # the killed migration's first statement, committed alone
        connection.execute("CREATE TABLE nonce_store (nonce TEXT)")
    original = db.read_bytes()
    with pytest.raises(Exception, match="nonce_store already exists"):
        _at_revision(db, "heads")  # as Flower's SuperLink fails at every start since

    note = prepare_database(db)
    assert note is not None and "\n" not in note
    assert "half-migrated" in note and "table nonce_store already exists" in note
    kept = [p for p in tmp_path.iterdir() if ".unusable-" in p.name]
    assert len(kept) == 1 and kept[0].name in note
    assert kept[0].read_bytes() == original  # set aside as it was, not deleted
    assert _revisions(db) == superlink_db._flower_heads()
    _flower_starts_on(db)


def test_older_intact_database_is_migrated_keeping_its_rows(tmp_path):
    db = tmp_path / "superlink.db"
    _, before = _revision_creating("nonce_store")
    _at_revision(db, before)
    with sqlite3.connect(db) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(node)")]
        assert "node_id" in columns
    note = prepare_database(db)
    assert note is not None and "migrated from revision" in note and before in note
    assert not [p for p in tmp_path.iterdir() if ".unusable-" in p.name]
    _flower_starts_on(db)


@pytest.mark.parametrize("content", [b"not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_garbage_is_set_aside(tmp_path, content):
    db = tmp_path / "superlink.db"
    db.write_bytes(content)
    note = prepare_database(db)
    assert note is not None and "was unusable" in note
    kept = [p for p in tmp_path.iterdir() if ".unusable-" in p.name]
    assert [p.read_bytes() for p in kept] == [content]
    _flower_starts_on(db)


def test_killed_at_any_instant_of_its_own_work_leaves_a_database_that_starts(tmp_path):
    """SIGKILL the preparation of a fresh database at a sweep of delays: the next one always succeeds."""
    code = ("import sys; from pathlib import Path; from edgefld.server.superlink_db import prepare_database; "
            "print('go', flush=True); prepare_database(Path(sys.argv[1]))")
    for n, delay in enumerate([0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5]):
        db = tmp_path / str(n) / "superlink.db"
        db.parent.mkdir()
        child = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"go\n"
        time.sleep(delay)
        child.kill()
        child.wait()
        note = prepare_database(db)
        # Its work was on a copy: a kill never leaves a file that must be set aside.
        assert note is None, (delay, note)
        assert inspect_database(db).problem is None and _revisions(db) == superlink_db._flower_heads()
        assert not [p for p in db.parent.iterdir() if p.name != "superlink.db"], list(db.parent.iterdir())
