"""Fuzzing the config loader the CLI uses (load_config with a file and flag overrides).

Every input must either load to a Config whose every value passes the schema,
or raise ConfigError: one line that names the key or the line (or, for a file
that is not text at all, says so). Any other exception is a bug.

Four strategies, derandomized (the seed is fixed per test, so CI runs the same
inputs every time; no example database): raw bytes, TOML-ish text made of the
schema's own tokens, structured documents built from the schema with values
of every type (with an oracle: which of them must load and to what), and
command-line overrides. EDGEFL_FUZZ_SCALE multiplies the example counts for a
longer local run. The conftest prints how many inputs ran.
"""

from __future__ import annotations

import datetime
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgefld.config import load_config
from edgefld.config.schema import KEYS, KEYS_BY_TABLE, STRATEGY_KEYS, TABLES, Key
from edgefld.errors import ConfigError
from tests.config import conftest

SCALE = float(os.environ.get("EDGEFL_FUZZ_SCALE", "1"))
EXAMPLES = {"bytes": 600, "tomlish": 500, "structured": 600, "overrides": 300}  # 2000 in all
# The problems that belong to the whole file, not to one line or key.
FILE_LEVEL = ("TOML nesting is too deep", "is larger than")


def fuzz_settings(name: str) -> settings:
    return settings(max_examples=int(EXAMPLES[name] * SCALE), derandomize=True, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                           HealthCheck.data_too_large])


WORKDIR = Path(tempfile.mkdtemp(prefix="edgefl-fuzz-"))


def load_bytes(data: bytes, overrides: dict | None = None):
    path = WORKDIR / "edgefl.toml"
    path.write_bytes(data)
    return load_config(path, overrides)


def check_outcome(strategy: str, data: bytes, overrides: dict | None = None):
    """Load; assert the result is a valid Config or a one-line ConfigError naming where. Returns either."""
    conftest.FUZZ[strategy] += 1
    try:
        config = load_bytes(data, overrides)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 1000, message
        assert exc.key or exc.line or any(p in exc.problem for p in FILE_LEVEL), message
        conftest.FUZZ[f"{strategy} errors"] += 1
        if os.environ.get("EDGEFL_FUZZ_SHOW"):
            print(message)
        return exc
    # Whatever loaded is valid by the schema, each value in its canonical type.
    for key_ in KEYS:
        value = config.section(key_.table).values[key_.name]
        if value is None:
            assert key_.required or key_.optional
        else:
            assert key_.validate(value) == value
    return config


# --- 1: random bytes --------------------------------------------------------------------------


@fuzz_settings("bytes")
@given(st.one_of(st.binary(max_size=400),
                 st.binary(max_size=200).map(lambda b: b"[client]\ncid = 1\n" + b),
                 st.binary(max_size=200).map(lambda b: b"\xef\xbb\xbf" + b)))
def test_fuzz_random_bytes(data):
    check_outcome("bytes", data)


# --- 2: TOML-ish text from the schema's tokens -------------------------------------------------

NAMES = sorted({k.name for k in KEYS}) + list(TABLES) + ["cdi", "x", "client.cid", '"cid"', "'server'", "a b"]
TOKENS = st.one_of(
    st.sampled_from(NAMES),
    st.sampled_from(["[", "]", "[[", "]]", "=", " = ", "\n", "#", '"', "'", '"""', "{", "}", ",", ".", " ",
                     "true", "false", "inf", "nan", "-", "+", "0x1F", "1_000", "1e400", "1979-05-27T07:32:00Z",
                     "\\u0000", "\\", "\t", "\r\n", "\x00", "\u00e9", "\ufeff", "auto"]),
    st.integers(-(2**70), 2**70).map(str),
    st.text(max_size=6),
)


@fuzz_settings("tomlish")
@given(st.lists(TOKENS, max_size=40).map("".join))
def test_fuzz_tomlish_text(text):
    check_outcome("tomlish", text.encode("utf-8", "surrogatepass"))


