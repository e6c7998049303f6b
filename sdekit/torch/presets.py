r"""The papers' optimizers as thin constructors over :class:`~sdekit.torch.SDEOptimizer`.

In every preset ``lr`` is the SDE step h, not SGD's learning rate (except :class:`SGLD`
and :class:`ConstrainedSGLD`, whose ``lr`` is SGLD's): BAOAB at kT = 0 with step h and
friction gamma is heavy-ball SGD with learning rate :math:`h^2(1 + \mu)/2` and momentum
:math:`\mu = e^{-\gamma h}` (:func:`sgd_equivalent`), so h = 0.1, gamma = 1 is SGD at
lr 0.0095, momentum 0.905.
"""
import math
import numbers

import torch

from .._checks import real
from ..constraints import Manifold
from .optimizer import SDEOptimizer
from .settings import as_groups, kT_of, layers

__all__ = ["AdLaLa", "LOL", "MultiLayerLangevin", "SGLD", "ConstrainedSGLD", "sgd_equivalent"]


def _split(model_or_groups, name, n=2):
    """(first layer, rest) as lists of group dicts from a Module or explicit groups."""
    if isinstance(model_or_groups, torch.nn.Module):
        found = layers(model_or_groups)
        if not found:
            raise ValueError(f"model_or_groups: the module has no parameters requiring gradients ({name})")
        first = found[0][1]
        seen = {id(p) for p in first}
        rest = [p for _, ps in found[1:] for p in ps if id(p) not in seen]
        return [{"params": first}, {"params": rest}]
    try:
        groups = list(model_or_groups)
    except TypeError:
        raise ValueError(f"model_or_groups: expected an nn.Module or {n} parameter groups, "
                         f"got {type(model_or_groups).__name__}") from None
    if len(groups) != n:
        raise ValueError(f"model_or_groups: {name} needs {n} groups (first layer, rest), got {len(groups)}")
    return as_groups(groups)


def _merge(defaults, group):
    """The preset's settings for a group, overridden by the group's own keys."""
    out = dict(defaults)
    out.update(group)
    if "tau" in group:
        out.pop("kT", None)
    return out


class AdLaLa(SDEOptimizer):
    r"""AdLaLa: adaptive Langevin on the first layer, Langevin on the rest.

    First layer (weight and bias, one xi per tensor, temperature tau1): the word
    B A O D O A B, whose O has friction :math:`\xi` (gamma = 0) and noise
    :math:`\sigma_A`; other layers (temperature tau2): B A O A B with friction gamma.
    Per step (reference code's sequence, kicks of consecutive steps merged):

    .. math::

        &\text{layer 1: } q \mathrel{+}= \tfrac h2 p;\ p = c(\xi) p + s(\xi) R;\
        \xi \mathrel{+}= h\varepsilon(p^Tp - N\tau_1);\ p = c(\xi) p + s(\xi) R;\ q \mathrel{+}= \tfrac h2 p \\
        &\text{others: } q \mathrel{+}= \tfrac h2 p;\ p = e^{-\gamma h} p + \sqrt{(1 - e^{-2\gamma h})\tau_2}\,R;\
        q \mathrel{+}= \tfrac h2 p \\
        &\text{then } p \mathrel{-}= \tfrac h2 \nabla L \text{ (new gradient), and } p \mathrel{-}= \tfrac h2 \nabla L
        \text{ at the start of the next step,}

    with :math:`(c, s)` the exact OU coefficients over h/2 for friction xi and
    noise sigma_A (the reference code applies ``p *= exp(-xi h/2)`` and the noise
    ``sigma_A sqrt(h/2) R`` separately, which agrees to O(h xi)). First step: p = 0,
    then :math:`p = -(h/2)\nabla L`. The thermostat drives xi to
    :math:`\sigma_A^2/(2\tau_1)` (the stationary law of xi is
    :math:`N(\sigma_A^2/(2\tau_1), \varepsilon\tau_1)`).

    Parameters
    ----------
    model_or_groups : nn.Module or (first, rest)
        A module (its first layer: the first module owning parameters) or two
        parameter groups (iterables of tensors, or dicts whose keys override).
    lr : float
        The SDE step h (default 0.25, the reference code's), not SGD's learning rate: on
        the Langevin layers at kT = 0, BAOAB with step h and friction gamma is heavy-ball
        SGD with learning rate :math:`h^2(1 + e^{-\gamma h})/2` (:func:`sgd_equivalent`;
        h = 0.25, gamma = 0.1: 0.062, momentum 0.975).
    tau1, tau2, gamma, sigma_A, eps, xi0 : float
        Defaults are the reference code's: tau1 = tau2 = 1e-4, gamma = 0.1,
        sigma_A = 0.01, eps = 0.05, xi0 = 0.1 (the paper's figures use eps = 0.1).
    seed, generator, prefetch_noise, noise
        As in :class:`SDEOptimizer`.

    References
    ----------
    Leimkuhler, Matthews, Vlaar, "Partitioned integrators for thermodynamic
    parameterization of neural networks", Found. Data Sci. 2019, Sec. 3.3.
    """

    def __init__(self, model_or_groups, lr=0.25, tau1=1e-4, tau2=1e-4, gamma=0.1, sigma_A=0.01,
                 eps=0.05, xi0=0.1, seed=None, generator=None, prefetch_noise=False, noise=None):
        first, rest = _split(model_or_groups, "AdLaLa")
        groups = [_merge(dict(scheme="BAODOAB", kT=tau1, gamma=0.0, sigma_A=sigma_A, eps=eps, xi0=xi0), first)]
        if rest["params"]:
            groups.append(_merge(dict(scheme="BAOAB", kT=tau2, gamma=gamma), rest))
        super().__init__(groups, lr=lr, seed=seed, generator=generator, prefetch_noise=prefetch_noise,
                         noise=noise)


