"""The optimizer's state dict: torch's, plus the noise's state (``generator_state``: a
torch.Generator's bytes, or Philox's (key, draws) as int64), the step count and the clocks.

Everything in it is a tensor, a number or a string (no pickled objects): a constraint is
written as its repr and a callable setting (gamma or kT of t) as ``"callable"``; loading
keeps the loading optimizer's own objects and checks that the saved strings match them.
"""
import numbers

import torch

from ..constraints import Manifold

__all__ = ["state_dict", "load_state_dict", "portable"]

_OBJECTS = ("constraint", "gamma", "kT")
"""The group settings that may hold objects (a constraint, callables of t)."""


def portable(value):
    """A group setting as saved in a state dict: constraints by repr, callables as "callable"."""
    if isinstance(value, Manifold):
        return repr(value)
    if callable(value) and not isinstance(value, (numbers.Real, str)):
        return "callable"
    return value


def state_dict(opt, sd):
    """``sd`` (torch's state dict of ``opt``) with portable settings and the ``"sdekit"`` entry."""
    for g in sd["param_groups"]:
        for k in _OBJECTS:
            g[k] = portable(g.get(k))
    clocks = [opt._clocks.get(i, [opt._t0, 0, g["lr"]]) for i, g in enumerate(opt.param_groups)]
    sd["sdekit"] = {"generator_state": opt._noise.generator_state().clone(),
                    "steps": torch.tensor(opt._n_steps, dtype=torch.int64),
                    "clocks": torch.tensor([[float(t), float(n), float(h)] for t, n, h in clocks],
                                           dtype=torch.float64).reshape(-1, 3)}
    return sd


def load_state_dict(opt, state_dict, load):
    """Load ``state_dict`` into ``opt`` (``load``: torch's ``Optimizer.load_state_dict`` bound to it);
    the tensors are copied. A group saved before the ``multirate`` setting existed (issue 17)
    gets the rule it ran then: "impulse" if its rate is not 1."""
    state_dict = dict(state_dict)
    extra = state_dict.pop("sdekit", None)
    if extra is None:
        raise ValueError("state_dict: has no 'sdekit' entry (generator state, step count); "
                         "was it made by SDEOptimizer.state_dict()?")
    # settings that are objects (constraints, callables) stay this optimizer's own
    own = [{k: g[k] for k in _OBJECTS if k == "constraint" or callable(g[k])} for g in opt.param_groups]
    for saved, mine in zip(state_dict.get("param_groups", []), own):
        for k in _OBJECTS:
            here = portable(mine[k]) if k in mine else None
            if (k in mine or saved.get(k) == "callable") and saved.get(k) != here:
                raise ValueError(f"{k}: the state dict was saved with {k}={saved.get(k)!r}, this "
                                 f"optimizer has {k}={here if k in mine else 'a number'!r}")
    opt._noise.check_state(extra["generator_state"])     # another noise's state: ValueError, nothing loaded
    load(state_dict)
    for g, mine in zip(opt.param_groups, own):
        g.update(mine)
        g.setdefault("multirate", "impulse" if g.get("rate", 1) != 1 else "published")
    for st in opt.state.values():
        for k, v in list(st.items()):
            if isinstance(v, torch.Tensor):
                st[k] = v.clone()
    opt._noise.set_state(extra["generator_state"].clone())
    opt._n_steps = int(extra["steps"])
    clocks = extra.get("clocks")
    if clocks is not None:
        opt._clocks = {i: [float(t), int(n), float(h)] for i, (t, n, h) in enumerate(clocks.tolist())}