# --- 3: structured documents from the schema, with an oracle ------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        escaped = "".join(c if c.isprintable() and c not in '"\\' else
                          f"\\u{ord(c):04x}" if ord(c) <= 0xFFFF else f"\\U{ord(c):08x}" for c in value)
        return f'"{escaped}"'
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else toml_value(name)


toml_strings = st.text(st.characters(exclude_categories=("Cs",)), max_size=30)
any_value = st.recursive(
    st.one_of(st.integers(-(2**80), 2**80), st.floats(), toml_strings, st.booleans(),
              st.datetimes(timezones=st.just(datetime.UTC)), st.dates()),
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.from_regex(r"[a-z]{1,5}", fullmatch=True), inner, max_size=3)),
    max_leaves=6,
)


def valid_values(key_: Key) -> st.SearchStrategy[Any]:
    """Values the schema accepts for ``key_`` (filtered by the schema itself for the edge rules)."""
    if key_.kind == "int":
        base = st.integers(int(key_.minimum or 0), int(key_.maximum if key_.maximum is not None else 2**31))
    elif key_.kind == "float":
        base = st.floats(key_.minimum or 0.0, key_.maximum or 1e9, allow_nan=False)
    elif key_.kind == "choice":
        base = st.sampled_from(key_.choices)
    elif key_.kind == "host_port":
        host = st.one_of(st.ip_addresses(v=4).map(str), st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True),
                         st.ip_addresses(v=6).map(lambda a: f"[{a}]"))
        base = st.tuples(host, st.integers(1, 65535)).map(lambda hp: f"{hp[0]}:{hp[1]}")
    elif key_.kind == "path":
        base = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=20)
    elif key_.kind == "switch":
        base = st.one_of(st.booleans(), st.just("auto"))
    elif key_.kind == "bool":
        base = st.booleans()
    else:
        base = toml_strings
    return base.filter(lambda v: _accepts(key_, v))


def _accepts(key_: Key, value: Any) -> bool:
    try:
        key_.validate(value)
        return True
    except ValueError:
        return False