class LOL(SDEOptimizer):
    r"""LOL: Langevin (BAOAB) on the first layer, overdamped Langevin on the rest.

    The first layer runs BAOAB with friction gamma1 and temperature tau1. The rest
    run BAOAB with :math:`\gamma = \infty`: O redraws :math:`p = \sqrt{\tau_2} R`
    every step, so their positions follow the Leimkuhler-Matthews overdamped scheme
    with time step :math:`h^2/2`:
    :math:`q' = q - \tfrac{h^2}2\nabla L + \tfrac h2\sqrt{\tau_2}(R_n + R_{n+1})`.

    Defaults h = 0.25, gamma1 = 0.01, tau1 = 1e-3 are the paper's Fig. 14 settings;
    the text gives no second temperature, so ``tau2`` defaults to tau1. ``lr`` is the SDE
    step h, not SGD's learning rate: the first layer's BAOAB at kT = 0 is heavy-ball SGD
    with learning rate :math:`h^2(1 + e^{-\gamma_1 h})/2` (:func:`sgd_equivalent`; h = 0.25,
    gamma1 = 0.01: 0.062, momentum 0.9975), the rest an overdamped step with time step
    :math:`h^2/2` (0.031).

    References
    ----------
    Leimkuhler, Matthews, Vlaar, Found. Data Sci. 2019, Sec. 3.4.
    """

    def __init__(self, model_or_groups, lr=0.25, gamma1=0.01, tau1=1e-3, tau2=None, seed=None,
                 generator=None, prefetch_noise=False, noise=None):
        first, rest = _split(model_or_groups, "LOL")
        tau2 = tau1 if tau2 is None else tau2
        groups = [_merge(dict(scheme="BAOAB", kT=tau1, gamma=gamma1), first)]
        if rest["params"]:
            groups.append(_merge(dict(scheme="BAOAB", kT=tau2, gamma=math.inf), rest))
        super().__init__(groups, lr=lr, seed=seed, generator=generator, prefetch_noise=prefetch_noise,
                         noise=noise)


