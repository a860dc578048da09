from __future__ import annotations

import numpy as np
import pytest

from tests.data.real_format_files import Expected, write_mnist
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


def learnable_mnist(train: int, test: int, seed: int = 0) -> Expected:
    """MNIST-shaped images whose class shows as a bright block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)

    def make(count: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, 10, count).astype(np.uint8)
        images = rng.integers(0, 60, (count, 28, 28), dtype=np.uint8)
        for i, label in enumerate(labels):
            row, col = divmod(int(label), 4)
            images[i, 2 + row * 8 : 8 + row * 8, 2 + col * 6 : 7 + col * 6] = 230
        return images[..., None], labels

    train_x, train_y = make(train)
    test_x, test_y = make(test)
    return Expected(train_x, train_y, test_x, test_y)


@pytest.fixture
def mnist_files(tmp_path):
    """The four MNIST IDX files (uncompressed, real format) with learnable content."""
    directory = tmp_path / "mnist-idx"
    directory.mkdir()
    write_mnist(directory, learnable_mnist(1200, 200), gz=False)
    return directory
