"""Valid configurations: defaults, precedence, paths, and the shipped file."""

from __future__ import annotations

import os
import tomllib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgefld.config import load_config, resolve_config_path
from edgefld.config.schema import KEYS, parse_host_port
from edgefld.config.template import default_config_text
from edgefld.errors import ConfigError
from tests.conftest import REPO


def write(tmp_path, text: str):
    path = tmp_path / "edgefl.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_seed_values():
    config = load_config(None)
    assert config.server.num_partitions == 50
    assert config.server.rounds == 3
    assert config.server.min_clients == 2
    assert config.server.sample_fraction == 1.0
    assert config.server.local_epochs == 3
    assert config.server.batch_size == 16
    assert config.client.backend == "auto"
    assert config.client.cid is None and config.client.server is None


def test_full_client_file(tmp_path):
    path = write(tmp_path, '[client]\ncid = 7\nserver = "edge-server.local:9092"\nbackend = "torch"\n'
                           'data_dir = "/srv/data"\n\n[log]\nlevel = "debug"\n')
    config = load_config(path)
    assert (config.client.cid, config.client.server, config.client.backend) == (7, "edge-server.local:9092", "torch")
    assert config.client.data_dir == "/srv/data"
    assert config.log.level == "debug"
    assert ("client", "cid") in config.present and ("client", "state_dir") not in config.present
    assert config.origins[("client", "cid")] == f"{path}:2"


def test_int_is_accepted_for_a_float_key(tmp_path):
    config = load_config(write(tmp_path, "[server]\nsample_fraction = 1\n"))
    assert config.server.sample_fraction == 1.0 and isinstance(config.server.sample_fraction, float)


def test_relative_paths_resolve_against_the_file(tmp_path):
    config = load_config(write(tmp_path, '[client]\ncid = 1\nserver = "a:1"\ndata_dir = "data"\n'))
    assert config.client.data_dir == str(tmp_path / "data")


def test_flags_override_the_file(tmp_path):
    path = write(tmp_path, '[client]\ncid = 1\nserver = "a:1"\n')
    config = load_config(path, {("client", "cid"): ("--cid", "3"), ("client", "server"): ("--server", "10.0.0.5:9092")})
    assert config.client.cid == 3 and config.client.server == "10.0.0.5:9092"
    assert config.origins[("client", "cid")] == "--cid"


def test_tls_switches_and_optional_paths(tmp_path):
    config = load_config(None)
    assert (config.server.tls, config.server.node_auth, config.client.tls) == ("auto", "auto", "auto")
    assert config.client.ca is None and config.client.key is None
    path = write(tmp_path, '[client]\ncid = 1\nserver = "a:1"\ntls = true\nca = "pki/ca.crt"\n'
                           '[server]\ntls = false\nnode_auth = "auto"\n')
    config = load_config(path, {("server", "node_auth"): ("--node-auth", "false"),
                                ("client", "key"): ("--key", "k/client-{cid}.key")})
    assert (config.client.tls, config.server.tls, config.server.node_auth) == (True, False, False)
    assert config.client.ca == str(tmp_path / "pki" / "ca.crt")
    assert config.client.key == os.path.abspath("k/client-{cid}.key")


def test_utf8_bom_is_tolerated(tmp_path):
    path = tmp_path / "edgefl.toml"
    path.write_bytes(b'\xef\xbb\xbf[server]\nrounds = 5\n')
    assert load_config(path).server.rounds == 5


@pytest.mark.parametrize(
    "text, host, port",
    [("10.0.0.5:9092", "10.0.0.5", 9092), ("[::1]:80", "::1", 80), ("edge-1.example.org:1", "edge-1.example.org", 1),
     ("localhost:65535", "localhost", 65535)],
)
def test_host_port_forms(text, host, port):
    assert parse_host_port(text) == (host, port)


def test_config_path_precedence(monkeypatch):
    assert resolve_config_path(None, {}) == "/etc/edgefl.toml"
    assert resolve_config_path(None, {"EDGEFL_CONFIG": "/e.toml"}) == "/e.toml"
    assert resolve_config_path("/flag.toml", {"EDGEFL_CONFIG": "/e.toml"}) == "/flag.toml"


def test_edgefl_config_env_is_used_by_the_cli(tmp_path, monkeypatch, edgefl_cli):
    path = write(tmp_path, "[server]\nrounds = 0\n")
    monkeypatch.setenv("EDGEFL_CONFIG", str(path))
    code, _, err = edgefl_cli("check-config")
    assert code == 78 and f"{path}:2: [server] rounds" in err


def test_shipped_file_is_the_generated_template():
    shipped = (REPO / "etc" / "edgefl.toml").read_text(encoding="utf-8")
    assert shipped == default_config_text(), "regenerate with `make default-config`"


def test_shipped_file_documents_every_key_with_its_default():
    shipped = (REPO / "etc" / "edgefl.toml").read_text(encoding="utf-8")
    for key in KEYS:
        assert f"#[{key.table}]" in shipped
        value = key.example if key.required or key.optional else key.default
        table_text = shipped.split(f"#[{key.table}]", 1)[1].split("\n#[", 1)[0]
        line = next(text for text in table_text.splitlines() if text.startswith(f"#{key.name} = "))
        # Uncommenting the line gives valid TOML holding the documented value.
        assert tomllib.loads(line[1:])[key.name] == value


def test_shipped_file_is_valid_and_uncommented_it_is_valid_too(tmp_path, edgefl_cli):
    code, out, _ = edgefl_cli("check-config", str(REPO / "etc" / "edgefl.toml"))
    assert code == 0 and out.endswith(": OK\n")
    # Uncomment every table and key: the documented defaults themselves must validate.
    lines = [line[1:] if line.startswith("#[") or (line.startswith("#") and " = " in line and not line.startswith("# "))
             else line for line in default_config_text().splitlines()]
    config = load_config(write(tmp_path, "\n".join(lines) + "\n"))
    assert config.client.cid == 0 and config.server.listen == "0.0.0.0:9092"


def test_default_config_command_prints_the_template(edgefl_cli):
    code, out, _ = edgefl_cli("default-config")
    assert code == 0 and out == default_config_text()


toml_scalars = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=20).map(lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'),
    st.booleans().map(lambda b: "true" if b else "false"),
    st.just("[1, 2]"),
    st.just("{a = 1}"),
)
names = st.sampled_from([k.name for k in KEYS] + ["cdi", "x", "server.listen"])
tables = st.sampled_from(["client", "server", "log", "clinet", ""])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(tables, names, toml_scalars), max_size=8))
def test_fuzz_structured_configs_never_escape_as_other_errors(tmp_path_factory, entries):
    text = ""
    for table, name, value in entries:
        text += (f"[{table}]\n" if table else "") + f"{name} = {value}\n"
    path = tmp_path_factory.mktemp("fuzz") / "edgefl.toml"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_raw_bytes_never_escape_as_other_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "edgefl.toml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as exc:
        assert "\n" not in str(exc)


def test_a_flag_supplies_a_required_key_the_file_table_lacks(tmp_path):
    # edgefl-client@.service: the instances share one [client] table and pass --cid %i.
    path = tmp_path / "edgefl.toml"
    path.write_text('[client]\nserver = "127.0.0.1:9"\n')
    config = load_config(path, {("client", "cid"): ("--cid", "3")})
    config.require("client", ("cid", "server"))
    assert config.client.cid == 3 and config.origins[("client", "cid")] == "--cid"
    with pytest.raises(ConfigError, match=r"\[client\] cid: missing required key in \[client\]"):
        load_config(path, {("client", "server"): ("--server", "127.0.0.1:10")})
