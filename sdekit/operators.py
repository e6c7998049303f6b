r"""The letters: exact flows of the pieces of the Langevin SDE, as plain arithmetic.

Each function is the exact solution, over a time ``delta``, of one piece of

.. math::

    dq = M^{-1} p\,dt, \qquad
    dp = F(q)\,dt - (\gamma + \xi) p\,dt + \sigma M^{1/2} dW, \qquad
    d\xi = \varepsilon (p^T M^{-1} p - N k_B T)\,dt,

with :math:`\sigma = \sqrt{2\gamma k_B T}` unless a driving noise
:math:`\sigma_A` is given (Leimkuhler & Matthews, *Molecular Dynamics*, Springer
2015, ch. 7; Leimkuhler & Shang, SIAM J. Sci. Comput. 38, 2016, for D).

The bodies use only arithmetic and the four names ``exp``, ``expm1``, ``sqrt`` and
``log``. They are the single definition every backend runs: numpy arrays call
them as they are, numba kernels compile them, and :func:`bind` gives copies whose
``exp``/``expm1``/``sqrt``/``log`` are another library's (``math`` for CUDA device code,
``torch`` for tensors), so no backend carries a second copy of the mathematics.
"""
import math
import types

import numpy as np

exp = np.exp
expm1 = np.expm1
sqrt = np.sqrt
log = np.log


def drift(q, p, delta, inv_mass):
    r"""A: :math:`q \leftarrow q + \delta M^{-1} p` (positions move; the force is stale)."""
    return q + delta * inv_mass * p


def kick(p, force, delta):
    r"""B: :math:`p \leftarrow p + \delta F(q)`, with :math:`F = -\nabla U`."""
    return p + delta * force


def ou_coefficients(friction, delta, sigma):
    r"""Coefficients of the exact Ornstein–Uhlenbeck flow over ``delta``.

    For :math:`dp = -G p\,dt + \sigma\,dW` with :math:`G` = ``friction``:

    .. math::

        c = e^{-G\delta}, \qquad
        s = \sigma \sqrt{\frac{1 - c^2}{2G}} = \sigma\sqrt{\delta\,\varphi(2G\delta)},
        \qquad \varphi(x) = \frac{1 - e^{-x}}{x},\ \varphi(0) = 1.

    ``G`` may be zero or negative (an adaptive thermostat's :math:`\gamma + \xi`);
    the limit :math:`G \to 0` gives :math:`s = \sigma\sqrt{\delta}`. The branch is
    written as arithmetic (``zero`` is 1 where :math:`x = 0`) so that the same text
    runs on scalars, arrays and tensors.
    """
    x = 2.0 * friction * delta
    zero = x == 0.0
    phi = -expm1(-x) / (x + zero) + zero
    return exp(-friction * delta), sigma * sqrt(delta * phi)


def ou(p, c, s, sqrt_mass, noise):
    r"""O: :math:`p \leftarrow c\,p + s\,M^{1/2} R`, R standard normal (see :func:`ou_coefficients`).

    With :math:`\sigma^2 = 2\gamma k_BT` this preserves :math:`N(0, k_BT\,M)` exactly.
    """
    return c * p + s * sqrt_mass * noise


def thermostat(xi, kinetic, n_dof, kT, eps, delta):
    r"""D: :math:`\xi \leftarrow \xi + \delta\,\varepsilon\,(p^T M^{-1} p - N k_BT)`.

    ``kinetic`` is :math:`p^T M^{-1} p` of the thermostat's group, ``n_dof`` its N
    (Jones & Leimkuhler, J. Chem. Phys. 135, 2011).
    """
    return xi + delta * eps * (kinetic - n_dof * kT)


def euler_maruyama(q, force, h, kT, noise):
    r"""Overdamped Euler–Maruyama: :math:`q' = q + h F(q) + \sqrt{2 h k_BT}\,R`."""
    return q + h * force + sqrt(2.0 * h * kT) * noise


def leimkuhler_matthews(q, force, h, kT, noise, next_noise):
    r"""Overdamped Leimkuhler–Matthews: :math:`q' = q + h F(q) + \sqrt{h k_BT/2}\,(R_n + R_{n+1})`.

    Leimkuhler, Matthews & Stoltz, IMA J. Numer. Anal. 36, 2016. Exact stationary
    variance on harmonic potentials; second order for stationary averages.
    """
    return q + h * force + sqrt(0.5 * h * kT) * (noise + next_noise)


def hamiltonian(potential, kinetic):
    r"""The Hamiltonian :math:`H = U(q) + \tfrac12 p^T M^{-1} p` from U and :math:`p^T M^{-1} p`."""
    return potential + 0.5 * kinetic


def metropolis(u, dH, kT):
    r"""The Metropolis test: accept iff :math:`\ln u < -\Delta H / k_BT` (that is,
    :math:`u < e^{-\Delta H / k_BT}`), u uniform on (0, 1).

    Accepts with probability :math:`\min(1, e^{-\Delta H/k_BT})` (Metropolis et al., J. Chem.
    Phys. 21, 1953). A non-finite proposal (``dH`` NaN or +inf) is rejected: every comparison
    with NaN is False. In the log form the logarithm depends on u alone, so a kernel computes
    it off the step's critical path (measured 6% of a GHMC step at d = 1).
    """
    return log(u) < -dH / kT


def mala_correction(q, y, force_q, force_y, h):
    r"""One coordinate's share of MALA's proposal-density ratio, times 4h:
    :math:`|q - y - hF(y)|^2 - |y - q - hF(q)|^2`.

    For the Euler–Maruyama proposal :math:`y = q + hF(q) + \sqrt{2hk_BT}R`, the density is
    :math:`g(y|q) \propto e^{-|y - q - hF(q)|^2 / (4 h k_BT)}`, so
    :math:`\log g(q|y) - \log g(y|q) = -\sum_j(\text{this}) / (4 h k_BT)` and MALA is the
    Metropolis test of :math:`\Delta H = U(y) - U(q) + \sum_j(\text{this})/(4h)` (Roberts &
    Tweedie, Bernoulli 2, 1996).
    """
    a = q - y - h * force_y
    b = y - q - h * force_q
    return a * a - b * b


ALL = (drift, kick, ou_coefficients, ou, thermostat, euler_maruyama, leimkuhler_matthews, hamiltonian, metropolis,
       mala_correction)


def bind(exp, expm1, sqrt, log=np.log):
    """The operators with ``exp``, ``expm1``, ``sqrt`` and ``log`` taken from another library.

    Returns a namespace with one attribute per operator. ``bind(math.exp, math.expm1,
    math.sqrt)`` gives scalar versions (for numba-cuda device functions);
    ``bind(torch.exp, torch.expm1, torch.sqrt, torch.log)`` gives tensor versions.
    """
    names = {"exp": exp, "expm1": expm1, "sqrt": sqrt, "log": log}
    bound = {}
    for f in ALL:
        g = types.FunctionType(f.__code__, {**f.__globals__, **names}, f.__name__,
                               f.__defaults__, f.__closure__)
        g.__doc__ = f.__doc__
        bound[f.__name__] = g
    return types.SimpleNamespace(**bound)


scalar = bind(math.exp, math.expm1, math.sqrt, math.log)
"""The operators on Python/numba scalars, with the ``math`` module's functions."""