class MultiLayerLangevin(SDEOptimizer):
    r"""BAOAB on every layer, each with its own friction and temperature.

    ``gamma`` and ``kT`` are scalars or one value per layer (the modules owning
    parameters, in order; see :func:`layers`), or per explicit group. ``lr`` is the SDE
    step h, not SGD's learning rate: BAOAB at kT = 0 with step h and friction gamma is
    heavy-ball SGD with learning rate :math:`h^2(1 + e^{-\gamma h})/2` and momentum
    :math:`e^{-\gamma h}` (:func:`sgd_equivalent`; the default h = 0.1, gamma = 1: SGD at
    0.0095, momentum 0.905).

    References
    ----------
    Leimkuhler, Matthews, Vlaar, Found. Data Sci. 2019, Sec. 3.2.
    """

    def __init__(self, model_or_groups, lr=0.1, gamma=1.0, kT=1e-4, seed=None, generator=None, prefetch_noise=False,
                 noise=None):
        if isinstance(model_or_groups, torch.nn.Module):
            groups = [{"params": ps} for _, ps in layers(model_or_groups)]
        else:
            groups = as_groups(model_or_groups)
        n = len(groups)
        if n == 0:
            raise ValueError("model_or_groups: no parameters")

        def per_layer(name, value):
            if isinstance(value, numbers.Real):
                return [value] * n
            value = list(value)
            if len(value) != n:
                raise ValueError(f"{name}: need a scalar or {n} values (one per layer), got {value!r}")
            return value

        gammas, kTs = per_layer("gamma", gamma), per_layer("kT", kT)
        groups = [_merge(dict(scheme="BAOAB", gamma=g, kT=t), grp) for g, t, grp in zip(gammas, kTs, groups)]
        super().__init__(groups, lr=lr, seed=seed, generator=generator, prefetch_noise=prefetch_noise,
                         noise=noise)


class SGLD(SDEOptimizer):
    r"""Stochastic gradient Langevin dynamics (Euler-Maruyama on the parameters).

    .. math::

        \theta \leftarrow \theta - h\nabla L(\theta) + \sqrt{2 h k_BT}\,R
        = \theta - h\nabla L + \sigma\sqrt h\,R, \quad \sigma = \sqrt{2k_BT}.

    Give ``kT`` or ``sigma`` (default sigma = 0.01, the paper's Fig. 6 value). Here ``lr``
    is both the SDE step h of Euler-Maruyama and SGD's learning rate (at kT = 0 this is
    plain SGD, no momentum).

    References
    ----------
    M. Welling and Y. W. Teh, ICML 2011; Leimkuhler, Matthews, Vlaar 2019, Sec. 2.
    """

    def __init__(self, params, lr=0.1, kT=None, sigma=None, seed=None, generator=None, prefetch_noise=False,
                 noise=None):
        kT = kT_of(kT, sigma)
        super().__init__(params, scheme="EM", lr=lr, kT=kT, seed=seed, generator=generator,
                         prefetch_noise=prefetch_noise, noise=noise)


