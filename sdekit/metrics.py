r"""Diagnostics of trained networks.

* :func:`linear_interpolation` -- the loss along the straight line between two
  parameter sets, for the whole network and layer by layer.

Reference
---------
I. Goodfellow, O. Vinyals and A. Saxe, "Qualitatively characterizing neural network
optimization problems", ICLR 2015 (the whole-network line); T. Vlaar and J. Frankle,
"What can linear interpolation of neural network loss landscapes tell us?", ICML 2022,
and T. Vlaar, PhD thesis, Edinburgh 2022 (the per-layer lines, and why the
whole-network line alone can mislead).
"""
import math
import numbers
from dataclasses import dataclass, field

import numpy as np

from ._checks import finite_array

__all__ = ["linear_interpolation", "Interpolation"]

DEFAULT_ALPHAS = np.linspace(-0.5, 1.5, 41)
"""alpha in [-0.5, 1.5] in steps of 0.05 (Goodfellow et al. 2015)."""


@dataclass
class Interpolation:
    r"""Losses along :math:`\theta(\alpha) = (1-\alpha)\theta_0 + \alpha\theta_1`.

    Attributes
    ----------
    alphas : (m,) ndarray
    whole : (m,) ndarray
        Loss with every parameter on the line.
    layers : dict str -> (m,) ndarray
        Loss with one layer's parameters on the line and the others at theta1
        (empty if ``per_layer=False``).
    """

    alphas: np.ndarray
    whole: np.ndarray
    layers: dict = field(default_factory=dict)

    def table(self, digits=6):
        """The losses as a text table: one row per alpha, one column per curve."""
        names = ["whole"] + list(self.layers)
        width = max(12, digits + 7, *(len(n) + 1 for n in names))
        lines = [f"{'alpha':>8}" + "".join(f"{n:>{width}}" for n in names)]
        for i, a in enumerate(self.alphas):
            row = [self.whole[i]] + [c[i] for c in self.layers.values()]
            lines.append(f"{a:>8.3f}" + "".join(f"{v:>{width}.{digits}g}" for v in row))
        return "\n".join(lines)

    def plot(self, ax=None, title=None, logy=False):
        """Draw the curves (whole network bold, layers thin) on ``ax`` (new figure if None); returns ax."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(5.5, 4))
        ax.plot(self.alphas, self.whole, color="k", lw=2.2, label="whole network")
        for i, (name, curve) in enumerate(self.layers.items()):
            ax.plot(self.alphas, curve, lw=1.3, ls="--", color=f"C{i}", label=f"layer {name} only")
        for a in (0.0, 1.0):
            ax.axvline(a, color="0.7", lw=0.8, zorder=0)
        ax.set_xlabel(r"$\alpha$  ($\theta = (1-\alpha)\,\theta_0 + \alpha\,\theta_1$)")
        ax.set_ylabel("loss")
        if logy:
            ax.set_yscale("log")
        if title:
            ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
        return ax


def _named_parameters(model):
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model: must be a torch.nn.Module, got {model!r}")
    named = list(model.named_parameters())
    if not named:
        raise ValueError(f"model: has no parameters, got {model!r}")
    return named


def _parameter_set(name, theta, named):
    """``theta`` (mapping name -> tensor, e.g. a state_dict, or a sequence in ``parameters()`` order) as a list."""
    import torch

    if isinstance(theta, dict):
        missing = [k for k, _ in named if k not in theta]
        if missing:
            raise ValueError(f"{name}: missing parameters {missing}, got keys {sorted(theta)}")
        values = [theta[k] for k, _ in named]
    elif isinstance(theta, (list, tuple)):
        if len(theta) != len(named):
            raise ValueError(f"{name}: need {len(named)} tensors (model.parameters() order), got {len(theta)}")
        values = list(theta)
    else:
        raise ValueError(f"{name}: must be a dict of tensors (e.g. a state_dict) or a list of tensors, got {theta!r}")
    out = []
    for (key, p), v in zip(named, values):
        if not isinstance(v, torch.Tensor) or v.shape != p.shape:
            raise ValueError(f"{name}: parameter {key!r} must be a tensor of shape {tuple(p.shape)}, got {v!r}")
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{name}: parameter {key!r} has non-finite entries, got {v!r}")
        out.append(v.detach().to(dtype=p.dtype, device=p.device))
    return out


def _layer_groups(model, named):
    """Layer name -> indices into ``named``: the modules owning parameters (as sdekit.torch.layers)."""
    ids = {id(p): i for i, (_, p) in enumerate(named)}
    groups = {}
    for mod_name, module in model.named_modules():
        own = [ids[id(p)] for p in module.parameters(recurse=False) if id(p) in ids]
        if own:
            groups[f"{mod_name or '(root)'} ({type(module).__name__})"] = own
    return groups


def _check_inputs(loss_fn, data, alphas, per_layer):
    if not callable(loss_fn):
        raise ValueError(f"loss_fn: must be callable as loss_fn(model(X), y), got {loss_fn!r}")
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise ValueError(f"data: must be a pair (X, y), got {data!r}")
    alphas = finite_array("alphas", DEFAULT_ALPHAS if alphas is None else alphas, ndim=1)
    if not isinstance(per_layer, (bool, np.bool_)):
        raise ValueError(f"per_layer: must be True or False, got {per_layer!r}")
    return alphas


def linear_interpolation(model, theta0, theta1, loss_fn, data, alphas=None, per_layer=True):
    r"""Loss along the line between two parameter sets, whole network and per layer.

    .. math::

        \theta(\alpha) = (1-\alpha)\,\theta_0 + \alpha\,\theta_1, \qquad
        \ell(\alpha) = \mathrm{loss\_fn}(f_{\theta(\alpha)}(X), y),

    for every alpha (default 41 values in [-0.5, 1.5], Goodfellow et al. 2015).
    Per layer (a layer = a module owning parameters, e.g. each ``nn.Linear``), only
    that layer's parameters follow the line and all others stay at :math:`\theta_1`
    (the trained end point), so alpha = 1 gives the trained network and alpha = 0 the
    trained network with that one layer reset -- the convention of Vlaar & Frankle
    (ICML 2022) and Vlaar's thesis (2022, ch. on linear interpolation).

    The losses are computed with ``torch.no_grad()`` and the model in eval mode;
    the model's parameters and train/eval mode are restored afterwards, also on error.
    At alpha = 0 and 1 the parameters are exactly theta0 and theta1 (the line is
    evaluated as ``(1 - a) * t0 + a * t1``).

    Parameters
    ----------
    model : torch.nn.Module
    theta0, theta1 : dict or sequence of tensors
        Parameter sets: mappings name -> tensor with the keys of
        ``model.named_parameters()`` (a ``state_dict()`` works), or sequences in
        ``model.parameters()`` order. Typically the initialisation and the trained
        parameters.
    loss_fn : callable
        ``loss_fn(model(X), y)`` returning a scalar tensor or float.
    data : (X, y)
    alphas : 1-D array of float, optional
    per_layer : bool
        Also compute one curve per layer.

    Returns
    -------
    Interpolation
        ``.alphas``, ``.whole``, ``.layers``; ``.table()`` and ``.plot()``. A
        non-finite loss (far along an extrapolated line) is stored as ``inf``.

    References
    ----------
    I. Goodfellow, O. Vinyals, A. Saxe, ICLR 2015; T. Vlaar, J. Frankle, ICML 2022.
    """
    import torch

    named = _named_parameters(model)
    alphas = _check_inputs(loss_fn, data, alphas, per_layer)
    t0 = _parameter_set("theta0", theta0, named)
    t1 = _parameter_set("theta1", theta1, named)
    params = [p for _, p in named]
    saved = [p.detach().clone() for p in params]
    was_training = model.training
    X, y = data

    def loss_at(alpha, moving):
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_((1.0 - alpha) * t0[i] + alpha * t1[i] if i in moving else t1[i])
            value = loss_fn(model(X), y)
        value = float(value.detach()) if isinstance(value, torch.Tensor) else value
        if not isinstance(value, numbers.Real):
            raise ValueError(f"loss_fn: must return a scalar, got {value!r}")
        return float(value) if math.isfinite(value) else math.inf

    try:
        model.eval()
        everything = set(range(len(params)))
        whole = np.array([loss_at(a, everything) for a in alphas])
        layers = {}
        if per_layer:
            for name, idx in _layer_groups(model, named).items():
                layers[name] = np.array([loss_at(a, set(idx)) for a in alphas])
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved):
                p.copy_(s)
        model.train(was_training)
    return Interpolation(alphas=alphas, whole=whole, layers=layers)
