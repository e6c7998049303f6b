"""Argument checks: each bad input is a ValueError naming the argument and the value."""
import math
import numbers

import numpy as np


def overflow_bound(dtype):
    """Largest |x| of a live path's q, p or xi: (largest float)^(1/4) / 100.

    1.16e75 in float64, 1.36e7 in float32. The standard errors of second moments use
    fourth powers of the state; below this bound those stay finite even summed over
    10^8 paths, so a path beyond it counts as diverged (its averages would be inf)
    rather than being reported as a finite state with infinite moments.
    """
    return float(np.finfo(dtype).max) ** 0.25 / 100.0


def shown(value):
    """``value`` as a message shows it: numpy scalars as Python numbers (``0.3``, not
    ``np.float64(0.3)``), 0-d arrays as their item (``-1.0``, not ``array(-1.)``), anything
    else as its repr."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    elif isinstance(value, np.generic):
        value = value.item()
    return repr(value)


def dtype_name(name, value, options):
    """The name of the floating dtype ``value`` (a string such as "float32" or "f4", a numpy
    type such as np.float32, or a np.dtype) if it is one of ``options``."""
    try:
        got = None if value is None or isinstance(value, bool) else np.dtype(value).name
    except (TypeError, ValueError):
        got = None
    if got not in options:
        raise ValueError(f"{name}: must be one of {list(options)} (a name, numpy type or np.dtype), "
                         f"got {shown(value)}")
    return got


class DivergenceError(FloatingPointError):
    """A run produced non-finite values (or exceeded a bound).

    Attributes
    ----------
    step : int
        The step (1-based count of completed steps) at which it was detected.
    path : int or None
        The first failing path of an ensemble (None for a single trajectory).
    """

    def __init__(self, message, step, path=None):
        super().__init__(message)
        self.step, self.path = step, path


def real(name, value, *, low=None, low_open=False, allow_inf=False, allow_none=False):
    """A finite real number (or +inf with ``allow_inf``), optionally bounded below (``low``,
    open or closed)."""
    if value is None and allow_none:
        return None
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value.item()  # a 0-d array of a real number
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a real number, got {shown(value)}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value!r}")
    return value


def integer(name, value, *, low=0):
    """An integer >= low (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name}: must be an integer, got {shown(value)}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {shown(value)}")
    return int(value)


def finite_array(name, value, *, ndim=None, dtype=np.float64):
    """A finite real array (copied), with the given number of dimensions if set."""
    # built only when raised: repr of a large array is most of a passing call's cost
    bad = lambda: ValueError(f"{name}: must be an array of real numbers, got {shown(value)}")
    try:
        raw = np.asarray(value)
        # refuse what numpy would coerce silently: strings ("1.0"), complex (drops the
        # imaginary part), booleans, and objects that are not real numbers
        if raw.dtype.kind == "O":
            if not all(isinstance(x, numbers.Real) and not isinstance(x, bool) for x in raw.reshape(-1)):
                raise bad()
        elif raw.dtype.kind not in "iuf":
            raise bad()
        arr = np.array(raw, dtype=dtype)
    except (TypeError, ValueError):
        raise bad() from None
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name}: must have {ndim} dimension(s), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name}: must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: must be finite, got {shown(value)}")
    return arr


def as_positive_vector(name, value, dim):
    """A positive finite vector of length ``dim`` (a scalar is broadcast)."""
    arr = finite_array(name, value)
    if arr.ndim == 0 or arr.shape == (1,):
        arr = np.full(dim, float(arr.reshape(())) if arr.ndim == 0 else float(arr[0]))
    if arr.shape != (dim,):
        raise ValueError(f"{name}: must be a scalar or have shape ({dim},), got shape {arr.shape}")
    if np.any(arr <= 0):
        raise ValueError(f"{name}: must be positive, got {shown(value)}")
    return arr


def state_array(name, value, dim, n_paths=None, dtype=np.float64):
    """Initial q or p: shape (dim,) [broadcast to the paths] or (n_paths, dim)."""
    arr = finite_array(name, value, dtype=dtype)
    if arr.ndim == 0 and dim == 1:
        arr = arr.reshape(1)
    if n_paths is None:
        if arr.shape != (dim,):
            raise ValueError(f"{name}: must have shape ({dim},), got shape {arr.shape}")
        return arr
    if arr.shape == (dim,):
        return np.broadcast_to(arr, (n_paths, dim)).copy()
    if arr.shape != (n_paths, dim):
        raise ValueError(f"{name}: must have shape ({dim},) or ({n_paths}, {dim}), got shape {arr.shape}")
    return arr


def boolean(name, value):
    """``value`` if it is True or False (numpy bools too), else a ValueError naming ``name``."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name}: must be True or False, got {shown(value)}")
    return bool(value)


def choice(name, value, options):
    if value not in options:
        raise ValueError(f"{name}: must be one of {list(options)}, got {shown(value)}")
    return value
