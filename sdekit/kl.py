r"""The near-equilibrium estimate of an integrator's KL divergence from its target, from shadow work.

Fass, Sivak, Crooks, Beauchamp, Leimkuhler & Chodera, "Quantifying configuration-sampling
error in Langevin simulations", Entropy 20, 318 (2018): equilibrium samples of
:math:`\pi \propto e^{-H/k_BT}` run T steps of the integrator (forward protocol, shadow work
:math:`w_F` in units of kT, :mod:`sdekit.shadow`); from their end states T more steps run
(reverse protocol, :math:`w_R`), with the momenta kept (phase space: the law :math:`\rho` of
the integrator's steady state) or redrawn from Maxwell–Boltzmann (configuration space:
:math:`\rho_q\,\pi(p)`). Near equilibrium

.. math::

    D_{KL}(\rho \,\|\, \pi) \approx \tfrac12\left(\langle w_F\rangle - \langle w_R\rangle\right),
    \qquad
    \sigma^2 = \frac{\mathrm{Var}\,w_F + \mathrm{Var}\,w_R - 2\,\mathrm{Cov}(w_F, w_R)}{4 N}

(Sivak, Chodera & Crooks, PRX 3, 011007, 2013, eqs. A1–A2). On Gaussian targets the chain's
stationary law is Gaussian with the covariance of :func:`sdekit.linear.stationary_covariance`,
so the divergence is known in closed form (:func:`gaussian_kl`): that is how the estimate is
tested (tests/test_shadow.py).
"""
from dataclasses import dataclass

import numpy as np

from . import linear
from ._checks import choice, finite_array, integer
from .schemes import Scheme
from .simulate import ensemble

MARGINALS = ("configuration", "phase space")
"""The laws whose distance from the target :func:`kl_estimate` measures."""


# ----------------------------------------------------------------------------- exact KL on Gaussians

def _kl_gaussians(S, S0):
    r""":math:`D_{KL}(N(0, S)\,\|\,N(0, S_0)) = \tfrac12[\mathrm{tr}(S_0^{-1}S) - n + \ln\det S_0 - \ln\det S]`."""
    n = S.shape[0]
    inv = np.linalg.solve(S0, S)
    return 0.5 * (np.trace(inv) - n + np.linalg.slogdet(S0)[1] - np.linalg.slogdet(S)[1])


def gaussian_kl(scheme, hessian, h, gamma=1.0, kT=1.0, mass=None, marginal="configuration"):
    r"""Exact :math:`D_{KL}(\rho\,\|\,\pi)` of the chain's stationary law from the target, on
    :math:`U = q^T K q / 2`.

    :math:`\rho = N(0, \Sigma_h)` with :math:`\Sigma_h` from
    :func:`sdekit.linear.stationary_covariance`; :math:`\pi = N(0, \mathrm{diag}(k_BT K^{-1},
    k_BT M))`; for ``"configuration"`` both are replaced by their q marginals.

    Parameters
    ----------
    scheme, hessian, h, gamma, kT, mass
        As in :func:`sdekit.linear.stationary_covariance` (scalars gamma and kT).
    marginal : "configuration" or "phase space"

    Returns
    -------
    float (nats)
    """
    choice("marginal", marginal, MARGINALS)
    K = linear.as_hessian(hessian)
    d = K.shape[0]
    mass = np.ones(d) if mass is None else np.broadcast_to(np.asarray(mass, dtype=float), (d,))
    S = linear.stationary_covariance(scheme, K, h, gamma=gamma, kT=kT, mass=mass)
    if S.shape[0] != 2 * d:
        raise ValueError(f"scheme: {scheme!r} is overdamped; its law has no momenta (use the q marginal of "
                         f"sdekit.linear.stationary_covariance)")
    target = np.zeros((2 * d, 2 * d))
    target[:d, :d] = kT * np.linalg.inv(K)
    target[d:, d:] = kT * np.diag(mass)
    if marginal == "configuration":
        return float(_kl_gaussians(S[:d, :d], target[:d, :d]))
    return float(_kl_gaussians(S, target))


