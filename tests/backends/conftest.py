"""Set-up shared by the backend tests, which run several frameworks in one pytest process."""

import importlib.util

# triton (imported by torch.optim and torch._dynamo) segfaults when it is first loaded
# after TensorFlow in the same process (torch 2.14 CUDA build, tensorflow-cpu 2.21).
# A board runs one backend per process; these tests run torch and TensorFlow side by
# side, so triton is loaded first, before any test module imports TensorFlow.
if importlib.util.find_spec("tensorflow") and importlib.util.find_spec("triton"):
    import triton  # noqa: F401
