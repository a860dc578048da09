"""Read /etc/edgefl.toml, validate it against the schema, apply command-line overrides.

Every problem becomes one ``ConfigError`` naming the file, the line where it is
known, the key, what is wrong and what is allowed. Nothing here raises anything
else for bad input: the fuzz and corpus tests hold it to that.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edgefld.config.schema import KEYS_BY_TABLE, REQUIRED, TABLES, check_tables, shorten
from edgefld.config.schema import toml_literal as _toml_literal
from edgefld.errors import ConfigError

DEFAULT_CONFIG_PATH = "/etc/edgefl.toml"
CONFIG_ENV = "EDGEFL_CONFIG"
MAX_CONFIG_BYTES = 1 << 20  # a config is a few KiB; refuse to parse a runaway file

_TABLE_RE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY_RE = re.compile(r"""^\s*("[^"]*"|'[^']*'|[A-Za-z0-9_.\- ]+?)\s*=""")
# tomllib takes quadratic time over the parts of a dotted key (a 100000-part table header
# under the size limit takes ~40 s), so such a file is refused before it is parsed.
MAX_DOTTED_PARTS = 64
_DOTTED_CHAIN_RE = re.compile(r"(?<![A-Za-z0-9_-])(?:[A-Za-z0-9_-]++[ \t]*+\.[ \t]*+)" + f"{{{MAX_DOTTED_PARTS}}}")
_STRING_RE = re.compile(r'"(?:[^"\\\n]|\\.)*+"|\'[^\'\n]*+\'')
_LONG_NUMBER_RE = re.compile(r"\d{1000,}")
_TOML_POS_RE = re.compile(r"\(at line (\d+), column \d+\)|\(at end of document\)")


@dataclass(frozen=True)
class Section:
    """The values of one table, every key present (defaults filled in)."""

    table: str
    values: Mapping[str, Any]

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(f"[{self.table}] has no key {name!r}") from None


@dataclass(frozen=True)
class Config:
    source: str  # the file it came from, or "<defaults>"
    client: Section
    server: Section
    simulate: Section
    log: Section
    strategy: Section  # [server.strategy]
    dp: Section  # [server.dp]
    secagg: Section  # [server.secagg]
    present: frozenset[tuple[str, str]] = field(default_factory=frozenset)  # keys set in the file or by a flag
    origins: Mapping[tuple[str, str], str] = field(default_factory=dict)  # "file:line" or "--flag"

    def require(self, table: str, names: Iterable[str]) -> None:
        """Fail with exit 78 unless every named key was set (the role's required keys)."""
        for name in names:
            if (table, name) not in self.present:
                key_ = KEYS_BY_TABLE[table][name]
                hint = f"set `{name} = {_toml_literal(key_.example)}` under [{table}]"
                if key_.flag:
                    hint += f" or pass {key_.flag}"
                raise ConfigError(f"missing required key; {hint}", source=self.source, key=key_.dotted)

    def section(self, table: str) -> Section:
        """The table named as in the file: "server", "server.strategy", ..."""
        section: Section = getattr(self, attribute(table))
        return section

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return {t: dict(self.section(t).values) for t in TABLES}


def attribute(table: str) -> str:
    """The Config attribute of a table: [server.strategy] is ``config.strategy``."""
    return table.rpartition(".")[2]


def resolve_config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """--config wins over $EDGEFL_CONFIG, which wins over /etc/edgefl.toml."""
    if explicit is not None:
        return explicit  # an empty one too: load_config refuses it rather than reading another file
    return environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Mapping[tuple[str, str], tuple[str, Any]] | None = None,
) -> Config:
    """Load and validate ``path`` (None: defaults only), then apply ``overrides``.

    ``overrides`` maps (table, key) to (flag name, value) from the command line;
    their values are validated like file values, errors naming the flag.
    """
    if path is None:
        source, data, lines = "<defaults>", {}, {}
    else:
        source = os.fspath(path)
        if not source:
            raise ConfigError("the configuration path is empty; give the path of a TOML file")
        text = _read_text(source)
        deep = _long_dotted_key_line(text)
        if deep is not None:
            raise ConfigError(f"a key or table name of more than {MAX_DOTTED_PARTS} dotted parts; edgefl's keys "
                              "have two ([table] key)", source=source, line=deep)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise _syntax_error(source, text, exc) from None
        except RecursionError:
            raise ConfigError("TOML nesting is too deep", source=source) from None
        except ValueError:
            # tomllib lets int()'s limit through (CVE-2020-10735: more than 4300 digits).
            line = _line_of(text, _LONG_NUMBER_RE)
            raise ConfigError(f"a number has more than {sys.get_int_max_str_digits()} digits", source=source,
                              line=line, key=_key_at(text, line)) from None
        lines = _locate_keys(text)
    sections, present, origins = _validate(source, data, lines, supplied=frozenset(overrides or ()))
    for (table, name), (flag, raw) in (overrides or {}).items():
        key_ = KEYS_BY_TABLE[table][name]
        try:
            value = key_.validate(key_.parse_flag(raw) if isinstance(raw, str) else raw)
        except ValueError as exc:
            raise ConfigError(str(exc), key=flag) from None
        if key_.kind == "path":
            value = os.path.abspath(value)
        sections[table][name] = value
        present.add((table, name))
        origins[(table, name)] = flag
    problem = check_tables(sections, present)
    if problem is not None:
        dotted, text = problem
        table, _, name = dotted.strip("[").partition("] ")
        origin = origins.get((table, name), "")
        if origin.startswith("--"):
            raise ConfigError(text, key=origin)
        raise ConfigError(text, source=source, line=lines.get((table, name)), key=dotted)
    return Config(
        source=source,
        present=frozenset(present),
        origins=origins,
        **{attribute(t): Section(t, sections[t]) for t in TABLES},
    )


