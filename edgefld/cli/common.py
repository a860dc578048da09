"""Argument helpers shared by the subcommands: --config, and overrides built from the schema."""

from __future__ import annotations

import argparse
import os
from collections.abc import Collection
from typing import Any

from edgefld.config import Config, load_config, resolve_config_path
from edgefld.config.loader import DEFAULT_CONFIG_PATH
from edgefld.config.schema import KEYS_BY_TABLE, shorten
from edgefld.errors import ConfigError


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help=f"configuration file (default: $EDGEFL_CONFIG, else {DEFAULT_CONFIG_PATH})",
    )


def add_override_flags(parser: argparse.ArgumentParser, *tables: str, only: Collection[str] = ()) -> None:
    """One flag per schema key that declares one, so flags and file can never drift apart.
    ``only``: just these keys' flags ("table.name"), for a command that reads a few keys of a table."""
    for table in tables:
        group = parser.add_argument_group(f"overrides of [{table}] in the config file")
        for key in KEYS_BY_TABLE[table].values():
            if key.flag and (not only or f"{table}.{key.name}" in only or not any(
                    o.startswith(f"{table}.") for o in only)):
                group.add_argument(
                    key.flag,
                    dest=f"override__{table}__{key.name}",
                    metavar=key.name.upper(),
                    help=f"{key.doc.split('. ')[0].rstrip('.')}. Allowed: {key.allowed()}.",
                )


def nonempty_path(text: str) -> str:
    """argparse type of a path argument: "" would silently mean the current directory."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path")
    return text


def existing_directory(text: str) -> str:
    """argparse type of a directory that must exist (a --sysroot)."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text or '(empty)'} is not a directory")
    return text


def bounded_int(low: int, high: int, unit: str = "") -> Any:
    """argparse type of an integer in low..high, named in the message (argparse's own says only "invalid int")."""
    what = f"{low}..{high} {unit}".strip() if unit else f"an integer {low}..{high}"

    def parse(text: str) -> int:
        try:
            value = int(text, 10) if len(text) <= 20 else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {what}, got {shorten(text)!r}")
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    return parse


def overrides_from(args: argparse.Namespace) -> dict[tuple[str, str], tuple[str, Any]]:
    found: dict[tuple[str, str], tuple[str, Any]] = {}
    for dest, value in vars(args).items():
        if dest.startswith("override__") and value is not None:
            _, table, name = dest.split("__", 2)
            found[(table, name)] = (KEYS_BY_TABLE[table][name].flag or name, value)
    return found


def load_from_args(args: argparse.Namespace, *, optional: bool = False) -> Config:
    """Load the config named by --config / $EDGEFL_CONFIG / the default path.

    With ``optional``, a missing file at the *default* path means defaults (for
    `edgefl detect` on a machine without edgefl installed); a path the user
    named must exist.
    """
    if args.config == "":
        raise ConfigError("an empty path; give the path of a TOML file", key="--config")
    path = resolve_config_path(args.config)
    named = args.config is not None or "EDGEFL_CONFIG" in os.environ
    if optional and not named and not os.path.exists(path):
        return load_config(None, overrides_from(args))
    return load_config(path, overrides_from(args))
