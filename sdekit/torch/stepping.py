"""One optimizer step: the groups' words run side by side, sharing the force evaluations.

The words are cut at their (aligned) B's (:class:`~sdekit.torch.layout.Layout`). Between two
B's every group runs its own letters; at a B the closure is called once for all groups if
an A has moved the positions since the last evaluation (lazy force: BAOAB costs one call per
step), with the tensors of the groups that will not kick with this force frozen (multirate
groups off their block's steps); a gradient that the next step's first B needs is kept as
``state[p]["grad"]``.
"""
import torch

from .layout import consumers, runs, substep

__all__ = ["apply", "grads", "whole_steps", "underdamped"]


def apply(item, x):
    """One item of a group's layout: its letter's torch hook, if the letter runs in this step of
    a multirate block (:func:`~sdekit.torch.layout.substep`), for its sub-step at its clock time
    t_n + h (A fractions before it); then RATTLE on a constrained group if the letter moved p."""
    h = x.group["lr"]
    delta = substep(item, h, x.phase, x.rate, x.rule)
    if delta is None:
        return
    letter = item[0]
    letter.torch(x, delta, x.t + item[3] * h)
    if x.constraint is not None and "p" in letter.moves:
        x.rattle()


def grads(group):
    """The loss gradients of a group's tensors (zeros where there is none)."""
    out = []
    for p in group["params"]:
        if p.grad is None:
            out.append(torch.zeros_like(p))
        elif p.grad.is_sparse:
            raise ValueError("params: sparse gradients are not supported")
        else:
            out.append(p.grad)
    return out


def whole_steps(opt, closure, groups, layouts, xs):
    """Overdamped words (EM, LM): one gradient at the start of the step, then each group's step."""
    loss = opt._evaluate(closure, xs[0].t)
    for group, layout, x in zip(groups, layouts, xs):
        x.grads = grads(group)
        layout.whole_step.torch(x, group["lr"], x.t)
    return loss


def underdamped(opt, closure, groups, layouts, xs, flags, n):
    """The words of all groups, cut at their (aligned) B's, with shared lazy force evaluations."""
    loss, last = None, None        # last: the B index of this step's latest force evaluation
    for j in range(len(flags)):
        for layout, x in zip(layouts, xs):
            for item in layout.segments[j]:
                apply(item, x)
        if flags[j] or (n == 0 and last is None):
            # the groups that kick with this force, now or (kept) at the next step's first B's
            need = [any(runs(lay.kicks[b], (n + off) % x.rate, x.rate, x.rule) for off, b in consumers(flags, j))
                    for lay, x in zip(layouts, xs)]
            if any(need):
                loss = opt._evaluate(closure, xs[0].t + layouts[0].times[j] * groups[0]["lr"], xs, need)
                last = j
                for group, x, wanted in zip(groups, xs, need):
                    x._fresh = wanted
                    if wanted:
                        x._evaluated = grads(group)
        for layout, x in zip(layouts, xs):
            item = layout.kicks[j]
            if runs(item, x.phase, x.rate, x.rule):
                x.grads = x._evaluated if last is not None else [st["grad"] for st in x.states]
                apply(item, x)
    for layout, x in zip(layouts, xs):
        for item in layout.segments[-1]:
            apply(item, x)
    if last is not None and not flags[0]:
        _keep_gradients(groups, xs)
    for x in xs:
        if x.xi is not None:
            x._store_xi()
    return loss


def _keep_gradients(groups, xs):
    """The next step's first B uses this step's last gradient: keep a copy in ``state[p]["grad"]``."""
    for group, x in zip(groups, xs):
        if not x._fresh:
            continue
        now, kept = grads(group), []
        for st, g in zip(x.states, now):
            if "grad" not in st:
                st["grad"] = torch.empty_like(g)
            kept.append(st["grad"])
        torch._foreach_copy_(kept, now)
