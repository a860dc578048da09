"""edgefl configuration: /etc/edgefl.toml, validated against one schema.

``schema`` owns every key, its type, range and default; ``loader`` reads a
file, applies command-line overrides and turns every mistake into a one-line
``ConfigError`` (exit 78).
"""

from edgefld.config.loader import DEFAULT_CONFIG_PATH, Config, load_config, resolve_config_path

__all__ = ["DEFAULT_CONFIG_PATH", "Config", "load_config", "resolve_config_path"]
