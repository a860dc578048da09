"""The thin FAB the server submits: a pyproject.toml that points at the installed edgefld apps.

It carries no code, only the components and the run config's keys, so every
board runs the edgefld apps it has installed (a FAB with code would shadow
them: Flower puts the FAB's files first on sys.path). Flower 1.42 needs
``.info/CONTENT`` (path, sha256, size in bits) beside the pyproject.
"""

from __future__ import annotations

import hashlib
import io
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
