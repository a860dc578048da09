"""Every kind of invalid configuration exits 78 with one line naming file, line, key and what is allowed."""

from __future__ import annotations

import pytest

VALID_CLIENT = b'[client]\ncid = 3\nserver = "10.0.0.5:9092"\n'

# (id, file bytes, what the one line must contain: key, problem / allowed, line)
BAD_CONFIGS: list[tuple[str, bytes, tuple[str, ...], int | None]] = [
    ("negative-cid", b'[client]\ncid = -1\nserver = "a:1"\n', ("[client] cid", ">= 0", "got -1"), 2),
    ("cid-as-string", b'[client]\ncid = "3"\nserver = "a:1"\n', ("[client] cid", "integer", 'string "3"'), 2),
    ("cid-as-float", b'[client]\ncid = 3.0\nserver = "a:1"\n', ("[client] cid", "integer", "float 3.0"), 2),
    ("cid-as-bool", b'[client]\ncid = true\nserver = "a:1"\n', ("[client] cid", "integer", "boolean true"), 2),
    ("cid-huge", b'[client]\ncid = 9223372036854775807\nserver = "a:1"\n', ("[client] cid", "<= 1000000"), 2),
    ("typo-cdi", b'[client]\ncdi = 3\nserver = "a:1"\n', ("[client] cdi", 'did you mean "cid"', "keys allowed"), 2),
    ("typo-sever", b'[client]\ncid = 3\nsever = "a:1"\n', ("[client] sever", 'did you mean "server"'), 3),
    ("key-in-wrong-table", b'[server]\ncid = 3\n', ("[server] cid", "belongs under [client]"), 2),
    ("unknown-table", b'[clinet]\ncid = 3\n', ("[clinet]", 'did you mean "client"', "tables allowed"), 1),
    ("top-level-key", b'cid = 3\n', ("cid", "belongs under [client]"), 1),
    ("table-is-a-value", b'server = "a:1"\n', ("server", "must be a table"), 1),
    ("missing-server", b'[client]\ncid = 3\n', ("[client] server", "missing required key"), 1),
    ("missing-cid", b'[client]\nserver = "a:1"\n', ("[client] cid", "missing required key"), 1),
    ("server-no-port", b'[client]\ncid = 3\nserver = "10.0.0.5"\n',
     ("[client] server", "port is missing", "host:port"), 3),
    ("server-port-0", b'[client]\ncid = 3\nserver = "h:0"\n', ("[client] server", "outside 1..65535"), 3),
    ("server-port-huge", b'[client]\ncid = 3\nserver = "h:70000"\n', ("[client] server", "outside 1..65535"), 3),
    ("server-port-text", b'[client]\ncid = 3\nserver = "h:http"\n', ("[client] server", "not a number"), 3),
    ("server-bad-ipv4", b'[client]\ncid = 3\nserver = "10.0.0.300:1"\n', ("[client] server", "not an IPv4"), 3),
    ("server-bare-ipv6", b'[client]\ncid = 3\nserver = "::1:9092"\n', ("[client] server", "[addr]:port"), 3),
    ("server-bad-hostname", b'[client]\ncid = 3\nserver = "bad_host!:1"\n',
     ("[client] server", "not a valid host name"), 3),
    ("server-as-int", b'[client]\ncid = 3\nserver = 9092\n', ("[client] server", "host:port", "integer 9092"), 3),
    ("backend-unknown", b'[client]\ncid = 3\nserver = "a:1"\nbackend = "jax"\n',
     ("[client] backend", '"litert"', '"jax"'), 4),
    ("data-dir-empty", b'[client]\ncid = 3\nserver = "a:1"\ndata_dir = ""\n', ("[client] data_dir", "path"), 4),
    ("listen-bad", b'[server]\nlisten = "0.0.0.0"\n', ("[server] listen", "port is missing"), 2),
    ("task-unknown", b'[server]\ntask = "imagenet"\n', ("[server] task", '"cifar10"', '"imagenet"'), 2),
    ("partitions-zero", b'[server]\nnum_partitions = 0\n', ("[server] num_partitions", ">= 1"), 2),
    ("rounds-negative", b'[server]\nrounds = -3\n', ("[server] rounds", ">= 1"), 2),
    ("rounds-bignum", b'[server]\nrounds = 99999999999999999999999999\n', ("[server] rounds", "<= 1000000"), 2),
    ("min-clients-zero", b'[server]\nmin_clients = 0\n', ("[server] min_clients", ">= 1"), 2),
    ("fraction-zero", b'[server]\nsample_fraction = 0.0\n', ("[server] sample_fraction", "> 0 and <= 1"), 2),
    ("fraction-above-one", b'[server]\nsample_fraction = 1.01\n', ("[server] sample_fraction", "<= 1"), 2),
    ("fraction-nan", b'[server]\nsample_fraction = nan\n', ("[server] sample_fraction", "nan"), 2),
    ("fraction-inf", b'[server]\nsample_fraction = inf\n', ("[server] sample_fraction", "inf"), 2),
    ("fraction-string", b'[server]\nsample_fraction = "0.5"\n', ("[server] sample_fraction", "number"), 2),
    ("epochs-zero", b'[server]\nlocal_epochs = 0\n', ("[server] local_epochs", ">= 1"), 2),
    ("batch-array", b'[server]\nbatch_size = [16]\n', ("[server] batch_size", "integer", "array"), 2),
    ("tls-string", b'[server]\ntls = "yes"\n', ("[server] tls", 'true, false or "auto"', 'string "yes"'), 2),
    ("tls-int", b'[client]\ncid = 3\nserver = "a:1"\ntls = 1\n', ("[client] tls", '"auto"', "integer 1"), 4),
    ("node-auth-string", b'[server]\nnode_auth = "on"\n', ("[server] node_auth", '"auto"', 'string "on"'), 2),
    ("ca-empty", b'[client]\ncid = 3\nserver = "a:1"\nca = ""\n', ("[client] ca", "path"), 4),
    ("log-level", b'[log]\nlevel = "verbose"\n', ("[log] level", '"debug"', '"verbose"'), 2),
    ("duplicate-key", b'[server]\nrounds = 3\nrounds = 4\n', ("[server] rounds", "only once"), 3),
    ("duplicate-table", b'[server]\nrounds = 3\n[server]\n', ("[server]", "only once"), 3),
    ("syntax-unclosed-table", b'[server\nrounds = 3\n', ("TOML syntax error", "]"), 1),
    ("syntax-missing-value", b'[server]\nrounds =\n', ("[server] rounds", "TOML syntax error"), 2),
    ("syntax-unterminated-string", b'[client]\ncid = 1\nserver = "a:1\n', ("[client] server", "TOML syntax error"), 3),
    ("not-utf8-latin1", b'[client]\n# caf\xe9\ncid = 1\n', ("not valid UTF-8", "0xe9"), 2),
    ("utf16-with-bom", "[client]\ncid = 1\n".encode("utf-16"), ("not valid UTF-8",), 1),
    ("nul-byte", b'[client]\ncid = 1\x00\n', ("NUL",), 2),
    # Secure aggregation: what it cannot go with is named, with what is allowed.
    ("secagg-with-krum", b'[server]\nsecure_aggregation = true\n[server.strategy]\nname = "krum"\n',
     ("[server.strategy] name", '"krum" needs each board', '"fedavg"', '"fedadagrad"'), 4),
    ("secagg-with-fedmedian", b'[server]\nsecure_aggregation = true\n[server.strategy]\nname = "fedmedian"\n',
     ("[server.strategy] name", "secure aggregation hides"), 4),
    ("secagg-with-central-dp", b'[server]\nsecure_aggregation = true\n[server.dp]\nmode = "central"\n',
     ("[server.dp] mode", "secure aggregation hides", 'use "local"', '"off"'), 4),
    ("secagg-one-client", b'[server]\nsecure_aggregation = true\nmin_clients = 1\n',
     ("[server] min_clients", "at least 2 boards"), 3),
    ("secagg-key-while-off", b'[server.secagg]\nmax_weight = 500.0\n',
     ("[server.secagg] max_weight", "only with [server] secure_aggregation = true"), 2),
    ("secagg-two-shares", b'[server]\nsecure_aggregation = true\n[server.secagg]\nnum_shares = 2\n',
     ("[server.secagg] num_shares", "0 (every board of the round) or at least 3", "got 2"), 4),
    ("secagg-threshold-zero", b'[server]\nsecure_aggregation = true\n[server.secagg]\nreconstruction_threshold = 0.0\n',
     ("[server.secagg] reconstruction_threshold", "> 0 and <= 1"), 4),
    ("secagg-as-string", b'[server]\nsecure_aggregation = "yes"\n',
     ("[server] secure_aggregation", "true or false", 'string "yes"'), 2),
    ("secagg-as-key", b'[server]\nsecagg = true\n', ("[server] secagg", "it is a table: [server.secagg]"), 2),
]


