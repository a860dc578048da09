"""The thin FAB the server submits: a pyproject.toml that points at the installed edgefld apps.

It carries no code, only the components and the run config's keys, so every
board runs the edgefld apps it has installed (a FAB with code would shadow
them: Flower puts the FAB's files first on sys.path). Flower 1.42 needs
``.info/CONTENT`` (path, sha256, size in bits) beside the pyproject.

Boards hold every FAB to that shape (``foreign_fab_problem``, applied by
edgefld.client.supernode): whoever reaches the SuperLink's Control API can
submit any FAB, and open-source Flower checks none.
"""

from __future__ import annotations

import hashlib
import io
import tomllib
import zipfile

from edgefld import __version__
from edgefld.apps.settings import RUN_CONFIG_DEFAULTS
from edgefld.config.schema import toml_literal

SERVER_APP = "edgefld.apps.server_app:app"
CLIENT_APP = "edgefld.apps.client_app:app"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # reproducible bytes, hence a stable FAB hash


def pyproject_text() -> str:
    lines = [
        "[project]",
        'name = "edgefl"',
        f'version = "{__version__}"',
        'description = "edgefl federated training (thin FAB: the code is the installed edgefld package)"',
        'license = "Apache-2.0"',
        "",
        "[tool.flwr.app]",
        'publisher = "edgefl"',
        "",
        "[tool.flwr.app.components]",
        f'serverapp = "{SERVER_APP}"',
        f'clientapp = "{CLIENT_APP}"',
        "",
        "[tool.flwr.app.config]",
    ]
    lines += [f'"{key}" = {toml_literal(value)}' for key, value in RUN_CONFIG_DEFAULTS.items()]
    return "\n".join(lines) + "\n"


def build_fab() -> bytes:
    data = pyproject_text().encode()
    manifest = f"pyproject.toml,{hashlib.sha256(data).hexdigest()},{len(data) * 8}"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo("pyproject.toml", date_time=_FIXED_TIME), data)
        archive.writestr(zipfile.ZipInfo(".info/CONTENT", date_time=_FIXED_TIME), manifest)
    return buffer.getvalue()


def foreign_fab_problem(content: bytes) -> str | None:
    """Why a FAB is not a thin edgefl FAB, or None: only pyproject.toml and .info/CONTENT, edgefld's components.

    Versions may differ between server and boards, so the pyproject's other fields are not compared: they
    carry no code (runtime dependency installation is off on the boards).
    """
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            names = [info.filename for info in archive.infolist()]
            if sorted(names) != [".info/CONTENT", "pyproject.toml"]:
                extra = [name for name in names if name not in (".info/CONTENT", "pyproject.toml")]
                return "it carries files besides its pyproject.toml: " + ", ".join(extra[:5] or names[:5])
            pyproject = tomllib.loads(archive.read("pyproject.toml").decode("utf-8"))
    except (zipfile.BadZipFile, UnicodeDecodeError, tomllib.TOMLDecodeError, OSError) as exc:
        return f"it cannot be read ({exc})"
    components = pyproject.get("tool", {}).get("flwr", {}).get("app", {}).get("components")
    if components != {"serverapp": SERVER_APP, "clientapp": CLIENT_APP}:
        return f"its components {components!r} are not edgefld's apps"
    return None
