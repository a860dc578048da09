"""The licence of every bundled distribution, from its metadata, as a DEP-5 copyright file."""

from __future__ import annotations

import email.message
import re
from dataclasses import dataclass
from pathlib import Path

from debbuild.base import BuildError, parse_metadata
from debbuild.target import SITE_PACKAGES


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str
    license: str
    copyright: str
    dist_info: str  # directory name, e.g. numpy-2.4.6.dist-info


_CLASSIFIER_LICENSES = {
    "Apache Software License": "Apache-2.0",
    "MIT License": "MIT",
    "BSD License": "BSD",
    "Python Software Foundation License": "PSF-2.0",
    "Mozilla Public License 2.0 (MPL 2.0)": "MPL-2.0",
    "ISC License (ISCL)": "ISC",
    "GNU Lesser General Public License v3 (LGPLv3)": "LGPL-3.0",
    "GNU Lesser General Public License v2 or later (LGPLv2+)": "LGPL-2.0+",
    "GNU General Public License v3 (GPLv3)": "GPL-3.0",
    "The Unlicense (Unlicense)": "Unlicense",
    "MIT No Attribution License (MIT-0)": "MIT-0",
    "Zope Public License": "ZPL-2.1",
    "Public Domain": "public-domain",
}

# License: fields in free text seen in PyPI metadata, as SPDX expressions.
_FREE_TEXT_LICENSES = {
    "mit license": "MIT", "the mit license": "MIT", "isc license": "ISC", "bsd license": "BSD",
    "3-clause bsd license": "BSD-3-Clause", "new bsd license": "BSD-3-Clause", "bsd 3-clause": "BSD-3-Clause",
    "bsd, public domain": "BSD AND public-domain", "apache 2.0": "Apache-2.0", "apache license 2.0": "Apache-2.0",
    "apache software license": "Apache-2.0", "apache license, version 2.0": "Apache-2.0", "psf": "PSF-2.0",
}
_EXPRESSION = re.compile(r"\(*[A-Za-z0-9.+-]+\)*(?: (?:AND|OR|WITH) \(*[A-Za-z0-9.+-]+\)*)*")

# Where the full text of each licence is, for the copyright file's stand-alone License paragraphs.
LICENSE_TEXTS = {
    "Apache-2.0": "On Debian systems, the complete text of the Apache License, Version 2.0, is in\n"
                  "/usr/share/common-licenses/Apache-2.0.",
    "MPL-2.0": "On Debian systems, the complete text of the Mozilla Public License 2.0 is in\n"
               "/usr/share/common-licenses/MPL-2.0.",
    "CC0-1.0": "On Debian systems, the complete text of the CC0 1.0 Universal licence is in\n"
               "/usr/share/common-licenses/CC0-1.0.",
    "GPL-3.0": "On Debian systems, the complete text of the GNU General Public License version 3 is in\n"
               "/usr/share/common-licenses/GPL-3.",
    "LGPL-3.0": "On Debian systems, the complete text of the GNU Lesser General Public License version 3\n"
                "is in /usr/share/common-licenses/LGPL-3.",
    "CC-BY-4.0": "Creative Commons Attribution 4.0 International, https://creativecommons.org/licenses/by/4.0/legalcode\n"
                 "(see /opt/edgefl/venv/lib/python3.11/site-packages/edgefld/datasets/digits/LICENSE.md).",
}
GENERIC_LICENSE_TEXT = (
    "The complete licence text is shipped with each distribution under this licence, in its\n"
    "dist-info directory (licenses/, LICENSE*, COPYING*): see the Comment of its Files paragraph."
)


# ------------------------------------------------------------------------ metadata

def license_from_metadata(headers: email.message.Message) -> str:
    """The distribution's licence, as an SPDX-like expression, from its METADATA headers.

    License-Expression (core metadata 2.4) wins; then a short License field; then the
    trove classifiers. Returns "" when none of them says anything.
    """
    expression = (headers.get("License-Expression") or "").strip()
    if expression:
        return expression
    declared = headers.get("License") or ""
    field = " ".join(declared.split()) if "\n" not in declared.strip() else ""
    if field.upper() in ("UNKNOWN", "NONE"):
        field = ""
    if field.lower() in _FREE_TEXT_LICENSES:
        return _FREE_TEXT_LICENSES[field.lower()]
    if field and len(field) <= 80 and _EXPRESSION.fullmatch(field):
        return field
    found = []
    for classifier in headers.get_all("Classifier") or []:
        parts = [p.strip() for p in classifier.split("::")]
        if parts[0] == "License" and len(parts) > 1 and parts[-1] not in ("OSI Approved",):
            found.append(_CLASSIFIER_LICENSES.get(parts[-1], parts[-1]))
    if found:
        return " OR ".join(dict.fromkeys(found))
    if field and len(field) <= 80:  # free text nobody mapped: keep it, as a LicenseRef
        return "LicenseRef-" + re.sub(r"[^A-Za-z0-9.]+", "-", field).strip("-")
    return ""


