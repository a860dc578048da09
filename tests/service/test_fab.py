"""edgefld.server.fab: the thin FAB — reproducible, accepted by Flower, and free of code."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import tomllib
import zipfile

import pytest
from flwr.cli.install import install_from_fab
from flwr.common.config import get_fab_config, get_metadata_from_config

from edgefld import __version__
from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.server import fab as fab_module
from edgefld.server.fab import CLIENT_APP, SERVER_APP, build_fab, pyproject_text


@pytest.fixture(scope="module")
def fab() -> bytes:
    return build_fab()


def _members(fab: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_build_fab_is_byte_reproducible(fab):
    assert build_fab() == fab
    assert hashlib.sha256(build_fab()).hexdigest() == hashlib.sha256(fab).hexdigest()


def test_fab_holds_exactly_the_pyproject_and_content_manifest(fab):
    # Security: a FAB's files go first on sys.path on every board; any .py here would shadow edgefld.
    with zipfile.ZipFile(io.BytesIO(fab)) as archive:
        infos = archive.infolist()
    assert [info.filename for info in infos] == ["pyproject.toml", ".info/CONTENT"]
    for info in infos:
        assert info.date_time == (1980, 1, 1, 0, 0, 0)
        assert not info.is_dir()
    members = _members(fab)
    assert not any(name.endswith((".py", ".pyc", ".so", ".pth")) for name in members)
    assert b"import " not in members["pyproject.toml"]


def test_content_manifest_matches_pyproject(fab):
    members = _members(fab)
    pyproject = members["pyproject.toml"]
    assert pyproject == pyproject_text().encode()
    assert members[".info/CONTENT"].decode() == (
        f"pyproject.toml,{hashlib.sha256(pyproject).hexdigest()},{len(pyproject) * 8}"
    )


def test_flwr_parses_the_fab(fab):
    config = get_fab_config(fab)
    assert get_metadata_from_config(config) == ("edgefl/edgefl", __version__)
    assert config["tool"]["flwr"]["app"]["components"] == {"serverapp": SERVER_APP, "clientapp": CLIENT_APP}


def test_flwr_installs_the_fab_and_verifies_its_hashes(fab, tmp_path, capsys):
    installed = install_from_fab(fab, install_dir=tmp_path, skip_prompt=True)
    fab_hash = hashlib.sha256(fab).hexdigest()
    assert installed.parent == tmp_path / "apps"
    assert installed.name.startswith(f"edgefl.edgefl.{__version__}.{fab_hash[:8]}")
    assert sorted(p.name for p in installed.iterdir()) == ["pyproject.toml"]
    assert (installed / "pyproject.toml").read_bytes() == _members(fab)["pyproject.toml"]
    capsys.readouterr()


def test_flwr_rejects_a_tampered_fab(fab, tmp_path):
    # The manifest is what lets Flower reject a modified pyproject: check it really binds.
    import click

    members = _members(fab)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("pyproject.toml", members["pyproject.toml"].replace(b'"digits"', b'"mnist"'))
        archive.writestr(".info/CONTENT", members[".info/CONTENT"])
    with pytest.raises(click.ClickException, match="File hashes couldn't be verified"):
        install_from_fab(buffer.getvalue(), install_dir=tmp_path, skip_prompt=True)


@pytest.mark.parametrize("component", [SERVER_APP, CLIENT_APP])
def test_components_point_to_importable_modules(component):
    module, _, attribute = component.partition(":")
    assert attribute == "app"
    assert module in ("edgefld.apps.server_app", "edgefld.apps.client_app")
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None and spec.origin.endswith(".py")


def test_app_config_equals_run_config_defaults(fab):
    parsed = tomllib.loads(_members(fab)["pyproject.toml"].decode())
    app_config = parsed["tool"]["flwr"]["app"]["config"]
    assert app_config == RUN_CONFIG_DEFAULTS
    for key, value in RUN_CONFIG_DEFAULTS.items():
        assert type(app_config[key]) is type(value), key
    assert parsed["project"] == {
        "name": "edgefl",
        "version": __version__,
        "description": "edgefl federated training (thin FAB: the code is the installed edgefld package)",
        "license": "Apache-2.0",
    }
    assert parsed["tool"]["flwr"]["app"]["publisher"] == "edgefl"


def test_awkward_string_defaults_survive_the_toml(monkeypatch):
    # A value with quotes, backslashes or a newline must still give valid TOML with the same value.
    awkward = dict(RUN_CONFIG_DEFAULTS, **{"state-dir": 'C:\\x "y"', "data-dir": "a\tb", "eval-backend": ""})
    monkeypatch.setattr(fab_module, "RUN_CONFIG_DEFAULTS", awkward)
    assert tomllib.loads(pyproject_text())["tool"]["flwr"]["app"]["config"] == awkward
    assert get_fab_config(build_fab())["tool"]["flwr"]["app"]["config"] == awkward


def test_flwr_run_config_override_keys_are_all_declared(fab):
    # Flower accepts only overrides of declared keys: every key the daemon may submit must be there.
    from flwr.common.config import fuse_dicts

    declared = get_fab_config(fab)["tool"]["flwr"]["app"]["config"]
    override = {key: RUN_CONFIG_DEFAULTS[key] for key in ("num-rounds", "state-dir", "task")}
    assert fuse_dicts(declared, override) == {**declared, **override}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_boards_accept_the_thin_fab(fab):
    assert fab_module.foreign_fab_problem(fab) is None


@pytest.mark.parametrize("members, problem", [
    ({"edgefld/__init__.py": b"import os"}, "it carries files besides its pyproject.toml: edgefld/__init__.py"),
    ({"evil.py": b"", "data/": b""}, "it carries files besides its pyproject.toml: evil.py, data/"),
])
def test_boards_refuse_a_fab_with_more_files(fab, members, problem):
    assert fab_module.foreign_fab_problem(_zip({**_members(fab), **members})) == problem


def test_boards_refuse_other_components_and_unreadable_fabs(fab):
    members = _members(fab)
    members["pyproject.toml"] = members["pyproject.toml"].replace(CLIENT_APP.encode(), b"os:system")
    assert "are not edgefld's apps" in fab_module.foreign_fab_problem(_zip(members))
    members["pyproject.toml"] = b"[tool.flwr.app.components\n"
    assert fab_module.foreign_fab_problem(_zip(members)).startswith("it cannot be read")
    assert fab_module.foreign_fab_problem(b"not a zip").startswith("it cannot be read")
