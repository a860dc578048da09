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

    def make(listen_host: str = "127.0.0.1", client_config: dict | None = None, **server_config) -> Federation:
        fed = Federation(tmp_path, server_config, listen_host=listen_host, client_config=client_config or {})
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
