"""A parameter group's settings: checked when the group is added, read at every step.

:func:`check_group` turns a user's group dict into the optimizer's (defaults filled in,
every setting checked, the word read into a :class:`~sdekit.torch.layout.Layout`);
:func:`at` reads a setting that may be a callable of the time t.
"""
import math
import numbers

import torch

from .._checks import real
from ..schemes import Scheme
from .layout import MULTIRATE_RULES, layout_of, scheme_key
from .manifolds import tensor_form

__all__ = ["check_group", "at", "as_groups", "kT_of", "layers"]

def real_or_schedule(name, value, **bounds):
    """A checked real number, or a callable of the time t (checked when called, see at)."""
    if callable(value) and not isinstance(value, numbers.Real):
        return value
    return real(name, value, **bounds)


def at(name, value, t):
    """The setting ``value`` (a number, or a callable of t) at time t, checked."""
    if not callable(value):
        return value
    v = value(t)
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not (math.isfinite(v) and v >= 0):
        raise ValueError(f"{name}: {name}(t) must be finite and >= 0, got {v!r} at t={t!r}")
    return float(v)


def _multirate(value):
    if value not in MULTIRATE_RULES:
        raise ValueError(f"multirate: must be one of {MULTIRATE_RULES} (the meaning of rate=k, see "
                         f"SDEOptimizer), got {value!r}")
    return value


def _rate(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"rate: must be an integer >= 1 (the group's momentum is updated every rate-th "
                         f"step), got {value!r}")
    return int(value)


def as_groups(groups):
    """Parameter groups as dicts (a bare iterable of tensors becomes {"params": [...]}), copied."""
    return [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in groups]


def kT_of(kT, sigma):
    """The temperature of an SGLD-type step given as kT or as its noise sigma = sqrt(2 kT)
    (default sigma = 0.01)."""
    if kT is not None and sigma is not None:
        raise ValueError(f"sigma: give kT or sigma, not both (kT={kT!r}, sigma={sigma!r})")
    if kT is not None:
        return kT
    sigma = 0.01 if sigma is None else real("sigma", sigma, low=0.0)
    return 0.5 * sigma * sigma


def _constraint(value, params, layout):
    """A group's ``constraint``: None, or a Sphere, Circle or Stiefel that fits every tensor."""
    if value is None:
        return None
    form = tensor_form(value)
    if layout.whole_step is not None:
        raise ValueError(f"constraint: overdamped word {layout.scheme.word!r} does not support constraints; "
                         f"use BAOAB (gamma=inf for the overdamped limit, see ConstrainedSGLD)")
    for letter in layout.letters:
        if not letter.constrained:
            raise ValueError(f"constraint: letter {letter.name!r} ({letter.title}) of {layout.scheme.word!r} "
                             f"does not run on constrained systems (constrained=False), got {value!r}")
    for p in params:
        form.check(p)
    return value


def check_group(param_group, defaults):
    """The group as the optimizer keeps it: a copy with the defaults filled in (``tau`` read as
    ``kT``), every setting checked (ValueError naming it), the word written as its string or
    JSON form; returns ``(group, layout)``."""
    if not isinstance(param_group, dict):
        raise ValueError(f"params: a parameter group must be a dict, got {type(param_group).__name__}")
    group = dict(param_group)
    if "tau" in group:
        if "kT" in group:
            raise ValueError(f"tau: is an alias of kT; give one, got tau={group['tau']!r}, kT={group['kT']!r}")
        group["kT"] = group.pop("tau")
    for name, value in defaults.items():
        group.setdefault(name, value)
    layout = layout_of(scheme_key(group["scheme"]))
    plain = layout.scheme.overdamped or Scheme(layout.scheme.word) == layout.scheme
    group["scheme"] = layout.scheme.word if plain else layout.scheme.to_json()
    group["lr"] = real("lr", group["lr"], low=0.0, low_open=True)
    group["gamma"] = real_or_schedule("gamma", group["gamma"], low=0.0, allow_inf=True)
    group["kT"] = real_or_schedule("kT", group["kT"], low=0.0)
    group["eps"] = real("eps", group["eps"], low=0.0)
    group["sigma_A"] = real("sigma_A", group["sigma_A"], low=0.0, allow_none=True)
    group["xi0"] = real("xi0", group["xi0"])
    group["rate"] = _rate(group["rate"])
    group["multirate"] = _multirate(group["multirate"])
    if group["rate"] != 1 and layout.whole_step is not None:
        raise ValueError(f"rate: overdamped word {layout.scheme.word!r} has no momentum to update at "
                         f"a slower rate, got rate={group['rate']}")
    if not callable(group["gamma"]) and math.isinf(group["gamma"]) and (
            layout.has_xi or group["sigma_A"] is not None):
        raise ValueError(f"gamma: inf (momentum redrawn) needs a word without D and no sigma_A, "
                         f"got scheme {layout.scheme.word!r}, sigma_A={group['sigma_A']!r}")
    params = group["params"]
    params = [params] if isinstance(params, torch.Tensor) else list(params)
    for p in params:
        if not isinstance(p, torch.Tensor):
            raise ValueError(f"params: must be tensors, got {type(p).__name__}")
        if not p.is_floating_point():
            raise ValueError(f"params: must be floating point, got dtype {p.dtype}")
    if not params:
        raise ValueError("params: a parameter group has no tensors")
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1:
        raise ValueError(f"params: the tensors of one group must share a dtype, got {sorted(map(str, dtypes))}")
    group["params"] = params
    group["constraint"] = _constraint(group["constraint"], params, layout)
    return group, layout


def layers(model):
    """The modules of ``model`` that own parameters directly, in order, with those parameters.

    A "layer" is a module with parameters of its own (``recurse=False``) that require
    gradients: for ``nn.Sequential(Linear, ReLU, Linear)`` the two Linear modules.
    """
    out = []
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.requires_grad]
        if own:
            out.append((module, own))
    return out
