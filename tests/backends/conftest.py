"""Set-up shared by the backend tests, which run several frameworks in one pytest process."""

import importlib.util

import pytest

# triton (imported by torch.optim and torch._dynamo) segfaults when it is first loaded
# after TensorFlow in the same process (torch 2.14 CUDA build, tensorflow-cpu 2.21).
# A board runs one backend per process; these tests run torch and TensorFlow side by
# side, so triton is loaded first, before any test module imports TensorFlow.
if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("triton"):
    import triton  # noqa: F401 - imported for its load order alone


@pytest.fixture(scope="session", autouse=True)
def _backend_settings(request):
    """--backend-threads and --litert-builtin-kernels (tests/conftest.py), for every backend made here."""
    threads = request.config.getoption("--backend-threads")
    builtin = request.config.getoption("--litert-builtin-kernels")
    if threads is None and not builtin:
        yield
        return
    if threads is not None:
        if importlib.util.find_spec("torch"):
            import torch

            torch.set_num_threads(threads)
        if importlib.util.find_spec("tensorflow"):
            from edgefld.backends import tf_backend

            tf_backend._set_threads(threads)
    with pytest.MonkeyPatch.context() as monkeypatch:
        if importlib.util.find_spec("ai_edge_litert"):
            from edgefld.backends import litert_backend

            found = litert_backend._interpreter_class

            def interpreter_class():
                interpreter, runtime = found()
                make = litert_backend._without_default_delegates(interpreter) if builtin else interpreter

                def create(**kwargs):
                    if threads is not None:
                        kwargs["num_threads"] = threads
                    return make(**kwargs)

                return create, runtime

            monkeypatch.setattr(litert_backend, "_interpreter_class", interpreter_class)
        yield
