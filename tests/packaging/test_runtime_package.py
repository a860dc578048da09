"""What the edgefld package (its wheel, the edgefl .deb) holds: the runtime, not build tools."""

from __future__ import annotations

import ast
from pathlib import Path

from edgefld.backends.base import BACKEND_MODULES
from edgefld.export import FORMATS

EDGEFLD = Path(__file__).resolve().parents[2] / "edgefld"
FRAMEWORKS = {"torch", "torchvision", "tensorflow", "keras"}


def _imports() -> dict[str, set[str]]:
    """Every module of edgefld -> the top-level names and edgefld modules it imports (anywhere in it)."""
    found = {}
    for path in EDGEFLD.rglob("*.py"):
        parts = path.relative_to(EDGEFLD.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
        found[module] = names
    return found


def test_only_the_backends_import_a_training_framework():
    """A module that imports torch or TensorFlow and that no backend (nor the server's model
    exporter for its format, edgefld.export.FORMATS) loads is a build tool (such as
    tools/litert_build.py, which builds the LiteRT models with TensorFlow): it belongs outside the
    package, which every board installs. Both registries name their modules, imported only when chosen."""
    imports = _imports()
    exporters = [spec.exporter.split(":")[0] for spec in FORMATS.values()]
    reachable, todo = set(), [*BACKEND_MODULES.values(), *exporters]
    while todo:
        module = todo.pop()
        if module not in reachable and module in imports:
            reachable.add(module)
            todo += [name for name in imports[module] if name in imports]
    importing = {m for m, names in imports.items() if {n.split(".")[0] for n in names} & FRAMEWORKS}
    assert importing, "no module imports a framework: the test no longer sees the backends"
    assert importing <= reachable, f"not loaded by any backend: {sorted(importing - reachable)}"


def test_every_data_file_of_the_package_is_in_its_package_data():
    """A file under edgefld/ that is not Python reaches the wheel (and so the .deb) only through
    [tool.setuptools.package-data]: one left out works from a checkout and fails once installed
    (seen: hardware/boards.json, which every `edgefl` command needed)."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["edgefld"]
    package = root / "edgefld"
    data = [path.relative_to(package).as_posix() for path in package.rglob("*")
            if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts]
    assert data, "no data files found: the test no longer sees the package"
    missing = [name for name in data if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
