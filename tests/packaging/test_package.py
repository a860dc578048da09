"""build_package's pure parts: when a package is kept, and what nfpm is told (no package is built)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from debbuild import product, target
from debbuild.base import PACKAGING, Paths
from debbuild.package import Built, PackageSpec, Release, input_digest, nfpm_config

AMD64 = target.ARCHES["amd64"]


def _release(tmp_path: Path, revision: str = "") -> Release:
    return Release(arch=AMD64, upstream="0.1.0", revision=revision,
                   version=product.debian_version("0.1.0", revision), epoch=1_800_000_000,
                   changelog="edgefl (0.1.0) unstable; urgency=medium\n", settings=product.load_settings(),
                   paths=Paths(AMD64, tmp_path / "dist"))


def _backend(release: Release, **changes) -> PackageSpec:
    spec = PackageSpec(
        release=release, name="edgefl-backend-litert", description="LiteRT\nfor small boards",
        wheels=(Path("ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_x86_64.whl"),),
        lock_entries=({"name": "ai-edge-litert", "version": "2.3.0", "sha256": "a" * 64},),
        depends=("edgefl (= 0.1.0)", *target.python_depends()),
        maintainer_scripts={"prerm": PACKAGING / "scripts" / "edgefl-backend.prerm"},
        triggers={"activate_noawait": [product.VENV_TRIGGER]}, prune=("ai_edge_litert/vendors",),
        base=Built("edgefl", release.deb("edgefl"), frozenset({"usr/bin/edgefl"}), frozenset({"edgefl"})),
        reuse_unchanged=True)
    return dataclasses.replace(spec, **changes)


def test_a_backend_is_kept_only_while_every_input_is_the_same(tmp_path):
    release = _release(tmp_path)
    spec = _backend(release)
    assert input_digest(spec) == input_digest(_backend(release))
    base = spec.base
    changed = [
        _backend(release, lock_entries=({"name": "ai-edge-litert", "version": "2.3.0", "sha256": "b" * 64},)),
        _backend(release, prune=()),
        _backend(release, description="LiteRT\nfor tiny boards"),
        _backend(release, base=dataclasses.replace(base, files=base.files | {"usr/share/doc/edgefl/NEWS"})),
        _backend(_release(tmp_path, revision="1")),
        _backend(dataclasses.replace(release, epoch=release.epoch + 1)),
    ]
    digests = {input_digest(other) for other in changed}
    assert input_digest(spec) not in digests and len(digests) == len(changed)


def test_nfpm_config_of_a_spec(tmp_path):
    release = _release(tmp_path, revision="1")
    stage = tmp_path / "stage"
    for top in ("usr", "opt"):
        (stage / top).mkdir(parents=True)
    extra = {"src": "/opt/edgefl/venv/bin/edgefl", "dst": "/usr/bin/edgefl", "type": "symlink"}
    spec = _backend(release, contents=(extra,))
    config = nfpm_config(spec, stage, ["python3 (>= 3.11)", "libc6 (>= 2.27)"])
    assert [c["dst"] for c in config["contents"]] == ["/opt", "/usr", "/usr/bin/edgefl"]
    assert (config["name"], config["arch"], config["version"], config["release"]) == (
        "edgefl-backend-litert", "amd64", "0.1.0", "1")
    assert config["depends"] == ["python3 (>= 3.11)", "libc6 (>= 2.27)"]
    assert config["scripts"] == {"preremove": str(PACKAGING / "scripts" / "edgefl-backend.prerm")}
    assert config["deb"] == {"compression": release.settings["compression"]["edgefl-backend-litert"],
                             "triggers": {"activate_noawait": ["edgefl-venv-changed"]}}
    assert config["mtime"] == "2027-01-15T08:00:00Z"
    assert release.changelog_name == "changelog.Debian.gz" and _release(tmp_path).changelog_name == "changelog.gz"
    assert release.deb("edgefl") == tmp_path / "dist" / "edgefl_0.1.0-1_amd64.deb"