# ----------------------------------------------------------------------------- the estimate

@dataclass
class KLEstimate:
    r"""The near-equilibrium estimate of :math:`D_{KL}(\rho\,\|\,\pi)` for one marginal.

    Attributes
    ----------
    marginal : "configuration" or "phase space"
    estimate, stderr : float
        :math:`\tfrac12(\langle w_F\rangle - \langle w_R\rangle)` in nats, and its standard
        error from the N protocol pairs (:func:`near_equilibrium_kl`).
    w_forward, w_reverse : (N,) arrays
        Each pair's shadow work (units of kT) in the forward and the reverse protocol.
    protocol_steps : int
    n_diverged : int
        Pairs dropped because a path diverged in either protocol (``on_divergence="mask"``;
        the estimate is then over the survivors, and this says so).
    """

    marginal: str
    estimate: float
    stderr: float
    w_forward: np.ndarray
    w_reverse: np.ndarray
    protocol_steps: int
    n_diverged: int = 0

    def __str__(self):
        dropped = f", {self.n_diverged} pairs diverged" if self.n_diverged else ""
        return (f"KL[{self.marginal}] = {self.estimate:.5g} +- {self.stderr:.2g} "
                f"({len(self.w_forward)} pairs of {self.protocol_steps} steps{dropped})")


def near_equilibrium_kl(w_forward, w_reverse):
    r"""The near-equilibrium estimate and its standard error from paired works (units of kT).

    .. math::

        \hat D = \tfrac12(\bar w_F - \bar w_R), \qquad
        \hat\sigma^2 = \frac{\mathrm{Var}\,w_F + \mathrm{Var}\,w_R - 2\,\mathrm{Cov}(w_F, w_R)}{4N}

    (Sivak, Chodera & Crooks 2013, eqs. A1–A2; ``estimate_nonequilibrium_free_energy`` of
    choderalab/integrator-benchmark, with sample variances ``ddof=1`` here).
    """
    wf = finite_array("w_forward", w_forward, ndim=1)
    wr = finite_array("w_reverse", w_reverse, ndim=1)
    if wf.shape != wr.shape or wf.size < 2:
        raise ValueError(f"w_reverse: must pair w_forward (the same length >= 2), got shapes {wf.shape} "
                         f"and {wr.shape}")
    diff = wf - wr   # Var wF + Var wR - 2 Cov = Var (wF - wR)
    return 0.5 * float(diff.mean()), 0.5 * float(diff.std(ddof=1) / np.sqrt(diff.size))


def check_symmetric(scheme):
    r"""ValueError unless ``scheme`` is time-symmetric in the sense the estimate needs.

    The work–KL relation rests on the path-probability ratio of a step and its time reverse
    being :math:`e^{-w}` (Sivak, Chodera & Crooks 2013): that holds when every deterministic
    segment of the word between two O letters (read cyclically, with their fractions) is a
    palindrome, as in BAOAB (read from its O: ``A B B A``), OBABO and ``O{BAB}O``. A
    word such as ABO (its segment ``A B`` is symplectic Euler, not reversible) is refused:
    there the estimate is simply wrong (on a Gaussian at h = 0.3 it gives -0.03 for an
    exact KL of 0.018).
    """
    scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
    entries = [(e.letter.name, e.fraction, e.letter.shadow) for e in scheme.entries]
    heats = [k for k, e in enumerate(entries) if e[2] == "heat"]
    if not heats:
        raise ValueError(f"scheme: {scheme.word} has no O letter, so no heat bath and no stationary law to "
                         f"compare with the target")
    start = heats[0]
    cyclic = entries[start + 1:] + entries[:start + 1]   # begins after an O, ends with it
    mirror = {"{": "}", "}": "{"}
    segment = []
    for name, f, kind in cyclic:
        if kind != "heat":
            segment.append((name, round(f, 12)))
            continue
        back = [(mirror.get(n, n), f) for n, f in reversed(segment)]
        if back != segment:
            raise ValueError(f"scheme: the near-equilibrium KL estimate needs a time-symmetric word (each "
                             f"deterministic segment between O letters a palindrome); {scheme.word} has the "
                             f"segment {' '.join(n for n, _ in segment)!r} (Sivak, Chodera & Crooks 2013)")
        segment = []
    return scheme


