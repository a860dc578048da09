"""edgefld.apps.settings: version compatibility and the declared keys."""

from __future__ import annotations

import pytest

from edgefld import __version__
from edgefld.apps import settings
from edgefld.apps.settings import ERROR_NAMES, NODE_CONFIG_KEYS, RUN_CONFIG_DEFAULTS, compatible_versions


@pytest.mark.parametrize(("server", "client"), [
    ("0.1.0", "0.1.0"),
    ("0.1.0", "0.1.7"),
    ("1.2.3", "1.2.0"),
    ("1.2.3", "1.2"),
    ("1.2", "1.2.99"),
    ("1.2.3rc1", "1.2.0"),
    ("1.2.0.dev4", "1.2.5.post1"),
    ("10.20.1", "10.20.2"),
])
def test_same_major_minor_is_compatible(server, client):
    assert compatible_versions(server, client) is True
    assert compatible_versions(client, server) is True


@pytest.mark.parametrize(("server", "client"), [
    ("0.1.0", "0.2.0"),
    ("1.2.3", "2.2.3"),
    ("1.1.0", "1.10.0"),  # compared as numbers' text, not prefixes
    ("1.10.0", "1.1.0"),
    ("1.2.0", "1.20.0"),
    ("1.2.3", "1"),
    ("1.2.3", ""),
    ("1.2.3", "1.3.3"),
    ("0.1.0", "unknown"),
])
def test_different_major_minor_is_incompatible(server, client):
    assert compatible_versions(server, client) is False
    assert compatible_versions(client, server) is False


def test_own_version_is_compatible_with_itself_and_is_the_run_default():
    assert compatible_versions(__version__, __version__)
    assert RUN_CONFIG_DEFAULTS["server-version"] == __version__
    major, minor, *_ = __version__.split(".")
    assert compatible_versions(__version__, f"{major}.{minor}.999")
    assert not compatible_versions(__version__, f"{major}.{int(minor) + 1}.0")


def test_run_config_defaults_are_flower_scalars():
    # Flower's run config holds bool, int, float and str; anything else cannot go into the FAB.
    for key, value in RUN_CONFIG_DEFAULTS.items():
        assert isinstance(value, (bool, int, float, str)), key
        assert key == key.lower() and " " not in key and '"' not in key, key


def test_error_codes_are_distinct_and_named():
    codes = [value for name, value in vars(settings).items() if name.startswith("ERROR_") and isinstance(value, int)]
    assert sorted(codes) == sorted(ERROR_NAMES)
    assert len(set(ERROR_NAMES.values())) == len(ERROR_NAMES)
    assert all(code >= 4000 for code in codes)  # above Flower's own small codes
    assert len(set(NODE_CONFIG_KEYS)) == len(NODE_CONFIG_KEYS)