def _read_text(source: str) -> str:
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any non-file.
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ConfigError("file not found (pass --config PATH or set EDGEFL_CONFIG)", source=source) from None
    except PermissionError:
        raise ConfigError(
            "permission denied; it must be readable by the user running edgefl (e.g. the edgefl service user)",
            source=source,
        ) from None
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", source=source) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError("is a directory, expected a TOML file", source=source)
        if not stat.S_ISREG(mode):
            raise ConfigError("is not a regular file (a FIFO, device or socket); expected a TOML file",
                              source=source)
        with os.fdopen(fd, "rb", closefd=False) as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot be read: {exc.strerror or exc}", source=source) from None
    finally:
        os.close(fd)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"is larger than {MAX_CONFIG_BYTES} bytes; a config file is a few KiB", source=source)
    if raw.startswith(b"\xef\xbb\xbf"):  # editors on other systems add a BOM; TOML itself forbids it
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"is not valid UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8",
            source=source,
            line=line,
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise ConfigError("contains a NUL byte; it is not a text file", source=source, line=line)
    return text


def _syntax_error(source: str, text: str, exc: tomllib.TOMLDecodeError) -> ConfigError:
    message = str(exc)
    match = _TOML_POS_RE.search(message)
    line = int(match.group(1)) if match and match.group(1) else None
    if match and line is None:  # "at end of document": the last line is where it went wrong
        line = max(1, len(text.splitlines()))
    problem = _TOML_POS_RE.sub("", message).strip().rstrip(".")
    if "overwrite" in problem or "twice" in problem:
        problem += " (a key or table may be set only once)"
    return ConfigError(f"TOML syntax error: {problem}", source=source, line=line, key=_key_at(text, line))


def _long_dotted_key_line(text: str) -> int | None:
    """The first line with a dotted name of more than MAX_DOTTED_PARTS parts (strings do not count)."""
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count(".") >= MAX_DOTTED_PARTS and _DOTTED_CHAIN_RE.search(_STRING_RE.sub("s", line)):
            return number
    return None


def _line_of(text: str, pattern: re.Pattern[str]) -> int | None:
    found = pattern.search(text)
    return text[: found.start()].count("\n") + 1 if found else None


def _key_at(text: str, line: int | None) -> str | None:
    """Name the table and key written on ``line``, so even a syntax error names its key."""
    if line is None:
        return None
    table = ""
    for number, content in enumerate(text.splitlines()[:line], start=1):
        header = _TABLE_RE.match(content)
        if header:
            table = header.group(1).strip()
            if number == line:
                return f"[{table}]"
        elif number == line:
            found = _KEY_RE.match(content)
            if not found:
                return f"[{table}]" if table else None
            name = found.group(1).strip().strip("\"'")
            return f"[{table}] {name}" if table else name
    return None


def _locate_keys(text: str) -> dict[tuple[str, str], int]:
    """Map (table, key) and (table, "") to their line numbers, for messages.

    tomllib keeps no positions; a light scan of headers and `key =` lines is
    enough for the flat files edgefl uses (multi-line values may confuse it,
    in which case a message simply has no line number).
    """
    lines: dict[tuple[str, str], int] = {}
    table = ""
    in_multiline = False
    for number, line in enumerate(text.splitlines(), start=1):
        if line.count('"""') % 2 == 1 or line.count("'''") % 2 == 1:
            in_multiline = not in_multiline
            continue
        if in_multiline:
            continue
        header = _TABLE_RE.match(line)
        if header:
            table = header.group(1).strip().strip('"')
            lines.setdefault((table, ""), number)
            continue
        found = _KEY_RE.match(line)
        if found:
            name = found.group(1).strip().strip("\"'")
            if "." in name and not table:
                table, _, name = name.partition(".")
                lines.setdefault((table, name), number)
                table = ""
            else:
                lines.setdefault((table, name), number)
    return lines


