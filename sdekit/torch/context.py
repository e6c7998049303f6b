"""What a letter's torch hook sees of one parameter group in one step, and what the optimizer
keeps of a group between steps.

:class:`Letters` is the context a :meth:`~sdekit.letters.Letter.torch` hook receives;
:class:`GroupCache` (a dataclass, one per group) holds the buffers and tensors derived from
a group that are reused from step to step: the flat noise buffer, the values computed from
xi, the degrees of freedom, the owners of slack momenta and the constraint's tensor form.
It is a cache, not state: ``load_state_dict`` empties it and nothing in it is saved.
"""
import sys
from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .._checks import DivergenceError
from .manifolds import tensor_form
from .settings import at

__all__ = ["Letters", "GroupCache", "xi_tag"]

_COEFFICIENTS_MAX = 1024
"""The shared coefficient memo (:meth:`Letters.memo`) is cleared when it holds more entries."""


def _operators():
    """The operators the hooks use, ``sdekit.torch.ops`` and ``sdekit.torch._tops``, read from
    the package at every step: the test harness (``pytest --break-letter``) swaps them there."""
    package = sys.modules[__package__]
    return package.ops, package._tops


def xi_tag(states):
    """Identifies the stored xi tensors' current values (identity and in-place version counter)."""
    return tuple((id(st["xi"]), st["xi"]._version) for st in states)


def positions(state, p):
    """A constrained tensor's position tuple: (p,) or (p, slack)."""
    return (p, state["slack"]) if "slack" in state else (p,)


def momenta(state):
    """A constrained tensor's momentum tuple: (p_w,) or (p_w, p_s)."""
    return (state["momentum"], state["slack_momentum"]) if "slack" in state else (state["momentum"],)


@dataclass(eq=False)
class GroupCache:
    """Buffers and tensors derived from one parameter group, kept between steps.

    Each is rebuilt when its key (the identities of the tensors it was made for) no
    longer fits, so a group whose tensors change gets fresh ones.

    Attributes
    ----------
    noise_key, noise, noise_views
        One flat buffer for the standard normals of a letter and its views shaped as the
        tensors (:meth:`Letters.normals`: one ``normal_`` call per letter).
    xi_values : dict
        name -> (key, value): values computed from xi (:meth:`Letters.xi_cached`).
    ndof_key, ndof
        The degrees of freedom of the tensors, on the device.
    owner_key, slack_owner
        The tensor index of each slack momentum, on the device (Circle groups).
    form
        The tensor form of the group's constraint (:func:`~sdekit.torch.manifolds.tensor_form`).
    """

    noise_key: tuple = ()
    noise: Optional[torch.Tensor] = None
    noise_views: list = field(default_factory=list)
    xi_values: dict = field(default_factory=dict)
    ndof_key: tuple = ()
    ndof: Optional[torch.Tensor] = None
    owner_key: tuple = ()
    slack_owner: Optional[torch.Tensor] = None
    form_of: Any = None
    form: Any = None

    def noise_for(self, tensors):
        """The flat buffer and its views shaped as ``tensors`` (made on first use)."""
        key = tuple(id(p) for p in tensors)
        if self.noise is None or self.noise_key != key:
            numels = [p.numel() for p in tensors]
            self.noise = torch.empty(sum(numels), dtype=tensors[0].dtype, device=tensors[0].device)
            self.noise_views = [v.view_as(p) for v, p in zip(self.noise.split(numels), tensors)]
            self.noise_key = key
        return self.noise, self.noise_views

    def ndof_for(self, params, counts):
        """The degrees of freedom ``counts()`` of ``params`` as a tensor on their device."""
        key = tuple(id(p) for p in params)
        if self.ndof is None or self.ndof_key != key:
            self.ndof = torch.tensor([float(n) for n in counts()], dtype=params[0].dtype, device=params[0].device)
            self.ndof_key = key
        return self.ndof

    def owner_for(self, owners, device):
        """The owners of the slack momenta as a tensor on the device (no copy inside a step)."""
        key = tuple(owners)
        if self.slack_owner is None or self.owner_key != key:
            self.slack_owner = torch.tensor(owners, device=device)
            self.owner_key = key
        return self.slack_owner

    def form_for(self, constraint):
        """The tensor form of ``constraint`` (None for None)."""
        if constraint is None:
            return None
        if self.form_of is not constraint:
            self.form, self.form_of = tensor_form(constraint), constraint
        return self.form