class ConstrainedSGLD(SDEOptimizer):
    r"""Constrained SGLD, and constrained SGD (``sigma=0``): weights on a manifold.

    Every tensor runs BAOAB with :math:`\gamma = \infty`: O redraws
    :math:`p = \sqrt{k_BT}\,R` (projected onto the manifold's tangent), so, as for the
    second layer of :class:`LOL`, the positions take the Leimkuhler-Matthews overdamped
    step with time step :math:`h^2/2`. With :math:`h = \sqrt{2\,\mathrm{lr}}` and
    :math:`k_BT = \sigma^2/2` an unconstrained tensor follows

    .. math::

        \theta \leftarrow \theta - \mathrm{lr}\,\nabla L + \tfrac{\sigma}{2}\sqrt{\mathrm{lr}}\,(R_n + R_{n+1})

    (SGLD's learning rate and noise, stationary law :math:`\propto e^{-L/k_BT}`), and a
    constrained tensor the same step taken along the manifold (A is the constraint's
    drift, see :class:`SDEOptimizer`), which samples :math:`e^{-L/k_BT}` times the
    surface measure. ``sigma=0`` is constrained gradient descent with learning rate
    lr (the first step moves lr/2: the momentum starts at zero). Leimkuhler, Pouchon
    & Vlaar (ICML 2021) compare these with SGD, SGD + weight decay and SGLD.

    Parameters
    ----------
    model_or_groups : nn.Module or iterable of group dicts
        A module: its weights (tensors with two or more dimensions) are constrained,
        its biases (one dimension) are not (``biases=True`` constrains them too).
        Or explicit groups (dicts with "params" and, for constrained ones, "constraint").
    constraint : Manifold, or callable tensor -> Manifold
        E.g. ``Circle(1.0)``, or ``lambda w: Stiefel(max(w.shape), min(w.shape))``
        for weight matrices of different shapes.
    lr : float
        Learning rate (SGD's), > 0; the SDE step of the BAOAB it runs is
        :math:`h = \sqrt{2\,\mathrm{lr}}` (``param_groups[i]["lr"]``).
    sigma, kT : float
        Noise: give one (kT = sigma^2 / 2). Default sigma = 0.01; 0 for constrained SGD.
    seed, generator, prefetch_noise, noise
        As in :class:`SDEOptimizer`.

    Examples
    --------
    >>> import torch
    >>> from sdekit.constraints import Circle
    >>> model = torch.nn.Sequential(torch.nn.Linear(2, 20), torch.nn.ReLU(), torch.nn.Linear(20, 1))
    >>> opt = ConstrainedSGLD(model, Circle(0.5), lr=0.1, sigma=0.0)     # constrained SGD
    >>> [g["constraint"] for g in opt.param_groups]
    [Circle(radius=0.5), None]
    """

    def __init__(self, model_or_groups, constraint=None, lr=0.1, sigma=None, kT=None, biases=False, seed=None,
                 generator=None, prefetch_noise=False, noise=None):
        lr = real("lr", lr, low=0.0, low_open=True)
        kT = kT_of(kT, sigma)
        if isinstance(model_or_groups, torch.nn.Module):
            if constraint is None:
                raise ValueError("constraint: ConstrainedSGLD on a module needs a constraint "
                                 "(a Manifold, or a callable tensor -> Manifold)")
            groups, free = {}, []
            for p in model_or_groups.parameters():
                if not p.requires_grad:
                    continue
                if p.dim() >= 2 or biases:
                    c = constraint(p) if callable(constraint) and not isinstance(constraint, Manifold) else constraint
                    groups.setdefault(repr(c), {"params": [], "constraint": c})["params"].append(p)
                else:
                    free.append(p)
            groups = list(groups.values()) + ([{"params": free}] if free else [])
        else:
            groups = as_groups(model_or_groups)
        super().__init__(groups, scheme="BAOAB", lr=math.sqrt(2.0 * lr), gamma=math.inf, kT=kT, seed=seed,
                         generator=generator, prefetch_noise=prefetch_noise, noise=noise)


def sgd_equivalent(lr, momentum):
    r"""The BAOAB (kT = 0) step and friction equivalent to heavy-ball SGD.

    With kT = 0, BAOAB with step h and friction gamma, started from p = 0, is
    ``torch.optim.SGD(lr=lr_sgd, momentum=mu)`` (dampening 0, no Nesterov) with

    .. math::

        \mu = e^{-\gamma h}, \qquad \mathrm{lr}_{SGD} = \frac{h^2 (1 + \mu)}{2},

    and SGD's first momentum buffer equal to :math:`\nabla L_0/2` instead of
    :math:`\nabla L_0`. Derivation: write :math:`g_n = \nabla L(q_n)`,
    :math:`c = e^{-\gamma h}` and :math:`u_n = p_n - \tfrac h2 g_n` (the momentum after
    the first half kick). With kT = 0 one BAOAB step is
    :math:`q_{n+1} = q_n + \tfrac h2 u_n + \tfrac h2 c\,u_n`,
    :math:`p_{n+1} = c\,u_n - \tfrac h2 g_{n+1}`, so
    :math:`u_{n+1} = c\,u_n - h g_{n+1}`. Setting :math:`v_n = -u_n/h` gives
    :math:`v_n = c\,v_{n-1} + g_n` and :math:`q_{n+1} = q_n - \tfrac{h^2(1+c)}{2} v_n`:
    torch's ``buf = mu * buf + g; theta -= lr * buf``. From :math:`p_0 = 0`,
    :math:`v_0 = g_0/2`. Returns ``(h, gamma)`` for given ``(lr_sgd, mu)``, 0 < mu < 1.
    """
    lr = real("lr", lr, low=0.0, low_open=True)
    momentum = real("momentum", momentum, low=0.0, low_open=True)
    if momentum >= 1.0:
        raise ValueError(f"momentum: must be < 1, got {momentum!r}")
    h = math.sqrt(2.0 * lr / (1.0 + momentum))
    return h, -math.log(momentum) / h