def maxwell_boltzmann(rng, n_paths, kT, mass):
    """Momenta :math:`p \\sim N(0, k_BT M)`, (n_paths, d)."""
    return rng.standard_normal((n_paths, len(mass))) * np.sqrt(kT * np.asarray(mass, dtype=float))


def equilibrium_samples(system, n_paths, kT, rng, grid=200_001):
    r"""Positions drawn from the target :math:`\pi(q) \propto e^{-U(q)/k_BT}`, exactly where sdekit can.

    Harmonic and Gaussian systems: :math:`q \sim N(0, k_BT K^{-1})`. One-dimensional systems:
    inversion of the cumulative distribution by quadrature (the trapezoidal rule on ``grid``
    points over the interval where :math:`U - \min U < 60\,k_BT`, found by doubling), with
    linear interpolation: the error is that of the quadrature. Others: a ValueError (pass
    ``q_eq`` to :func:`kl_estimate`, e.g. from a long Metropolis-adjusted run, ``"O{BAB}O"``).
    """
    K = system.hessian() if hasattr(system, "hessian") else getattr(system, "precision", None)
    if K is not None:
        L = np.linalg.cholesky(kT * np.linalg.inv(np.asarray(K, dtype=float)))
        return rng.standard_normal((n_paths, system.dim)) @ L.T
    if system.dim != 1:
        raise ValueError(f"q_eq: sdekit samples the target exactly only for Harmonic, Gaussian and 1-D systems, "
                         f"not {system!r}; pass equilibrium positions q_eq of shape (n_paths, {system.dim}) "
                         f"(e.g. the end states of a long Metropolis-adjusted run, 'O{{BAB}}O')")
    U = lambda x: np.asarray(system.potential(x[:, None]), dtype=float).reshape(-1)
    L = 1.0
    while L < 1e4:
        x = np.linspace(-L, L, 4001)
        u = U(x)
        if u[0] - u.min() > 60 * kT and u[-1] - u.min() > 60 * kT:
            break
        L *= 2
    x = np.linspace(-L, L, grid)
    u = U(x)
    w = np.exp(-(u - u.min()) / kT)
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (w[1:] + w[:-1]) * np.diff(x))])
    return np.interp(rng.random(n_paths) * cdf[-1], cdf, x)[:, None]


