r"""Exact output statistics of the diffusion samplers for Gaussian data, Gaussian distances, and
the convergence study.

Exactness harness
-----------------
For Gaussian data :math:`N(\mu_0, \Sigma_0)` every forward marginal is Gaussian and its
score is affine in u (:class:`~sdekit.forward_sdes.GaussianScore`). Every sampler of
:mod:`sdekit.reverse_samplers` is then an affine map with additive Gaussian noise,
:math:`u_{k+1} = A_k u_k + b_k + L_k z_k`, and the law of
its output is Gaussian with :math:`m_{k+1} = A_k m_k + b_k`,
:math:`C_{k+1} = A_k C_k A_k^T + L_k L_k^T`. :func:`exact_output_moments` obtains
:math:`A_k, b_k, L_k` by *probing the sampler's own step* on the rows
:math:`(0, 0), (e_i, 0), (0, e_j)` of (state, noise) -- so the recursion and the sampler
share one copy of the arithmetic, and a broken letter breaks both.

:func:`gaussian_kl`, :func:`gaussian_w2` and :func:`covariance_error` compare two Gaussian
laws; :func:`convergence_study` computes a sampler's exact errors against N and fits their
order (:func:`fit_exact_order`): see ``analysis/diffusion_gaussian.py``.

See also
--------
sdekit.diffusion : the overview (the reverse-time SDE and the probability-flow ODE) and every
    name of the three modules below in one place.
sdekit.forward_sdes : the forward SDEs, their marginals and the exact Gaussian score.
sdekit.reverse_samplers : the samplers whose steps are probed here.
"""
import math

import numpy as np

from ._checks import finite_array, real
from .fits import fit_order
from .forward_sdes import GaussianScore, _check_sde, _data_law, marginal
from .linear import Moments
from .reverse_samplers import _check_sampler, time_grid

__all__ = ["exact_output_moments", "target_moments", "gaussian_kl", "gaussian_w2", "covariance_error",
           "convergence_study", "fit_exact_order"]


# ----------------------------------------------------------------------------- exact output moments

def target_moments(sde, data_mean, data_cov, eps=1e-3):
    """The exact marginal p_eps of the forward process at t = eps (u = x or (x, v))."""
    m, C = _data_law(data_mean, data_cov)
    return marginal(_check_sde(sde), eps, m, C)


def affine_step(out, m, C, D):
    r"""Gaussian moments through one probed affine step: ``out`` is the step applied to the rows
    0 (the origin: b), 1..D (the unit vectors: b + A e_i) and D+1.. (unit noise: b + L e_j), so
    :math:`m' = A m + b`, :math:`C' = A C A^T + L L^T` (symmetrised)."""
    b = out[0]
    A = (out[1:1 + D] - b).T
    L = (out[1 + D:] - b).T
    C = A @ C @ A.T + L @ L.T
    return A @ m + b, 0.5 * (C + C.T)


def exact_output_moments(sampler, data_mean, data_cov, n_steps, *, eps=1e-3, start="prior",
                         return_path=False):
    r"""Exact mean and covariance of a sampler's output for Gaussian data (no sampling).

    With the exact, affine score of :class:`GaussianScore` each step is
    :math:`u' = A_k u + b_k + L_k z`; :math:`A_k, b_k, L_k` are read off the sampler's own
    ``step`` applied to the probe rows (0, 0), (e_i, 0), (0, e_j) of (state, noise), and

    .. math::

        m_{k+1} = A_k m_k + b_k, \qquad C_{k+1} = A_k C_k A_k^T + L_k L_k^T.

    Parameters
    ----------
    sampler : EulerMaruyama, ProbabilityFlow, Splitting or PredictorCorrector
        (PredictorCorrector only with ``step_size="deterministic"``).
    data_mean, data_cov : (d,), (d, d)
        The data law :math:`N(\mu_0, \Sigma_0)`.
    n_steps : int
    eps : float
        Final time.
    start : {"prior", "exact"}
        Start from the prior (what a sampler does) or from the exact marginal
        :math:`p_T` (then the output differs from :math:`p_\epsilon` by the
        discretization error alone).
    return_path : bool
        Also return the list of moments after each step.

    Returns
    -------
    Moments of the full state u (x for VP, (x, v) for CLD); see
    :func:`target_moments` for the exact :math:`p_\epsilon`.
    """
    sampler = _check_sampler(sampler)
    if not sampler.linear:
        raise ValueError(f"sampler: {sampler.label} is not affine in the state (adaptive step size); "
                         f"use step_size='deterministic' for the exact recursion")
    if start not in ("prior", "exact"):
        raise ValueError(f"start: must be 'prior' or 'exact', got {start!r}")
    mu, Sigma = _data_law(data_mean, data_cov)
    sde, d = sampler.sde, len(mu)
    score = GaussianScore(sde, mu, Sigma)
    ts = time_grid(n_steps, sde.T, eps)
    m, C = sde.prior(d) if start == "prior" else marginal(sde, sde.T, mu, Sigma)
    D, nz = sde.k * d, sampler.n_noise(d)
    U = np.zeros((1 + D + nz, D))
    U[1:1 + D] = np.eye(D)
    Z = np.zeros((1 + D + nz, nz))
    Z[1 + D:] = np.eye(nz)
    path = []
    for k in range(len(ts) - 1):
        out = sampler.step(U, ts[k], ts[k] - ts[k + 1], Z if nz else None, score)
        m, C = affine_step(out, m, C, D)
        if return_path:
            path.append(Moments(m, C))
    result = Moments(m, C)
    return (result, path) if return_path else result


