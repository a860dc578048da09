"""``build_package(spec)``: the one way every package (edgefl and each edgefl-backend-*) is built.

A spec says what is particular to a package (its wheels, files, Depends, scripts, triggers);
what all of them share (the venv's layout, launchers, the copyright and changelog, lintian
overrides, modes and mtimes, the Depends of the bundled libraries, nfpm) happens here once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from debbuild.base import PACKAGING, BuildError, Paths, log
from debbuild.elf import system_depends
from debbuild.licences import copyright_file, distributions
from debbuild.nfpm import NFPM_SCRIPT, run_nfpm
from debbuild.staging import (
    file_list,
    gzip_bytes,
    install_wheels,
    normalize_tree,
    prune_site_packages,
    tidy_site_packages,
    write,
    write_console_scripts,
)
from debbuild.target import VENV, Arch

# What shapes a package besides its spec: the builder itself and what it reads.
BUILDER_FILES = ("build_deb.py", "debbuild/*.py", "build-requirements.txt", "deb.toml")


@dataclass(frozen=True)
class Release:
    """What every package of one build shares."""

    arch: Arch
    upstream: str        # edgefl's version
    revision: str        # Debian revision ("": a native package)
    version: str         # the packages' version: upstream[-revision]
    epoch: int           # SOURCE_DATE_EPOCH: every mtime, and the copyright's year
    changelog: str       # packaging/changelog
    settings: dict       # deb.toml
    paths: Paths

    @property
    def changelog_name(self) -> str:
        # Debian policy 12.7: a native package's changelog is changelog.gz.
        return "changelog.Debian.gz" if self.revision else "changelog.gz"

    def deb(self, package: str) -> Path:
        return self.paths.dist / f"{package}_{self.version}_{self.arch.deb}.deb"


@dataclass(frozen=True)
class Built:
    """A package built (or kept from an earlier build with the same inputs)."""

    name: str
    deb: Path
    files: frozenset[str] = frozenset()            # its paths, without the leading / (empty when kept)
    console_scripts: frozenset[str] = frozenset()  # in the venv's bin/
    problems: tuple[str, ...] = ()                 # its ELF problems (the build reports them all at the end)


@dataclass(frozen=True)
class PackageSpec:
    """What is particular to one package; the rest is the same for every package (build_package)."""

    release: Release
    name: str
    description: str
    wheels: tuple[Path, ...]                  # installed into the venv's site-packages
    depends: tuple[str, ...]                  # then the bundled libraries' (libc6, libstdc++6 ...)
    maintainer_scripts: Mapping[str, Path]    # "postinst" -> packaging/scripts/...
    triggers: Mapping[str, list[str]]         # nfpm's deb.triggers
    files: Mapping[str, bytes | str] = field(default_factory=dict)  # path in the package -> content
    symlinks: Mapping[str, str] = field(default_factory=dict)       # path in the package -> its target
    contents: tuple[dict, ...] = ()           # nfpm entries besides the staged tree (conffiles, links)
    required_scripts: frozenset[str] = frozenset()  # console scripts the bundle must have
    prune: tuple[str, ...] = ()               # site-packages directories left out (backends.toml)
    base: Built | None = None                 # the package this one installs into: no file or script in common
    lock_entries: tuple[dict, ...] = ()       # its wheels' lock entries (name, version, sha256 ...)
    # Rebuilt only when its inputs change (a digest in build/deb/<arch>/<name>.inputs):
    # for the backends, whose inputs are the lock, the builder and packaging/ files.
    reuse_unchanged: bool = False


def build_package(spec: PackageSpec) -> Built:
    """The spec's .deb: its wheels unpacked into the venv, launchers, files, docs and lintian
    overrides staged, checked against its base (no file or console script in common), its
    Depends completed from its ELF files, then nfpm. Kept as it is when ``reuse_unchanged``
    and nothing that shapes it changed."""
    release = spec.release
    target = release.deb(spec.name)
    key_file = release.paths.work / f"{spec.name}.inputs"
    key = input_digest(spec) if spec.reuse_unchanged else ""
    if key and target.exists() and key_file.exists() and key_file.read_text() == key:
        log(f"{target.name}: inputs unchanged, kept")
        return Built(spec.name, target)
    key_file.unlink(missing_ok=True)

    stage = release.paths.work / "stage" / spec.name
    shutil.rmtree(stage, ignore_errors=True)
    site = install_wheels(stage, list(spec.wheels), release.arch)
    prune_site_packages(site, list(spec.prune))
    venv_bin = stage / VENV.lstrip("/") / "bin"
    scripts = tidy_site_packages(site, venv_bin)
    missing = spec.required_scripts - set(scripts)
    if missing:
        raise BuildError(f"console scripts missing from the bundle: {sorted(missing)}")
    if spec.base is not None and set(scripts) & spec.base.console_scripts:
        raise BuildError(f"{spec.name} would overwrite console scripts of {spec.base.name}: "
                         f"{sorted(set(scripts) & spec.base.console_scripts)}")
    write_console_scripts(venv_bin, scripts)
    for path, data in spec.files.items():
        write(stage / path.lstrip("/"), data)
    for path, link_target in spec.symlinks.items():
        (stage / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (stage / path.lstrip("/")).symlink_to(link_target)
    doc = stage / "usr/share/doc" / spec.name
    write(doc / "copyright", copyright_file(spec.name, distributions(site), year=time.gmtime(release.epoch).tm_year))
    write(doc / release.changelog_name, gzip_bytes(release.changelog.encode()))
    write(stage / "usr/share/lintian/overrides" / spec.name, (PACKAGING / "lintian" / spec.name).read_text())
    normalize_tree(stage, release.epoch)

    tree = file_list(stage)
    files = frozenset(str(p.relative_to(stage)) for p in tree)
    if spec.base is not None and files & spec.base.files:
        raise BuildError(f"{spec.name} and {spec.base.name} both ship: {sorted(files & spec.base.files)[:10]}")
    libraries, problems = system_depends(site, release.arch, [p for p in tree if not p.is_symlink()])
    run_nfpm(nfpm_config(spec, stage, list(spec.depends) + libraries), target, release.paths.work, release.epoch)
    if key:
        key_file.write_text(key)
    return Built(spec.name, target, files, frozenset(scripts), tuple(problems))


def nfpm_config(spec: PackageSpec, stage: Path, depends: list[str]) -> dict:
    """nfpm's configuration: every top directory of the stage as a tree, then ``spec.contents``."""
    release, settings = spec.release, spec.release.settings
    config = {
        "name": spec.name, "arch": release.arch.deb, "platform": "linux", "version": release.upstream,
        "version_schema": "none", "section": settings["package"]["section"], "priority": "optional",
        "maintainer": settings["package"]["maintainer"], "description": spec.description,
        "license": "Apache-2.0", "depends": depends,
        "contents": [{"src": str(stage / top.name), "dst": "/" + top.name, "type": "tree"}
                     for top in sorted(stage.iterdir())] + list(spec.contents),
        "mtime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(release.epoch)),
        "scripts": {NFPM_SCRIPT[k]: str(v) for k, v in spec.maintainer_scripts.items()},
        "deb": {"compression": settings["compression"][spec.name], "triggers": dict(spec.triggers)},
    }
    if release.revision:
        config["release"] = release.revision
    if settings["package"].get("homepage"):
        config["homepage"] = settings["package"]["homepage"]
    return config


def input_digest(spec: PackageSpec) -> str:
    """Everything that shapes the package: its spec (its wheels by their lock entries), what
    every package shares, the builder's code, its maintainer scripts and lintian overrides."""
    release = spec.release
    digest = hashlib.sha256()
    described = {
        "name": spec.name, "arch": release.arch.deb, "version": release.version, "epoch": release.epoch,
        "changelog": release.changelog, "settings": release.settings, "description": spec.description,
        "wheels": [p.name for p in spec.wheels], "lock_entries": list(spec.lock_entries),
        "depends": list(spec.depends), "triggers": dict(spec.triggers), "contents": list(spec.contents),
        "files": {path: hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()
                  for path, data in spec.files.items()},
        "symlinks": dict(spec.symlinks), "required_scripts": sorted(spec.required_scripts),
        "prune": list(spec.prune), "base_files": sorted(spec.base.files) if spec.base else [],
    }
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    paths = [p for pattern in BUILDER_FILES for p in sorted(PACKAGING.glob(pattern))]
    paths += [PACKAGING / "lintian" / spec.name, *spec.maintainer_scripts.values()]
    for path in paths:
        digest.update(str(path.relative_to(PACKAGING)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()