def rare(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n`` draws (integers() would favour its bounds, so 0 far more often)."""
    return st.sampled_from([False] * (n - 1) + [True])


@st.composite
def documents(draw):
    """(TOML text, {(table, key): value} that must load, set of keys one of which must be named)."""
    lines: list[str] = []
    top: list[str] = []  # key = value lines above the first header, where TOML puts top-level keys
    expected: dict[tuple[str, str], Any] = {}
    culprits: set[str] = set()
    tables = draw(st.lists(st.sampled_from(list(TABLES)), unique=True, max_size=3))
    if draw(rare(10)):
        tables.append(draw(st.sampled_from(["clinet", "extra", "Client"])))
    for table in tables:
        if table not in TABLES:
            lines.append(f"[{table}]")
            culprits.add(f"[{table}]")
            continue
        if draw(rare(30)):  # the table written as a value
            top.append(f"{table} = {toml_value(draw(any_value.filter(lambda v: not isinstance(v, dict))))}")
            # A subtable written as a value is a key of its parent table: "[server] strategy".
            parent, dot, child = table.rpartition(".")
            culprits.add(f"[{parent}] {child}" if dot else table)
            if dot:  # `server.strategy = 0` defines [server]: a [server] header after it is a TOML error
                culprits.add(f"[{parent}]")
            # And a header of one of its subtables ([server.strategy] after `server = 0`) is then a TOML error.
            culprits.update(f"[{sub}]" for sub in TABLES if sub.startswith(f"{table}."))
            continue
        lines.append(f"[{table}]")
        keys = KEYS_BY_TABLE[table]
        chosen = draw(st.lists(st.sampled_from(list(keys)), unique=True, max_size=len(keys)))
        for key_ in keys.values():  # the required keys are there five times in six
            if key_.required and key_.name not in chosen and not draw(rare(6)):
                chosen.append(key_.name)
        for name in chosen:
            key_ = keys[name]
            if draw(rare(8)):  # one in eight: a value of a random type
                value = draw(any_value)
                if not _accepts(key_, value):
                    culprits.add(key_.dotted)
            else:
                value = draw(valid_values(key_))
            expected[(table, name)] = value
            lines.append(f"{toml_key(name)} = {toml_value(value)}")
        if draw(rare(10)):
            lines.append("nosuchkey = 1")
            culprits.add(f"[{table}] nosuchkey")
        for key_ in keys.values():
            if key_.required and key_.name not in chosen:
                culprits.add(key_.dotted)
    # [server.strategy]: a hyperparameter set (not to its default) for a strategy that does not read it.
    name = expected.get(("server.strategy", "name"), "fedavg")
    if isinstance(name, str) and name in STRATEGY_KEYS:
        for (table, key_name), value in expected.items():
            key_ = KEYS_BY_TABLE[table][key_name]
            if (table == "server.strategy" and key_name != "name" and key_name not in STRATEGY_KEYS[name]
                    and _accepts(key_, value) and value != key_.default):
                culprits.add(key_.dotted)
    # Secure aggregation: [server.secagg] set (not to its default) while it is off; while on, a strategy that
    # needs each update, central DP, or fewer than 2 boards a round.
    def valid(table: str, key_name: str) -> Any:
        value = expected.get((table, key_name), KEYS_BY_TABLE[table][key_name].default)
        return value if _accepts(KEYS_BY_TABLE[table][key_name], value) else None

    secure = valid("server", "secure_aggregation")
    if secure is False:
        for (table, key_name), value in expected.items():
            key_ = KEYS_BY_TABLE[table][key_name]
            if table == "server.secagg" and _accepts(key_, value) and value != key_.default:
                culprits.add(key_.dotted)
    elif secure is True:
        if valid("server.strategy", "name") in ("fedmedian", "fedtrimmedavg", "krum"):
            culprits.add("[server.strategy] name")
        if valid("server.dp", "mode") == "central":
            culprits.add("[server.dp] mode")
        if valid("server", "min_clients") == 1:
            culprits.add("[server] min_clients")
    return "\n".join(top + lines) + "\n", expected, culprits


@fuzz_settings("structured")
@given(documents())
def test_fuzz_structured_documents(document):
    text, expected, culprits = document
    outcome = check_outcome("structured", text.encode("utf-8"))
    if culprits:
        assert isinstance(outcome, ConfigError), f"loaded although {culprits} are wrong:\n{text}"
        assert outcome.key in culprits, (str(outcome), culprits)
        return
    assert not isinstance(outcome, ConfigError), f"{outcome}\n{text}"
    for (table, name), value in expected.items():
        key_ = KEYS_BY_TABLE[table][name]
        loaded = outcome.section(table).values[name]
        if key_.kind == "path":
            assert loaded == os.path.normpath(os.path.join(WORKDIR, os.path.expanduser(value)))
        elif key_.kind == "float":
            assert loaded == float(value)
        else:
            assert loaded == value and type(loaded) is type(value)


# --- 4: command-line overrides ----------------------------------------------------------------

FLAGGED = [k for k in KEYS if k.flag]


@fuzz_settings("overrides")
@given(st.lists(st.tuples(st.sampled_from(FLAGGED),
                          st.one_of(st.text(max_size=12), st.integers(-(2**70), 2**70).map(str),
                                    st.sampled_from(["", "auto", "true", "nan", "1e400", "0x10", " 1", "1.5",
                                                     "127.0.0.1:9092", "[::1]:1", "9" * 5000]))),
                max_size=4))
def test_fuzz_command_line_overrides(flags):
    overrides = {(k.table, k.name): (k.flag, text) for k, text in flags}
    assume("\x00" not in "".join(t for _, t in flags))  # argv cannot carry a NUL
    outcome = check_outcome("overrides", b'[client]\ncid = 1\nserver = "10.0.0.1:9092"\n', overrides)
    if isinstance(outcome, ConfigError):
        assert outcome.key in {k.flag for k, _ in flags}, str(outcome)
