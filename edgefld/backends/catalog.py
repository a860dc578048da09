"""Which backends exist and how to tell, without importing them, that one is installed.

The one list of backends: the config's choices ([client] backend), the modules
``edgefld.backends.base`` loads and the server's choice of an evaluation backend
derive from it. Its order is the order of preference where nothing else decides.

``importlib.util.find_spec`` on a top-level package reads the file system only:
asking whether torch is installed must not cost a 512 MB board the ~300 MB
that importing it would.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass


@dataclass(frozen=True)
class BackendSpec:
    name: str
    # Any one of these top-level modules makes the backend usable.
    probe_modules: tuple[str, ...]
    extra: str  # how to install it, as a Debian package and as a pip extra, for messages
    module: str  # edgefl's module holding ``create_backend(device, threads) -> Backend``; imported only when chosen


BACKENDS: dict[str, BackendSpec] = {
    spec.name: spec
    for spec in (
        BackendSpec("torch", ("torch",),
                    "edgefl-backend-torch (pip: edgefl[torch]; on a Jetson, NVIDIA's JetPack torch)",
                    "edgefld.backends.torch_backend"),
        BackendSpec("tensorflow", ("tensorflow",),
                    "edgefl[tensorflow] (tensorflow-cpu on x86_64; on a Jetson NVIDIA's l4t TensorFlow)",
                    "edgefld.backends.tf_backend"),
        BackendSpec("litert", ("ai_edge_litert", "tflite_runtime"),
                    "edgefl-backend-litert (pip: edgefl[litert])",
                    "edgefld.backends.litert_backend"),
    )
}


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed_backends() -> frozenset[str]:
    return frozenset(
        name for name, spec in BACKENDS.items() if any(_module_available(m) for m in spec.probe_modules)
    )


def first_installed() -> str | None:
    """The first backend of the list that is installed, or None."""
    installed = installed_backends()
    return next((name for name in BACKENDS if name in installed), None)