# ----------------------------------------------------------------------------- distances

def _gauss(name, moments):
    m = finite_array(f"{name}.mean", moments[0]).reshape(-1)
    C = finite_array(f"{name}.cov", moments[1])
    if C.shape != (len(m), len(m)):
        raise ValueError(f"{name}: covariance shape {C.shape} does not match mean length {len(m)}")
    return m, C


def gaussian_kl(p, q):
    r""":math:`KL(N(m_1, C_1)\,\|\,N(m_2, C_2)) = \tfrac12[\mathrm{tr}(C_2^{-1}C_1) +
    (m_2 - m_1)^T C_2^{-1}(m_2 - m_1) - k + \ln\det C_2 - \ln\det C_1]`."""
    m1, C1 = _gauss("p", p)
    m2, C2 = _gauss("q", q)
    L = np.linalg.cholesky(C2)
    dm = np.linalg.solve(L, m2 - m1)
    tr = np.trace(np.linalg.solve(C2, C1))
    ld1, ld2 = np.linalg.slogdet(C1)[1], np.linalg.slogdet(C2)[1]
    return 0.5 * (tr + dm @ dm - len(m1) + ld2 - ld1)


def gaussian_w2(p, q):
    r"""Wasserstein-2 distance of Gaussians:
    :math:`W_2^2 = |m_1 - m_2|^2 + \mathrm{tr}\,C_1 + \mathrm{tr}\,C_2 - 2\,\mathrm{tr}(C_2^{1/2} C_1 C_2^{1/2})^{1/2}`.
    The trace difference cancels: resolution about 1e-8 in W2."""
    m1, C1 = _gauss("p", p)
    m2, C2 = _gauss("q", q)
    w, V = np.linalg.eigh(C2)
    R = (V * np.sqrt(np.clip(w, 0, None))) @ V.T
    mid = np.linalg.eigvalsh(R @ C1 @ R)
    val = np.sum((m1 - m2) ** 2) + np.trace(C1) + np.trace(C2) - 2.0 * np.sum(np.sqrt(np.clip(mid, 0, None)))
    return math.sqrt(max(val, 0.0))


def covariance_error(p, q):
    """Frobenius norm of the covariance difference, and Euclidean norm of the mean difference."""
    return float(np.linalg.norm(np.asarray(p[1]) - np.asarray(q[1]))), float(np.linalg.norm(np.asarray(p[0]) - np.asarray(q[0])))


# ----------------------------------------------------------------------------- convergence

