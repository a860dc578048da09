from __future__ import annotations

import pytest

from tests.data.real_format_files import learnable_mnist, write_mnist
from tests.e2e.federation import Federation, become_subreaper


@pytest.fixture(scope="session", autouse=True)
def _subreaper():
    become_subreaper()


@pytest.fixture
def federation(tmp_path):
    made: list[Federation] = []

    def make(listen_host: str = "127.0.0.1", client_config: dict | None = None, strategy: dict | None = None,
             subdir: str = "", **server_config) -> Federation:
        """``strategy``: the [server.strategy] table; ``subdir``: a directory of tmp_path of its own (for
        several federations in one test)."""
        root = tmp_path / subdir if subdir else tmp_path
        root.mkdir(exist_ok=True)
        fed = Federation(root, server_config, listen_host=listen_host, client_config=client_config or {},
                         strategy_config=strategy or {})
        made.append(fed)
        return fed

    yield make
    for fed in made:
        fed.teardown()


@pytest.fixture
def mnist_files(tmp_path):
    """The four MNIST IDX files (uncompressed, real format) with learnable content."""
    directory = tmp_path / "mnist-idx"
    directory.mkdir()
    write_mnist(directory, learnable_mnist(1200, 200), gz=False)
    return directory
