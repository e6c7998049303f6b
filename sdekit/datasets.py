r"""Planar two-class data sets of the partitioned-integrators paper.

* :func:`spirals` -- interleaved spirals, Eq. (16) of the paper;
* :func:`trig` -- points on either side of a trigonometric curve (our definition of
  the paper's Eq. (17), whose text we do not have; see :func:`trig`);
* :func:`as_tensors` -- numpy arrays to torch tensors.

All return ``X`` of shape (n, 2) (float64) and ``y`` of shape (n,) with values in
{0, 1} (int64), with balanced classes (n // 2 of class 1, the rest class 0), in
random order.

Reference
---------
B. Leimkuhler, T. Matthews and T. Vlaar, "Partitioned integrators for thermodynamic
parameterization of neural networks", Found. Data Sci. 1 (2019) 457-489, Sec. 4.
"""
import math
import numbers

import numpy as np

__all__ = ["spirals", "trig", "as_tensors"]


def _count(n):
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 2:
        raise ValueError(f"n: must be an integer >= 2, got {n!r}")
    return int(n)


def _positive(name, value, allow_zero=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{name}: must be a {'non-negative' if allow_zero else 'positive'} real number, got {value!r}")
    return float(value)


def _rng(seed):
    if isinstance(seed, (np.random.Generator, np.random.SeedSequence)):
        return np.random.default_rng(seed)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer or a numpy Generator, got {seed!r}")
    return np.random.default_rng(int(seed))


def _shuffled(rng, X, y):
    order = rng.permutation(len(y))
    return X[order], y[order]


def spirals(n, turns=2, a=2.0, p=0.5, c=0.02, seed=0):
    r"""Two interleaved spirals (Eq. 16 of Leimkuhler, Matthews & Vlaar).

    For each point :math:`t \sim U[0, 1)` and

    .. math::

        r = a t^p, \qquad \theta = 2\pi b\, t^p, \qquad
        x = \pm (r\cos\theta,\ r\sin\theta) + c\,N(0, I_2),

    with the + sign for class 1 and the - sign (the point reflected through the
    origin) for class 0; b = ``turns``.

    Parameters
    ----------
    n : int
        Number of points (n // 2 of class 1).
    turns : float
        b, the number of turns (2 or 4 in the paper).
    a, p, c : float
        Radius scale, exponent of t (0.5 by default; 1 in the paper's Fig. 9) and
        noise level.
    seed : int or numpy Generator

    Returns
    -------
    X : (n, 2) float64, y : (n,) int64 in {0, 1}
    """
    n = _count(n)
    turns, a, p = _positive("turns", turns), _positive("a", a), _positive("p", p)
    c = _positive("c", c, allow_zero=True)
    rng = _rng(seed)
    s = rng.random(n) ** p
    r, theta = a * s, 2.0 * math.pi * turns * s
    y = np.zeros(n, dtype=np.int64)
    y[: n // 2] = 1
    sign = np.where(y == 1, 1.0, -1.0)
    X = sign[:, None] * np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    X = X + c * rng.standard_normal((n, 2))
    return _shuffled(rng, X, y)


def trig(n, a=3.0, b=2.0, c=0.02, seed=0):
    r"""Points above or below a sine curve: our definition of the paper's Eq. (17).

    The paper's text does not give Eq. (17); we define, with
    :math:`u = (u_1, u_2) \sim U([-1, 1]^2)`,

    .. math::

        y = [\,u_2 > \sin(\pi a u_1)/b\,], \qquad x = u + c\,N(0, I_2),

    so the class boundary is a sine of frequency a (a/2 periods per unit of u_1,
    a periods across the square), amplitude 1/b, and c blurs the boundary (labels
    are assigned before the noise). Points are drawn until each class has its
    share (n // 2 of class 1).

    Parameters
    ----------
    n : int
    a : float
        Frequency of the boundary (3, 6, 10 in the paper's figures).
    b : float
        Inverse amplitude (b >= 1 keeps the curve inside the square).
    c : float
        Noise added to the positions.
    seed : int or numpy Generator

    Returns
    -------
    X : (n, 2) float64, y : (n,) int64 in {0, 1}
    """
    n = _count(n)
    a, b = _positive("a", a), _positive("b", b)
    c = _positive("c", c, allow_zero=True)
    rng = _rng(seed)
    want = {1: n // 2, 0: n - n // 2}
    kept = {0: [], 1: []}
    while any(sum(len(k) for k in kept[cls]) < want[cls] for cls in (0, 1)):
        u = rng.uniform(-1.0, 1.0, size=(2 * n, 2))
        label = (u[:, 1] > np.sin(math.pi * a * u[:, 0]) / b).astype(np.int64)
        for cls in (0, 1):
            kept[cls].append(u[label == cls])
    X = np.concatenate([np.concatenate(kept[1])[: want[1]], np.concatenate(kept[0])[: want[0]]])
    y = np.concatenate([np.ones(want[1], dtype=np.int64), np.zeros(want[0], dtype=np.int64)])
    X = X + c * rng.standard_normal((n, 2))
    return _shuffled(rng, X, y)


def as_tensors(X, y, device=None, dtype=None):
    """``(X, y)`` as torch tensors (``dtype`` default: torch's default float dtype; y as float for BCE)."""
    import torch

    dtype = dtype or torch.get_default_dtype()
    X = np.asarray(X)
    y = np.asarray(y)
    if X.ndim != 2 or y.shape != (X.shape[0],):
        raise ValueError(f"X: expected shapes (n, d) and (n,), got {X.shape} and {y.shape}")
    return (torch.as_tensor(X, dtype=dtype, device=device),
            torch.as_tensor(y, dtype=dtype, device=device))
