"""edgefld.pki and `edgefl pki` / `edgefl enrol`: files, modes, checks, one-line errors."""

from __future__ import annotations

import shutil
import stat
import subprocess

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edgefld import pki
from edgefld.cli.main import main as edgefl_main


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def fleet(tmp_path, capsys):
    directory = tmp_path / "pki"
    assert edgefl_main(["pki", "init-ca", "--dir", str(directory)]) == 0
    assert edgefl_main(["pki", "server-cert", "--dir", str(directory), "--host", "10.0.0.5",
                        "--host", "server.lan"]) == 0
    assert edgefl_main(["pki", "client-key", "--dir", str(directory), "--cid", "3"]) == 0
    capsys.readouterr()
    return directory


def test_files_and_modes(fleet):
    assert {p.name for p in fleet.iterdir()} == {"ca.crt", "ca.key", "server.crt", "server.key",
                                                 "client-3.key", "client-3.pub"}
    for private in ("ca.key", "server.key", "client-3.key"):
        assert _mode(fleet / private) == 0o600
    for public in ("ca.crt", "server.crt", "client-3.pub"):
        assert _mode(fleet / public) == 0o644
    assert not [p for p in fleet.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_server_certificate_is_signed_by_the_ca_and_names_its_hosts(fleet):
    ca = x509.load_pem_x509_certificate((fleet / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((fleet / "server.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert names.get_values_for_type(x509.DNSName) == ["server.lan"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_node_key_is_what_flowers_supernode_loads(fleet):
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    key = load_ssh_private_key((fleet / "client-3.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1"
    node = pki.read_node_public_key(fleet / "client-3.pub")
    assert node.name == "client-3"
    assert pki.node_key_fingerprint(fleet / "client-3.key") == node.fingerprint
    if shutil.which("ssh-keygen"):
        shown = subprocess.run(["ssh-keygen", "-lf", str(fleet / "client-3.pub")], capture_output=True, text=True)
        assert node.fingerprint in shown.stdout


def test_existing_files_are_not_replaced_without_force(fleet, capsys):
    before = (fleet / "ca.key").read_bytes()
    assert edgefl_main(["pki", "init-ca", "--dir", str(fleet)]) == 1
    assert capsys.readouterr().err == (f"edgefl: {fleet / 'ca.key'} already exists; pass --force to replace it "
                                       "(whatever relies on the old one stops working)\n")
    assert (fleet / "ca.key").read_bytes() == before
    assert edgefl_main(["pki", "client-key", "--dir", str(fleet), "--cid", "3", "--force"]) == 0


def test_server_cert_without_a_ca_is_one_line(tmp_path, capsys):
    assert edgefl_main(["pki", "server-cert", "--dir", str(tmp_path), "--host", "h"]) == 1
    assert capsys.readouterr().err == f"edgefl: the CA key {tmp_path / 'ca.key'} does not exist\n"


def test_enrol_copies_the_key_and_refuses_conflicts(fleet, tmp_path, capsys):
    config = tmp_path / "edgefl.toml"
    config.write_text(f'[server]\nenrolled_keys = "{tmp_path / "enrolled"}"\n')
    assert edgefl_main(["enrol", str(fleet / "client-3.pub"), "--config", str(config)]) == 0
    assert "enrolled client-3 (SHA256:" in capsys.readouterr().out
    assert (tmp_path / "enrolled" / "client-3.pub").read_bytes() == (fleet / "client-3.pub").read_bytes()
    # The same key under a second name, or another key under a taken name: refused.
    assert edgefl_main(["enrol", str(fleet / "client-3.pub"), "--name", "again", "--config", str(config)]) == 1
    assert "is already enrolled as client-3" in capsys.readouterr().err
    other = tmp_path / "other.key"
    assert edgefl_main(["pki", "client-key", "--out", str(other)]) == 0
    assert edgefl_main(["enrol", str(tmp_path / "other.pub"), "--name", "client-3", "--config", str(config)]) == 1
    assert "pass --force to replace it" in capsys.readouterr().err
    assert edgefl_main(["enrol", str(tmp_path / "other.pub"), "--name", "../x", "--config", str(config)]) == 1
    assert 'node name "../x" must be' in capsys.readouterr().err
    keys, problems = pki.enrolled_keys(tmp_path / "enrolled")
    assert [k.name for k in keys] == ["client-3"] and problems == []


def test_enrol_refuses_what_flower_cannot_use(tmp_path, capsys):
    rsa = tmp_path / "rsa.pub"
    rsa.write_text("ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDZ board\n")
    assert edgefl_main(["enrol", str(rsa), "--config", str(tmp_path / "none.toml")]) == 78  # named config missing
    capsys.readouterr()
    config = tmp_path / "edgefl.toml"
    config.write_text(f'[server]\nenrolled_keys = "{tmp_path / "enrolled"}"\n')
    assert edgefl_main(["enrol", str(rsa), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"edgefl: {rsa} is not") and err.count("\n") == 1
    assert not (tmp_path / "enrolled").exists()