def copyright_from_metadata(headers: email.message.Message) -> str:
    for key in ("Author", "Author-email", "Maintainer", "Maintainer-email"):
        value = " ".join((headers.get(key) or "").split())
        if value and value.upper() != "UNKNOWN":
            return value
    return f"the {headers.get('Name')} authors"


def read_distribution(dist_info: Path) -> Distribution:
    headers = parse_metadata((dist_info / "METADATA").read_text(encoding="utf-8"))
    return Distribution(
        name=headers["Name"], version=headers["Version"], license=license_from_metadata(headers),
        copyright=copyright_from_metadata(headers), dist_info=dist_info.name,
    )


def distributions(site: Path) -> list[tuple[Distribution, list[str]]]:
    """Each installed distribution with its top-level entries in site-packages (from RECORD),
    as DEP-5 patterns relative to site-packages ("numpy/*", "typing_extensions.py")."""
    found = []
    for dist_info in sorted(site.glob("*.dist-info")):
        dist = read_distribution(dist_info)
        tops = set()
        for line in (dist_info / "RECORD").read_text(encoding="utf-8").splitlines():
            path = line.rsplit(",", 2)[0]
            if not path or path.startswith(".."):
                continue
            top = path.split("/", 1)[0]
            if top in ("bin", "__pycache__"):
                continue
            tops.add(f"{top}/*" if (site / top).is_dir() else top)
        found.append((dist, sorted(tops)))
    return found


# -------------------------------------------------------------------- DEP-5 output

def dep5_license(expression: str) -> str:
    """An SPDX expression in DEP-5 syntax ('and', 'or', 'with')."""
    text = " ".join(expression.split())
    text = re.sub(r"\bAND\b", "and", text)
    text = re.sub(r"\bOR\b", "or", text)
    text = re.sub(r"\bWITH\b", "with", text)
    return text


def license_names(expression: str) -> list[str]:
    """The licence short names of an expression (exceptions stay attached: 'Apache-2.0 with LLVM-exception')."""
    text = dep5_license(expression).replace("(", " ").replace(")", " ")
    parts = re.split(r"\s+(?:and|or)\s+", text.strip())
    return [p.strip() for p in parts if p.strip()]


def _wrap_field(name: str, values: list[str]) -> str:
    return f"{name}: " + "\n ".join(values)


def copyright_file(package: str, dists: list[tuple[Distribution, list[str]]], year: int = 2026) -> str:
    """DEP-5 copyright: edgefl itself, then every bundled distribution with its licence
    (edgefl's own distribution, where the package bundles it, with its dataset's licence)."""
    site = SITE_PACKAGES.lstrip("/")
    paragraphs = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: edgefl\n"
        f"Comment: {package} bundles Python distributions from PyPI in /opt/edgefl/venv. Each is listed\n"
        " below with the licence its metadata (License-Expression, License or classifiers) declares;\n"
        " the licence files each ships are in its *.dist-info directory.",
        f"Files: *\nCopyright: {year} edgefl maintainers\nLicense: Apache-2.0",
    ]
    used = {"Apache-2.0"}
    for dist, tops in dists:
        files = [f"{site}/{t}" for t in tops]
        if dist.name == "edgefl":
            paragraphs.append(_wrap_field("Files", files)
                              + f"\nCopyright: {year} edgefl maintainers\nLicense: Apache-2.0")
            paragraphs.append(
                f"Files: {site}/edgefld/datasets/digits/*\n"
                "Copyright: 1998 E. Alpaydin, C. Kaynak (UCI Optical Recognition of Handwritten Digits)\n"
                "License: CC-BY-4.0\n"
                "Comment: digits.csv.gz is taken unchanged from scikit-learn 1.9.1 (BSD-3-Clause,\n"
                " Copyright 2007-2026 The scikit-learn developers); see LICENSE.md next to it.")
            used.add("CC-BY-4.0")
            continue
        if not dist.license:
            raise BuildError(f"{dist.name} {dist.version}: its metadata declares no licence; "
                             "map it in packaging/debbuild/licences.py")
        expression = dep5_license(dist.license)
        used.update(license_names(dist.license))
        paragraphs.append(
            _wrap_field("Files", files) + f"\nCopyright: {dist.copyright}\nLicense: {expression}\n"
            f"Comment: {dist.name} {dist.version}; licence files in /{site}/{dist.dist_info}/"
        )
    for name in sorted(used):
        text = LICENSE_TEXTS.get(name, GENERIC_LICENSE_TEXT)
        body = "\n".join(" " + (line if line else ".") for line in text.splitlines())
        paragraphs.append(f"License: {name}\n{body}")
    return "\n\n".join(paragraphs) + "\n"
