"""Compiled kernels generated from a Scheme (numba CPU and numba-cuda). Placeholder
until the kernels land: only the numpy reference backend is available."""


def default_backend():
    return "numpy"


def _unavailable(*args, **kwargs):
    raise ValueError("backend: only 'numpy' is available in this version")


simulate = ensemble = _unavailable