@pytest.mark.parametrize("name, content, expected, line", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_exits_78_with_one_line(tmp_path, edgefl_cli, name, content, expected, line):
    path = tmp_path / "edgefl.toml"
    path.write_bytes(content)
    code, out, err = edgefl_cli("check-config", str(path))
    assert code == 78, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    message = lines[0]
    where = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(f"edgefl: {where}"), message
    for fragment in expected:
        assert fragment in message, (fragment, message)


def test_corpus_has_at_least_40_distinct_cases():
    assert len({c[0] for c in BAD_CONFIGS}) == len(BAD_CONFIGS) >= 40


def _check_config_as_unprivileged(path) -> tuple[int, str]:
    """`edgefl check-config PATH` as an unprivileged user: (exit code, stderr)."""
    import io
    import sys

    from edgefld.cli.main import main
    from tests.unprivileged import run_as_nobody

    def check() -> str:
        sys.stderr = io.StringIO()
        code = main(["check-config", str(path)])
        return f"{code}\n{sys.stderr.getvalue()}"

    code, _, err = run_as_nobody(check).partition("\n")
    return int(code), err


def test_unreadable_file_exits_78(tmp_path):
    tmp_path.chmod(0o755)
    path = tmp_path / "edgefl.toml"
    path.write_bytes(VALID_CLIENT)
    path.chmod(0)
    code, err = _check_config_as_unprivileged(path)
    assert code == 78
    assert err == (f"edgefl: {path}: permission denied; it must be readable by the user running edgefl "
                   "(e.g. the edgefl service user)\n")


@pytest.mark.parametrize("kind", ["directory", "missing", "too-large"])
def test_unusable_file_exits_78(tmp_path, edgefl_cli, kind):
    path = tmp_path / "edgefl.toml"
    if kind == "directory":
        path.mkdir()
        expected = "is a directory"
    elif kind == "missing":
        expected = "file not found"
    else:
        path.write_bytes(b"# " + b"x" * (1 << 20) + b"\n")
        expected = "larger than"
    code, out, err = edgefl_cli("check-config", str(path))
    assert code == 78
    assert len(err.splitlines()) == 1 and expected in err, err


def test_client_and_server_refuse_bad_config_like_check_config(tmp_path, edgefl_cli):
    path = tmp_path / "edgefl.toml"
    path.write_bytes(b'[client]\ncid = -1\nserver = "a:1"\n')
    for command in ("client", "server"):
        code, _, err = edgefl_cli(command, "--config", str(path))
        assert code == 78
        assert err.strip() == f"edgefl: {path}:2: [client] cid: must be an integer >= 0 and <= 1000000, got -1"


def test_client_requires_cid_and_server(tmp_path, edgefl_cli):
    path = tmp_path / "edgefl.toml"
    path.write_bytes(b'[server]\nrounds = 2\n')
    code, _, err = edgefl_cli("client", "--config", str(path))
    assert code == 78
    assert "[client] cid: missing required key" in err and "--cid" in err


@pytest.mark.parametrize(
    "flag, value, expected",
    [
        ("--cid", "-4", "edgefl: --cid: must be an integer >= 0 and <= 1000000, got -4"),
        ("--cid", "three", 'edgefl: --cid: must be an integer >= 0 and <= 1000000, got "three"'),
        ("--server", "nohost", "edgefl: --server: \"nohost\" is not a valid address: the port is missing"),
        ("--backend", "jax", "edgefl: --backend: must be one of"),
    ],
)
def test_bad_flag_names_the_flag(tmp_path, edgefl_cli, flag, value, expected):
    path = tmp_path / "edgefl.toml"
    path.write_bytes(VALID_CLIENT)
    code, _, err = edgefl_cli("client", "--config", str(path), flag, value)
    assert code == 78
    assert err.startswith(expected) and len(err.splitlines()) == 1, err