class Letters:
    r"""What a letter's :meth:`~sdekit.letters.Letter.torch` hook sees of one parameter group in one step.

    The hook updates the tensors in place with ``torch._foreach_*`` ops (on the lists
    below, so that a group costs a few kernel launches whatever its number of tensors).

    Attributes
    ----------
    index : int
        The group's index in ``param_groups``.
    group : dict
        The parameter group: its settings (``lr``, ``gamma``, ``kT``, ``eps``,
        ``sigma_A``, ``rate``, ...); read time-dependent ones with :meth:`at`.
    params : list of Tensor
        The positions q (the parameters).
    states : list of dict
        The optimizer's state of each tensor (``state[p]``).
    moms : list of Tensor or None
        The momenta p (unit mass); None for a whole-step word (EM, LM).
    all_moms : list of Tensor or None
        ``moms`` followed by the slack momenta of Circle-constrained tensors (what O
        acts on); ``owner[i]`` is the index of the tensor that ``all_moms[i]`` belongs to.
    constraint : Manifold or None
        The group's constraint (the core's object; ``form`` its tensor form,
        :func:`~sdekit.torch.manifolds.tensor_form`). A letter that moves p is followed by
        RATTLE (done by the optimizer); one that moves q calls :meth:`constrained_drift`
        or does SHAKE itself.
    positions, momenta : list of tuple of Tensor
        On a constrained group: per tensor ``(q,)`` or ``(q, slack)`` and the momenta alike.
    grads : list of Tensor
        The loss gradients (F = -grads) for a letter that reads the force (B, EM, LM),
        from the step's shared evaluation or kept from the previous step.
    xi : Tensor or None
        The thermostat variables, one per tensor, stacked (1-D), in words with a letter
        that moves ``"xi"`` (D); assign a new tensor to change them (they are stored back
        at the end of the step).
    ndof : Tensor
        Degrees of freedom N of each tensor (:meth:`SDEOptimizer.ndof`), with ``xi``.
    cache : GroupCache
        The group's buffers kept between steps (noise buffer, xi-derived values, ...).
    t : float
        The group's clock at the start of the step (hooks receive their own time).
    rate, phase : int
        Multirate factor k and the step's phase n mod k.
    rule : str
        The group's ``multirate`` rule ("published" or "impulse").
    ops, tops : namespace
        The operators (:mod:`sdekit.operators`) on numbers and on tensors
        (``ops.bind(torch.exp, torch.expm1, torch.sqrt, torch.log)``); the test harness swaps them
        (``--break-letter``), so hooks must use these, not import the operators.
    """

    def __init__(self, index, group, layout, states, t, phase, cache, noise, memo_store, step, ndof=None):
        self.index, self.group, self.params, self.states = index, group, group["params"], states
        self.constraint, self.rate, self.phase = group["constraint"], group["rate"], phase
        self.rule = group["multirate"]
        self.t, self.cache, self._noise, self._memo, self._step = t, cache, noise, memo_store, step
        self.form = cache.form_for(self.constraint)
        self.ops, self.tops = _operators()
        self.grads, self._evaluated, self._fresh = None, None, False
        self.moms = self.all_moms = self.owner = self.positions = self.momenta = None
        if layout.whole_step is None:
            moms = [st["momentum"] for st in states]
            slack = [k for k, st in enumerate(states) if "slack" in st]
            self.moms = moms
            self.all_moms = moms + [states[k]["slack_momentum"] for k in slack]
            self.owner = list(range(len(moms))) + slack
            if self.constraint is not None:     # position and momentum tuples per tensor
                self.positions = [positions(st, p) for st, p in zip(states, self.params)]
                self.momenta = [momenta(st) for st in states]
        self._xi = self.ndof = self.xi_tag = None
        if layout.has_xi:
            self._xi = torch.stack([st["xi"] for st in states])
            self.ndof = cache.ndof_for(self.params, ndof)
            self.xi_tag = xi_tag(states)

    @property
    def xi(self):
        return self._xi

    @xi.setter
    def xi(self, value):
        self._xi = value
        self.xi_tag = object()     # new values: what was computed from the old ones is stale

    def at(self, name, t):
        """The group's setting ``name`` (a number, or a callable of t) at time t, checked."""
        return at(name, self.group[name], t)

    def normals(self, tensors):
        """Standard normals shaped as ``tensors``: views of one flat buffer filled by one draw
        of the optimizer's noise (one call: one draw, in word order)."""
        return self._noise.draw(self.cache, tensors)

    def ou_update(self, moms, c, s):
        """The O update :math:`p \\leftarrow c p + s R` in place on ``moms``, R one draw of normals
        shaped as them; ``c``, ``s`` numbers (no draw when s == 0) or lists of 0-d tensors, one
        per tensor. With ``noise="philox"`` the numbers are made inside the update's loop
        (:func:`sdekit.torch.philox_normals.ou`: one pass over p, no noise buffer)."""
        self._noise.ou(self.cache, moms, c, s)

    def kinetic(self):
        """:math:`p^Tp` of each tensor (a 1-D tensor), its slack momenta's included."""
        moms = self.all_moms
        kin = torch.stack(torch._foreach_norm(moms)).square()
        if len(moms) > len(self.moms):  # add each slack momentum's |p_s|^2 to its tensor's
            n = len(self.moms)
            owner = self.cache.owner_for(self.owner[n:], kin.device)
            kin = kin[:n].index_add(0, owner, kin[n:])
        return kin

    def constrained_drift(self, delta):
        """A on the group's manifold: the constraint's drift (SHAKE and RATTLE) of each tensor;
        :class:`sdekit.DivergenceError` if SHAKE does not converge."""
        con = self.constraint
        for k, (p, q, mom) in enumerate(zip(self.params, self.positions, self.momenta)):
            if self.form.drift(q, mom, delta) < 0:
                step = self._step + 1
                raise DivergenceError(
                    f"constraint: SHAKE did not converge for {con!r} at step {step} (group {self.index}, "
                    f"tensor {k} of shape {tuple(p.shape)}; tol={getattr(con, 'tol', None)}, "
                    f"max_iter={getattr(con, 'max_iter', None)}, delta={delta}); reduce lr", step=step)

    def rattle(self):
        """Project a constrained group's momenta onto the tangent spaces (after a letter that moves p)."""
        if self.constraint is not None:
            for q, mom in zip(self.positions, self.momenta):
                self.form.rattle(q, mom)

    def memo(self, key, compute):
        """``compute()``, remembered under the hashable ``key`` (shared by all groups; bounded)."""
        cache = self._memo
        value = cache.get(key)
        if value is None:
            value = compute()
            if len(cache) > _COEFFICIENTS_MAX:
                cache.clear()
            cache[key] = value
        return value

    def xi_cached(self, name, key, compute):
        """``compute()`` of a value that depends on :attr:`xi` and on ``key``, reused while both
        are unchanged, from one step to the next too (BAODOAB: the next step's first O has the
        same xi and sub-step as this step's last)."""
        store = self.cache.xi_values
        full = (self.xi_tag,) + tuple(key)
        cached = store.get(name)
        if cached is not None and cached[0] == full:
            return cached[1]
        value = compute()
        store[name] = (full, value)
        return value

    def _store_xi(self):
        """Write :attr:`xi` back to the tensors' state (end of the step); what was computed from
        the final xi stays valid for the next step's."""
        torch._foreach_copy_([st["xi"] for st in self.states], list(self._xi.unbind()))
        store = self.cache.xi_values
        if store:
            tag = xi_tag(self.states)
            for name, (key, value) in list(store.items()):
                if key[0] is self.xi_tag:
                    store[name] = ((tag,) + key[1:], value)
