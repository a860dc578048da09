"""Unit tests of build_deb's pure parts and of the committed locks (no package is built)."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess

import pytest
from debbuild import base, licences, lock, product, staging, target
from debbuild.base import PACKAGING

ARM64 = target.ARCHES["arm64"]


# ------------------------------------------------------------------ the closure

def _installs():
    return {
        "edgefl": {"version": "0.1.0", "requires_dist": ["flwr==1.42.0", 'torch>=2.1; extra == "torch"']},
        "flwr": {"version": "1.42.0", "requires_dist": ["numpy>=1.24", 'tomli>=1; python_version < "3.11"']},
        "numpy": {"version": "2.4.6", "requires_dist": []},
        "tomli": {"version": "2.5.0", "requires_dist": []},
        "torch": {"version": "2.9.1", "requires_dist": [
            "filelock", 'nvidia-cublas-cu12==12.8.4.1; platform_system == "Linux" and platform_machine == "x86_64"',
            'opt-einsum>=3.3; extra == "opt-einsum"']},
        "filelock": {"version": "4.3.1", "requires_dist": []},
        "nvidia-cublas-cu12": {"version": "12.8.4.1", "requires_dist": []},
    }


def test_closure_evaluates_markers_for_the_target_not_the_build_host():
    pytest.importorskip("packaging")
    env = target.target_environment(ARM64)
    installs = _installs()
    assert lock.target_closure(["edgefl"], installs, env) == {"edgefl", "flwr", "numpy"}
    assert lock.target_closure(["edgefl", "torch==2.9.1"], installs, env) == {
        "edgefl", "flwr", "numpy", "torch", "filelock"}
    amd64 = target.target_environment(target.ARCHES["amd64"])
    assert "nvidia-cublas-cu12" in lock.target_closure(["torch"], installs, amd64)


def test_closure_follows_extras():
    pytest.importorskip("packaging")
    env = target.target_environment(ARM64)
    assert "torch" in lock.target_closure(["edgefl[torch]"], _installs(), env)


def test_closure_refuses_an_unmet_requirement():
    pytest.importorskip("packaging")
    env = target.target_environment(ARM64)
    installs = _installs()
    installs["flwr"]["requires_dist"].append("grpcio>=1.60")
    with pytest.raises(base.BuildError, match="no grpcio"):
        lock.target_closure(["edgefl"], installs, env)
    installs = _installs()
    installs["numpy"]["version"] = "1.20.0"
    with pytest.raises(base.BuildError, match="numpy 1.20.0"):
        lock.target_closure(["edgefl"], installs, env)


# --------------------------------------------------------- versions, changelog

def test_changelog_top_and_epoch():
    text = (PACKAGING / "changelog").read_text()
    version, epoch = product.changelog_top(text)
    assert version == product.upstream_version()
    assert epoch > 1_700_000_000
    with pytest.raises(base.BuildError):
        product.changelog_top("not a changelog")


def test_debian_version():
    assert product.debian_version("0.1.0", "") == "0.1.0"
    assert product.debian_version("0.1.0", "2") == "0.1.0-2"
    for bad in (("v0.1", ""), ("0.1.0", "a b")):
        with pytest.raises(base.BuildError):
            product.debian_version(*bad)


# ----------------------------------------------------------- modes, copyright

@pytest.mark.parametrize(("name", "head", "executable", "mode"), [
    ("libopenblas.so.0.3", b"\x7fELF", True, 0o644),
    ("_ext.cpython-311-aarch64-linux-gnu.so", b"\x7fELF", True, 0o644),
    ("torch_shm_manager", b"\x7fELF", True, 0o755),
    ("uv", b"\x7fELF", True, 0o755),
    ("any_pb2.py", b"# Pr", True, 0o644),       # executable in its wheel, but not a program
    ("uv", b"#!/u", True, 0o755),               # a script in the venv's bin/
    ("uv", b"#!/u", False, 0o644),
    ("data.json", b"", False, 0o644),
])
def test_file_mode(name, head, executable, mode):
    assert staging.file_mode(name, head, executable) == mode


def test_file_mode_in_site_packages():
    # torch ships executable __init__.py files with a #! line: modules, not commands
    assert staging.file_mode("__init__.py", b"#!/u", True, in_site_packages=True) == 0o644
    assert staging.file_mode("torch_shm_manager", b"\x7fELF", True, in_site_packages=True) == 0o755


def test_dep5_license_syntax():
    assert licences.dep5_license("Apache-2.0 OR  BSD-3-Clause") == "Apache-2.0 or BSD-3-Clause"
    assert licences.license_names("(Apache-2.0 WITH LLVM-exception) AND MIT") == [
        "Apache-2.0 with LLVM-exception", "MIT"]


def test_copyright_file_has_a_paragraph_per_distribution_and_licence():
    dists = [
        (licences.Distribution("edgefl", "0.1.0", "Apache-2.0", "edgefl maintainers", "edgefl-0.1.0.dist-info"),
         ["edgefl-0.1.0.dist-info/*", "edgefld/*"]),
        (licences.Distribution("numpy", "2.4.6", "BSD-3-Clause AND MIT", "NumPy Developers", "numpy-2.4.6.dist-info"),
         ["numpy-2.4.6.dist-info/*", "numpy.libs/*", "numpy/*"]),
        (licences.Distribution("typing_extensions", "4.16.0", "PSF-2.0", "Guido", "typing_extensions-4.16.0.dist-info"),
         ["typing_extensions-4.16.0.dist-info/*", "typing_extensions.py"]),
    ]
    text = licences.copyright_file("edgefl", dists)
    paragraphs = text.strip().split("\n\n")
    assert paragraphs[0].startswith("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/")
    site = target.SITE_PACKAGES.lstrip("/")
    assert f"Files: {site}/numpy-2.4.6.dist-info/*\n {site}/numpy.libs/*\n {site}/numpy/*\n" in text
    assert f" {site}/typing_extensions.py\nCopyright: Guido\nLicense: PSF-2.0\n" in text
    assert "License: CC-BY-4.0\nComment: digits.csv.gz" in text
    referenced = set()
    for paragraph in paragraphs:
        if paragraph.startswith("Files:"):
            expression = re.search(r"^License: (.+)$", paragraph, re.M).group(1)
            referenced.update(licences.license_names(expression))
    standalone = {p.split("\n", 1)[0][len("License: "):] for p in paragraphs if p.startswith("License:")}
    assert referenced == standalone == {"Apache-2.0", "BSD-3-Clause", "MIT", "PSF-2.0", "CC-BY-4.0"}
    assert "/usr/share/common-licenses/Apache-2.0" in text


def test_copyright_file_refuses_a_distribution_without_licence():
    dists = [(licences.Distribution("mystery", "1", "", "someone", "mystery-1.dist-info"), ["mystery/*"])]
    with pytest.raises(base.BuildError, match="mystery"):
        licences.copyright_file("edgefl-backend-torch", dists)


def test_gzip_is_reproducible():
    assert staging.gzip_bytes(b"x" * 100) == staging.gzip_bytes(b"x" * 100)
    assert gzip.decompress(staging.gzip_bytes(b"hello")) == b"hello"
    assert staging.gzip_bytes(b"hello")[4:8] == b"\0\0\0\0"  # no timestamp


# ------------------------------------------------------------ committed inputs

@pytest.mark.parametrize("arch", sorted(target.ARCHES))
def test_lock_is_consistent(arch):
    committed = json.loads((PACKAGING / "locks" / f"{arch}.json").read_text())
    assert committed["arch"] == arch and committed["format"] == lock.LOCK_FORMAT
    names = {}
    for package, entries in committed["packages"].items():
        for entry in entries:
            assert re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]), entry
            assert base.normalize_name(entry["name"]) not in names, f"{entry['name']} in two packages"
            names[base.normalize_name(entry["name"])] = package
            if entry["source"] == "wheel":
                lock.check_filename_tags(entry["filename"], target.ARCHES[arch])
            else:
                assert entry["filename"].endswith("-py3-none-any.whl")
    assert names["flwr"] == "edgefl" and names["torch"] == "edgefl-backend-torch"
    assert names["ai-edge-litert"] == "edgefl-backend-litert"
    # The LiteRT package is the small boards' backend: neither framework comes with it.
    assert not {n for n, package in names.items() if package == "edgefl-backend-litert"} & {
        "torch", "tensorflow", "tensorflow-cpu", "keras"}
    assert set(committed["packages"]) == {"edgefl", *product.load_backends(target.ARCHES[arch])}
    assert not any(n.startswith(("nvidia-", "triton")) for n in names), "CUDA wheels in a CPU bundle"
    assert "torch" not in committed["inputs"]["edgefl_requires"]


def test_maintainer_scripts_are_posix_sh():
    scripts = sorted((PACKAGING / "scripts").iterdir())
    # The backends have no postinst or postrm: edgefl's trigger compiles and restarts for them.
    assert {p.name for p in scripts} == {"edgefl.postinst", "edgefl.prerm", "edgefl.postrm", "edgefl-backend.prerm"}
    for script in scripts:
        text = script.read_text()
        assert text.startswith("#!/bin/sh\n") and "\nset -e\n" in text, script.name
        subprocess.run(["sh", "-n", str(script)], check=True)
    if shutil.which("shellcheck"):
        subprocess.run(["shellcheck", "-s", "sh", *map(str, scripts)], check=True)


def test_venv_trigger_is_handled_where_it_is_activated():
    postinst = (PACKAGING / "scripts" / "edgefl.postinst").read_text()
    # Activated by edgefl's own configure, handled by its "triggered" branch (compile, try-restart).
    assert f"dpkg-trigger --no-await {product.VENV_TRIGGER}\n" in postinst
    triggered = postinst[postinst.index("    triggered)"):postinst.index(";;", postinst.index("    triggered)"))]
    assert "compileall" in triggered and "try-restart" in triggered
    # Nothing restarts a unit outside the trigger: a restart mid-transaction could find a
    # backend half-upgraded.
    assert postinst.count("deb-systemd-invoke") == 1


def test_sysusers_line():
    lines = [line for line in (PACKAGING / "sysusers.conf").read_text().splitlines()
             if line and not line.startswith("#")]
    assert len(lines) == 1
    kind, name, uid, rest = lines[0].split(None, 3)
    assert (kind, name, uid) == ("u", "edgefl", "-")
    assert rest.endswith("/var/lib/edgefl /usr/sbin/nologin")
