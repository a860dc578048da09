"""The `edgefl` command: modules here parse arguments and hand off, nothing more."""