def fit_exact_order(hs, errors, level=0.95, correction=False):
    r"""Observed order of exactly computed errors, with a confidence interval.

    Exact errors have no sampling noise, so the interval reflects only how far the
    errors are from the fitted model (residuals; Student t).

    * ``correction=False``: :math:`\log|e| = a + p\log h` by
      :func:`sdekit.fits.fit_order` with equal weights (stderr = 1e-6 |e|, so its
      chi-square inflation turns the interval into the residual one). Use on the
      asymptotic range: a pre-asymptotic drift of the slope makes this interval too
      narrow to contain the integer order.
    * ``correction=True``: :math:`\log|e| = a + p\log h + c\,h`, the next term of the
      expansion :math:`e = C h^p(1 + c h + \dots)` (Talay–Tubaro), fitted by ordinary
      least squares (n - 3 degrees of freedom).

    Returns
    -------
    (order, (low, high))
    """
    hs = np.asarray(hs, float).reshape(-1)
    errors = np.abs(np.asarray(errors, float)).reshape(-1)
    need = 4 if correction else 3
    if hs.shape != errors.shape or hs.size < need:
        raise ValueError(f"errors: need at least {need} errors matching hs, got {errors.size} and {hs.size}")
    if np.any(errors <= 0) or not np.all(np.isfinite(errors)):
        raise ValueError(f"errors: must be finite and non-zero to fit an order, got {errors.tolist()}")
    level = real("level", level, low=0.0, low_open=True)
    if level >= 1:
        raise ValueError(f"level: must be in (0, 1), got {level!r}")
    from scipy import stats
    if correction:
        X = np.column_stack([np.ones_like(hs), np.log(hs), hs])
        y = np.log(errors)
        coef = np.linalg.lstsq(X, y, rcond=None)[0]
        r = y - X @ coef
        dof = len(y) - 3
        se = math.sqrt(max(r @ r / dof, 0.0) * np.linalg.inv(X.T @ X)[1, 1])
        q = stats.t.ppf(0.5 + level / 2, dof)
        return float(coef[1]), (float(coef[1] - q * se), float(coef[1] + q * se))
    fit = fit_order(hs, errors, 1e-6 * errors, level=level)
    return fit.order, tuple(fit.ci)


def convergence_study(sampler, data_mean, data_cov, steps, *, eps=1e-3, fit_from=None, with_data=True):
    r"""Exact errors of a sampler's output law against N, for Gaussian data.

    For each N: the discretization error (start from the exact :math:`p_T`, compare the
    data block x with :math:`p_\epsilon`): covariance error :math:`\|C_N - C_\epsilon\|_F`,
    mean error :math:`|m_N - m_\epsilon|`, Gaussian KL; and (``with_data``), starting
    from the prior, the Gaussian KL and W2 of the output x to the data law
    :math:`N(\mu_0, \Sigma_0)` (these include the eps and prior biases, and plateau).

    Returns
    -------
    dict with arrays ``steps, h, cov_err, mean_err, kl_eps`` (and ``kl_data, w2_data``),
    the fitted ``order, ci`` of ``cov_err`` over the steps >= ``fit_from`` (pure power
    law, :func:`fit_exact_order`) and ``order_corr, ci_corr`` (with the correction term,
    over all steps).
    """
    mu, Sigma = _data_law(data_mean, data_cov)
    sampler = _check_sampler(sampler)
    sde, d = sampler.sde, len(mu)
    blk = sde.data_block(d)
    target = target_moments(sde, mu, Sigma, eps)
    tx = Moments(target.mean[blk], target.cov[blk, blk])
    data = Moments(mu, Sigma)
    keys = ("cov_err", "mean_err", "kl_eps") + (("kl_data", "w2_data") if with_data else ())
    rows = {k: [] for k in keys}
    for n in steps:
        ex = exact_output_moments(sampler, mu, Sigma, n, eps=eps, start="exact")
        x = Moments(ex.mean[blk], ex.cov[blk, blk])
        ce, me = covariance_error(x, tx)
        rows["cov_err"].append(ce)
        rows["mean_err"].append(me)
        rows["kl_eps"].append(gaussian_kl(x, tx))
        if with_data:
            pr = exact_output_moments(sampler, mu, Sigma, n, eps=eps, start="prior")
            px = Moments(pr.mean[blk], pr.cov[blk, blk])
            rows["kl_data"].append(gaussian_kl(px, data))
            rows["w2_data"].append(gaussian_w2(px, data))
    out = {k: np.array(v) for k, v in rows.items()}
    out["steps"] = np.array(steps)
    out["h"] = (sde.T - eps) / out["steps"]
    use = out["steps"] >= (fit_from or 0)
    out["order"], out["ci"] = fit_exact_order(out["h"][use], out["cov_err"][use])
    if len(steps) >= 4:
        out["order_corr"], out["ci_corr"] = fit_exact_order(out["h"], out["cov_err"], correction=True)
    out["label"] = sampler.label
    out["evals_per_step"] = sampler.evals_per_step
    return out