def kl_estimate(scheme, system, h, *, gamma=1.0, kT=1.0, mass=None, q_eq=None, n_paths=None,
                protocol_steps=50, marginals=MARGINALS, seed=0, backend=None, on_divergence="raise",
                max_abs=None):
    r"""Near-equilibrium estimate of the KL divergence of ``scheme``'s sampled law from the target.

    ``scheme`` must be time-symmetric (:func:`check_symmetric`: BAOAB, OBABO, OABAO, ABOBA,
    BABO, GHMC; not ABO).

    The protocol of Fass et al. (Entropy 20, 318, 2018): equilibrium positions ``q_eq``
    with Maxwell–Boltzmann momenta run ``protocol_steps`` steps (work :math:`w_F`); from
    each end state the reverse protocol runs ``protocol_steps`` more (work :math:`w_R`),
    with the momenta kept (``"phase space"``: :math:`\rho`) or redrawn (``"configuration"``:
    :math:`\rho_q\,\pi(p)`); :math:`D_{KL} \approx \tfrac12(\langle w_F\rangle - \langle
    w_R\rangle)` (:func:`near_equilibrium_kl`). Works are in units of kT.

    Parameters
    ----------
    scheme, system, h, gamma, kT, mass
        As in :func:`sdekit.ensemble` (constant kT > 0).
    q_eq : (n_paths, d) array, optional
        Positions drawn from the target :math:`\propto e^{-U/k_BT}` (e.g. a long Metropolis-adjusted
        run, ``"O{BAB}O"``). Default: :func:`equilibrium_samples` (Harmonic, Gaussian, 1-D systems).
    n_paths : int, optional
        Protocol pairs when ``q_eq`` is not given (default 10 000).
    protocol_steps : int
        T, steps of each protocol: long enough for the chain to reach its steady state
        (several relaxation times, :math:`T h \gamma \gg 1`).
    marginals : sequence of "configuration", "phase space"
    seed : int
        The momenta and both runs' noise (same seed, same numbers).
    backend, on_divergence, max_abs
        As in :func:`sdekit.ensemble` (default backend: the fastest available one). Pairs with a
        diverged path are dropped and counted.

    Returns
    -------
    dict marginal -> KLEstimate
    """
    check_symmetric(scheme)
    marginals = [choice("marginals", m, MARGINALS) for m in
                 ([marginals] if isinstance(marginals, str) else list(marginals))]
    if not marginals:
        raise ValueError("marginals: must name at least one of 'configuration', 'phase space', got []")
    T = integer("protocol_steps", protocol_steps, low=1)
    if isinstance(kT, bool) or not isinstance(kT, (int, float)) or not np.isfinite(kT) or kT <= 0:
        raise ValueError(f"kT: the KL estimate needs a constant temperature > 0, got {kT!r}")
    seeds = np.random.SeedSequence(integer("seed", seed, low=0)).spawn(5)
    if q_eq is None:
        n = 10_000 if n_paths is None else integer("n_paths", n_paths, low=2)
        q_eq = equilibrium_samples(system, n, kT, np.random.default_rng(seeds[0]))
    else:
        q_eq = finite_array("q_eq", q_eq, ndim=2)
        if q_eq.shape[1] != system.dim or q_eq.shape[0] < 2:
            raise ValueError(f"q_eq: must have shape (n_paths >= 2, {system.dim}), got {q_eq.shape}")
        if n_paths is not None and integer("n_paths", n_paths, low=2) != q_eq.shape[0]:
            raise ValueError(f"n_paths: q_eq has {q_eq.shape[0]} rows, got n_paths={n_paths}")
    n = q_eq.shape[0]
    masses = np.ones(system.dim) if mass is None else np.broadcast_to(np.asarray(mass, float), (system.dim,))
    run = dict(gamma=gamma, kT=kT, mass=mass, backend=backend, shadow_work=True, n_paths=n, n_steps=T,
               on_divergence=on_divergence, max_abs=max_abs)
    forward = ensemble(scheme, system, h, q0=q_eq, p0=maxwell_boltzmann(np.random.default_rng(seeds[1]), n, kT,
                                                                          masses), seed=_int(seeds[2]), **run)
    out = {}
    for m, (s_p, s_run) in zip(MARGINALS, ((seeds[3], seeds[4]), (None, seeds[4]))):
        if m not in marginals:
            continue
        p1 = forward.p if m == "phase space" else maxwell_boltzmann(np.random.default_rng(s_p), n, kT, masses)
        live = np.isfinite(forward.q).all(axis=1) & np.isfinite(p1).all(axis=1)
        q1 = np.where(live[:, None], forward.q, 0.0)
        p1 = np.where(live[:, None], p1, 0.0)
        reverse = ensemble(scheme, system, h, q0=q1, p0=p1, seed=_int(s_run), **run)
        wf, wr = forward.state.work / kT, reverse.state.work / kT
        keep = live & np.isfinite(wf) & np.isfinite(wr)
        keep[np.asarray(forward.diverged, dtype=int)] = False
        keep[np.asarray(reverse.diverged, dtype=int)] = False
        est, se = near_equilibrium_kl(wf[keep], wr[keep])
        out[m] = KLEstimate(m, est, se, wf[keep], wr[keep], T, int(n - keep.sum()))
    return out


def _int(seq):
    """An int seed from a SeedSequence (the drivers take ints)."""
    return int(seq.generate_state(1, dtype=np.uint32)[0])