def _validate(
    source: str,
    data: dict[str, Any],
    lines: dict[tuple[str, str], int],
    supplied: frozenset[tuple[str, str]] = frozenset(),  # (table, key)s a command-line flag sets
) -> tuple[dict[str, dict[str, Any]], set[tuple[str, str]], dict[tuple[str, str], str]]:
    sections: dict[str, dict[str, Any]] = {
        t: {k.name: (None if k.default is REQUIRED else k.default) for k in keys.values()}
        for t, keys in KEYS_BY_TABLE.items()
    }
    present: set[tuple[str, str]] = set()
    origins: dict[tuple[str, str], str] = {}
    base_dir = os.path.dirname(os.path.abspath(source)) if source != "<defaults>" else os.getcwd()

    for table, body in _subtables_apart(data).items():
        if table not in TABLES:
            if not isinstance(body, dict):
                owner = [t for t, keys in KEYS_BY_TABLE.items() if table in keys]
                hint = f"; it belongs under [{owner[0]}]" if owner else ""
                raise ConfigError(
                    f"unknown top-level key \"{shorten(table)}\"{hint}; tables allowed: {_table_list()}",
                    source=source, line=lines.get(("", table)), key=shorten(table),
                )
            raise ConfigError(
                f"unknown table{_did_you_mean(table, TABLES)}; tables allowed: {_table_list()}",
                source=source, line=lines.get((table, "")), key=f"[{shorten(table)}]",
            )
        if not isinstance(body, dict):
            raise ConfigError(
                f"must be a table ([{table}] with keys under it), got a value",
                source=source, line=lines.get(("", table)), key=table,
            )
        allowed = KEYS_BY_TABLE[table]
        for name, value in body.items():
            line = lines.get((table, name))
            if name not in allowed:
                owner = [t for t, keys in KEYS_BY_TABLE.items() if name in keys and t != table]
                elsewhere = f" (it belongs under [{owner[0]}])" if owner else ""
                if f"{table}.{name}" in TABLES:  # `strategy = "fedprox"` where [server.strategy] is meant
                    elsewhere = f" (it is a table: [{table}.{name}], with name = \"...\" in it)"
                raise ConfigError(
                    f"unknown key{_did_you_mean(name, allowed)}{elsewhere}; keys allowed in [{table}]: "
                    + ", ".join(allowed),
                    source=source, line=line, key=f"[{table}] {shorten(name)}",
                )
            key_ = allowed[name]
            try:
                value = key_.validate(value)
            except ValueError as exc:
                raise ConfigError(str(exc), source=source, line=line, key=key_.dotted) from None
            if key_.kind == "path":
                value = os.path.normpath(os.path.join(base_dir, os.path.expanduser(value)))
            sections[table][name] = value
            present.add((table, name))
            origins[(table, name)] = f"{source}:{line}" if line else source
        # A table that is present but lacks its required keys is half-edited: say so now,
        # not when the daemon starts. A flag may supply it (edgefl-client@.service passes
        # --cid %i, so its instances share one [client] table without a cid).
        for key_ in allowed.values():
            if key_.required and key_.name not in body and (table, key_.name) not in supplied:
                hint = f"set `{key_.name} = {_toml_literal(key_.example)}`"
                raise ConfigError(
                    f"missing required key in [{table}]; {hint}",
                    source=source, line=lines.get((table, "")), key=key_.dotted,
                )
    return sections, present, origins


def _subtables_apart(data: dict[str, Any]) -> dict[str, Any]:
    """[server.strategy] as a table of its own: tomllib nests it in [server] as the key "strategy"."""
    flat: dict[str, Any] = {}
    for table, body in data.items():
        if isinstance(body, dict):
            nested = {name: value for name, value in body.items()
                      if f"{table}.{name}" in TABLES and isinstance(value, dict)}
            if nested:
                body = {name: value for name, value in body.items() if name not in nested}
                flat.update({f"{table}.{name}": value for name, value in nested.items()})
        flat[table] = body
    return flat


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    if len(name) > 100:
        return ""  # nothing that long is a typo of a key
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean \"{close[0]}\"?)" if close else ""


def _table_list() -> str:
    return ", ".join(f"[{t}]" for t in TABLES)


