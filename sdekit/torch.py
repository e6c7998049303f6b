r"""The autograd adapter: splitting schemes as a ``torch.optim.Optimizer``.

:class:`SDEOptimizer` runs any splitting word of :mod:`sdekit.schemes` on the
parameters of a network, treating the parameters as positions q, keeping momenta p
(unit mass) and, for words with a D letter, one thermostat variable xi per tensor.
The force is minus the (mini-batch) gradient of the loss, so a stochastic gradient
is the force of the SDE

.. math::

    dq = p\,dt, \qquad
    dp = -\nabla L(q)\,dt - (\gamma + \xi) p\,dt + \sigma\,dW, \qquad
    d\xi = \varepsilon\,(p^T p - N k_BT)\,dt,

with :math:`\sigma = \sqrt{2\gamma k_BT}` unless a driving noise :math:`\sigma_A`
is set. Each parameter group has its own word and its own h (``lr``), gamma, kT,
eps, sigma_A; the groups share one gradient evaluation per step (lazy force). The
presets :class:`AdLaLa`, :class:`LOL`, :class:`MultiLayerLangevin`, :class:`SGLD`
and :class:`ConstrainedSGLD` are thin constructors over :class:`SDEOptimizer`.

A group may also keep its tensors on a manifold (``constraint=``: the core's
:class:`~sdekit.constraints.Circle`, :class:`~sdekit.constraints.Stiefel` or
:class:`~sdekit.constraints.Sphere`, through their ``tensor_*`` methods), update its
read the gradient only every k-th step (``rate=k``, multirate training), and take gamma and
kT as functions of the time t (:attr:`SDEOptimizer.time`).

What a letter does to a parameter group is its :meth:`~sdekit.letters.Letter.torch`
hook, in its module of :mod:`sdekit.letters` (A: ``drift``, B: ``kick``, O: ``ou``,
D: ``thermostat``, EM/LM: ``overdamped``), which sees the group through a
:class:`Letters` context; the hooks take their coefficients from :mod:`sdekit.operators`
(``ou_coefficients`` for O, ``thermostat`` for D, and the affine maps
``drift``/``kick``/``euler_maruyama``/``leimkuhler_matthews`` evaluated at unit
arguments for the rest) and apply them in place with ``torch._foreach_*`` ops. This
module cuts the words at their force letters, shares the gradient evaluations between
the groups, schedules multirate groups, and keeps the state. A registered letter with
a ``torch`` hook runs here too; a word with a letter that has none is refused when
the group is added.

References
----------
B. Leimkuhler, T. Matthews and T. Vlaar, "Partitioned integrators for thermodynamic
parameterization of neural networks", Foundations of Data Science 1 (2019) 457-489,
arXiv:1908.11843 (AdLaLa, LOL, multi-layer Langevin). B. Leimkuhler and C. Matthews,
Appl. Math. Res. Express 2013 (BAOAB). B. Leimkuhler and X. Shang, SIAM J. Sci.
Comput. 38 (2016) A712 (adaptive Langevin, BADODAB).
"""
import math
import numbers
from functools import lru_cache

import torch

from . import letters as _letters
from . import operators as ops
from ._checks import DivergenceError, real
from .constraints import Manifold
from .schemes import Scheme

__all__ = ["SDEOptimizer", "AdLaLa", "LOL", "MultiLayerLangevin", "SGLD", "ConstrainedSGLD",
           "sgd_equivalent", "layers"]

_tops = ops.bind(torch.exp, torch.expm1, torch.sqrt)
"""The operators on tensors (for the thermostatted O, whose friction gamma + xi is a tensor)."""

_ALIGN_TOL = 1e-12


# ----------------------------------------------------------------------------- schemes

class _Layout:
    """A word cut at its force letters (B): ``segments[0] B segments[1] B ... B segments[k]``.

    Each item, in ``segments`` and in ``kicks`` (the B's), is ``(letter, fraction, place,
    a_before)``: the :class:`~sdekit.letters.Letter`, its fraction of h, ``a_before`` the
    cumulative fraction of the clock letters (A) before it (its clock time in units of h)
    and ``place`` one of "lead" (before the word's first clock letter), "mid" or "trail"
    (after its last), which decides in which step of a block a multirate group runs the
    letter (:func:`_active`). ``times[j]`` is the clock time of the j-th B (where its
    force is evaluated) and ``flags[j]`` whether it needs a fresh gradient in the steady
    state. Everything is read from the letters' metadata: ``needs_force`` (a B),
    ``clock`` (an A), ``moves`` (``"xi"``: the group keeps thermostat variables).
    """

    def __init__(self, scheme):
        self.scheme = scheme
        self.whole_step = scheme.whole_step
        self.letters = (scheme.whole_step,) if scheme.whole_step else tuple(e.letter for e in scheme.entries)
        self.segments, self.kicks, self.times, self.flags = [[]], [], [], []
        clocks = [i for i, e in enumerate(scheme.entries) if e.letter.clock]
        first, last = (clocks[0], clocks[-1]) if clocks else (len(scheme.entries), -1)
        t = 0.0
        for i, e in enumerate(scheme.entries):
            place = "lead" if i < first else "trail" if i > last else "mid"
            item = (e.letter, e.fraction, place, t)
            if e.letter.needs_force:
                self.kicks.append(item)
                self.times.append(t)
                self.flags.append(e.new_force)
                self.segments.append([])
            else:
                self.segments[-1].append(item)
            if e.letter.clock:
                t += e.fraction
        self.has_xi = any("xi" in letter.moves for letter in self.letters)


def _active(place, phase, rate):
    """Whether a non-A letter at ``place`` runs in the step of phase ``phase`` (= step mod rate).

    A group with rate k runs the letters placed by this rule once per block of k steps
    (its B's under the "published" rule, all but its A's under "impulse", see
    :func:`_runs`): those before the word's first A in the block's first step, those
    after its last A in the block's last step, the others in its middle step
    (k - 1) // 2 (the centre of the block for odd k). Rate 1: every letter every step.
    """
    if rate == 1:
        return True
    return phase == (0 if place == "lead" else rate - 1 if place == "trail" else (rate - 1) // 2)


MULTIRATE_RULES = ("published", "impulse")
"""The meanings of a group's ``rate=k`` (its ``multirate`` setting; see :class:`SDEOptimizer`)."""


def _runs(item, phase, rate, rule="published"):
    """Whether the letter of a layout item runs in the step of phase ``phase`` of a multirate
    block: a clock letter (A) in every step; a force letter (B) as :func:`_active` says; the
    others (O, D) in every step under the ``"published"`` rule, as :func:`_active` says under
    ``"impulse"``."""
    letter, _, place, _ = item
    if rate == 1 or letter.clock or (rule == "published" and not letter.needs_force):
        return True
    return _active(place, phase, rate)


def _substep(item, h, phase, rate, rule="published"):
    """The sub-step of a layout item in the step of phase ``phase``: f h for a clock letter (A)
    and, under the ``"published"`` rule, for every letter; f h k for the non-clock letters
    under ``"impulse"`` (k = ``rate``); None if it does not run in that step (:func:`_runs`)."""
    if not _runs(item, phase, rate, rule):
        return None
    f = item[1]
    return f * h if (item[0].clock or rule == "published") else f * h * rate


@lru_cache(maxsize=256)
def _consumers(flags, j):
    """The B's that use a force evaluated at the j-th B: ((step offset, B index), ...).

    They are B j and the following B's up to the next fresh evaluation; if there is
    none later in the word, also the next step's first B's (first-same-as-last)."""
    out = [(0, j)]
    b = j + 1
    while b < len(flags) and not flags[b]:
        out.append((0, b))
        b += 1
    if b == len(flags):
        b = 0
        while b < len(flags) and not flags[b]:
            out.append((1, b))
            b += 1
    return tuple(out)


def _scheme_key(value):
    """A hashable form of a group's ``scheme`` entry (a word or (letter, fraction) pairs)."""
    if isinstance(value, Scheme):
        if getattr(value, "geodesic_steps", 1) != 1:
            raise ValueError(f"scheme: geodesic sub-steps (constrained runs) are not supported by "
                             f"SDEOptimizer, got {value!r}")
        value = value.word if value.overdamped else [[l, f] for l, f in value.steps]
    if isinstance(value, dict):
        raise ValueError(f"scheme: expected a word or a list of (letter, fraction) pairs, got {value!r}")
    if isinstance(value, str):
        return value
    try:
        return tuple((str(l), float(f)) for l, f in value)
    except (TypeError, ValueError):
        raise ValueError(f"scheme: expected a word or a list of (letter, fraction) pairs, got {value!r}") from None


_WHERE = "the torch optimizer (sdekit.torch.SDEOptimizer)"


@lru_cache(maxsize=256)
def _cached_layout(key):
    try:
        scheme = Scheme(list(key) if isinstance(key, tuple) else key)
    except ValueError as err:
        raise ValueError(f"{err}; in a parameter group of {_WHERE}") from None
    layout = _Layout(scheme)
    for letter in layout.letters:
        if not letter.supports("torch"):
            raise ValueError(f"scheme: {letter.missing('torch', _WHERE)}")
    if not scheme.whole_step and not (any(letter.moves_positions for letter in layout.letters)
                                      and any(letter.needs_force for letter in layout.letters)):
        raise ValueError(f"scheme: a parameter group's word must contain A and B (a letter that moves the "
                         f"parameters and one that reads the gradient), or be 'EM'/'LM', got {scheme.word!r}")
    return layout


def _layout(key):
    """The :class:`_Layout` of a group's ``scheme`` key (cached while the alphabet keeps its letters)."""
    layout = _cached_layout(key)
    alphabet = _letters.alphabet()
    if any(alphabet.get(letter.name) is not letter for letter in layout.letters):
        _cached_layout.cache_clear()     # a letter was replaced or removed since: read the word again
        layout = _cached_layout(key)
    return layout


def _aligned(layouts):
    """Check that the groups' words can share gradients; return the combined B flags.

    Rule: either every word is overdamped (EM/LM: one gradient at the start of the
    step), or none is and all words have the same number of B's with the same
    cumulative A fraction before each B (the B's come at the same *times*, so the
    positions of all groups are at the same point when the force is evaluated). The
    B fractions may differ, and between two B's each group runs its own letters:
    "BAOAB", "BADODAB", "BAODOAB" and "OBABO" all align; "ABOBA" does not align
    with "BAOAB" (its B's come at time h/2).
    """
    first = layouts[0]
    kinds = {lay.whole_step is not None for lay in layouts}
    if len(kinds) > 1:
        words = [lay.scheme.word for lay in layouts]
        raise ValueError(f"scheme: overdamped (EM/LM) and underdamped groups cannot share gradients, got {words}")
    if first.whole_step is not None:
        return ()
    for lay in layouts[1:]:
        if (len(lay.times) != len(first.times)
                or any(abs(a - b) > _ALIGN_TOL for a, b in zip(lay.times, first.times))):
            raise ValueError(
                f"scheme: groups' words cannot share gradients: {first.scheme.word!r} evaluates the force "
                f"at times {list(first.times)} (in units of h, cumulative A fraction before each B) but "
                f"{lay.scheme.word!r} at {list(lay.times)}")
    return tuple(any(lay.flags[j] for lay in layouts) for j in range(len(first.times)))


# ----------------------------------------------------------------------------- checks

def _real_or_schedule(name, value, **bounds):
    """A checked real number, or a callable of the time t (checked when called, see _at)."""
    if callable(value) and not isinstance(value, numbers.Real):
        return value
    return real(name, value, **bounds)


def _at(name, value, t):
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


def _as_groups(groups):
    """Parameter groups as dicts (a bare iterable of tensors becomes {"params": [...]}), copied."""
    return [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in groups]


def _kT_of(kT, sigma):
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
    if not isinstance(value, Manifold):
        raise ValueError(f"constraint: must be None or an sdekit.constraints Sphere, Circle or Stiefel, "
                         f"got {value!r}")
    if layout.whole_step is not None:
        raise ValueError(f"constraint: overdamped word {layout.scheme.word!r} does not support constraints; "
                         f"use BAOAB (gamma=inf for the overdamped limit, see ConstrainedSGLD)")
    for letter in layout.letters:
        if not letter.constrained:
            raise ValueError(f"constraint: letter {letter.name!r} ({letter.title}) of {layout.scheme.word!r} "
                             f"does not run on constrained systems (constrained=False), got {value!r}")
    for p in params:
        value.tensor_check(p)
    return value


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


# ----------------------------------------------------------------------------- what a letter sees

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
        The group's constraint. A letter that moves p is followed by RATTLE (done by the
        optimizer); one that moves q calls :meth:`constrained_drift` or does SHAKE itself.
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
    t : float
        The group's clock at the start of the step (hooks receive their own time).
    rate, phase : int
        Multirate factor k and the step's phase n mod k.
    ops, tops : namespace
        The operators (:mod:`sdekit.operators`) on numbers and on tensors
        (``ops.bind(torch.exp, torch.expm1, torch.sqrt)``); the test harness swaps them
        (``--break-letter``), so hooks must use these, not import the operators.
    """

    def __init__(self, opt, index, group, layout, n):
        self._opt = opt
        states = opt._group_state(group, layout)
        self.index, self.group, self.params, self.states = index, group, group["params"], states
        self.constraint, self.rate, self.phase = group["constraint"], group["rate"], n % group["rate"]
        self.rule = group["multirate"]
        self.t = opt._clock(index, group, n)
        self.ops, self.tops = ops, _tops
        self.grads, self._evaluated, self._fresh = None, None, False
        self.moms = self.all_moms = self.owner = self.positions = self.momenta = None
        if layout.whole_step is None:
            moms = [st["momentum"] for st in states]
            slack = [k for k, st in enumerate(states) if "slack" in st]
            self.moms = moms
            self.all_moms = moms + [states[k]["slack_momentum"] for k in slack]
            self.owner = list(range(len(moms))) + slack
            if self.constraint is not None:     # position and momentum tuples per tensor
                self.positions = [opt._positions(p) for p in self.params]
                self.momenta = [opt._momenta(p) for p in self.params]
        self._xi = self.ndof = self.xi_tag = None
        if layout.has_xi:
            self._xi = torch.stack([st["xi"] for st in states])
            self.ndof = opt._ndof(index, group)
            self.xi_tag = opt._xi_tag(states)

    @property
    def xi(self):
        return self._xi

    @xi.setter
    def xi(self, value):
        self._xi = value
        self.xi_tag = object()     # new values: what was computed from the old ones is stale

    def at(self, name, t):
        """The group's setting ``name`` (a number, or a callable of t) at time t, checked."""
        return _at(name, self.group[name], t)

    def normals(self, tensors):
        """Standard normals shaped as ``tensors``: views of one flat buffer filled by one
        ``normal_`` from the optimizer's generator (one call: one draw, in word order)."""
        buf, views = self._opt._noise(self.index, tensors)
        buf.normal_(generator=self._opt._generator)
        return views

    def kinetic(self):
        """:math:`p^Tp` of each tensor (a 1-D tensor), its slack momenta's included."""
        moms = self.all_moms
        kin = torch.stack(torch._foreach_norm(moms)).square()
        if len(moms) > len(self.moms):  # add each slack momentum's |p_s|^2 to its tensor's
            n = len(self.moms)
            owner = self._opt._slack_owner(self.index, self.owner[n:], kin.device)
            kin = kin[:n].index_add(0, owner, kin[n:])
        return kin

    def constrained_drift(self, delta):
        """A on the group's manifold: the constraint's drift (SHAKE and RATTLE) of each tensor;
        :class:`sdekit.DivergenceError` if SHAKE does not converge."""
        con = self.constraint
        for k, (p, q, mom) in enumerate(zip(self.params, self.positions, self.momenta)):
            if con.tensor_drift(q, mom, delta) < 0:
                step = self._opt._n_steps + 1
                raise DivergenceError(
                    f"constraint: SHAKE did not converge for {con!r} at step {step} (group {self.index}, "
                    f"tensor {k} of shape {tuple(p.shape)}; tol={getattr(con, 'tol', None)}, "
                    f"max_iter={getattr(con, 'max_iter', None)}, delta={delta}); reduce lr", step=step)

    def rattle(self):
        """Project a constrained group's momenta onto the tangent spaces (after a letter that moves p)."""
        if self.constraint is not None:
            for q, mom in zip(self.positions, self.momenta):
                self.constraint.tensor_rattle(q, mom)

    def memo(self, key, compute):
        """``compute()``, remembered under the hashable ``key`` (shared by all groups; bounded)."""
        cache = self._opt._coefficients
        value = cache.get(key)
        if value is None:
            value = compute()
            if len(cache) > 1024:
                cache.clear()
            cache[key] = value
        return value

    def xi_cached(self, name, key, compute):
        """``compute()`` of a value that depends on :attr:`xi` and on ``key``, reused while both
        are unchanged, from one step to the next too (BAODOAB: the next step's first O has the
        same xi and sub-step as this step's last)."""
        store = self._opt._scratch.setdefault(("xi", self.index), {})
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
        store = self._opt._scratch.get(("xi", self.index))
        if store:
            tag = self._opt._xi_tag(self.states)
            for name, (key, value) in list(store.items()):
                if key[0] is self.xi_tag:
                    store[name] = ((tag,) + key[1:], value)


# ----------------------------------------------------------------------------- optimizer

class SDEOptimizer(torch.optim.Optimizer):
    r"""A splitting integrator of (adaptive) Langevin dynamics as a torch optimizer.

    Each parameter group runs its own word (``scheme``) of the letters, for a step
    h = ``lr``, with the parameters as positions q and unit mass:

    ====== ============================================================================
    A      :math:`q \leftarrow q + \delta p`
    B      :math:`p \leftarrow p - \delta \nabla L(q)` (the mini-batch gradient)
    O      :math:`p \leftarrow c p + s R`, :math:`(c, s)` = ``ou_coefficients(gamma + xi, delta, sigma)``,
           :math:`\sigma = \sqrt{2\gamma k_BT}` unless ``sigma_A`` is set; ``gamma = inf``
           redraws :math:`p = \sqrt{k_BT} R` (the overdamped limit)
    D      :math:`\xi \leftarrow \xi + \delta\varepsilon(p^Tp - N k_BT)`, one xi per tensor, N its numel
    EM     whole step :math:`q \leftarrow q - h\nabla L + \sqrt{2hk_BT} R` (SGLD)
    LM     whole step :math:`q \leftarrow q - h\nabla L + \sqrt{hk_BT/2}(R_n + R_{n+1})`
    ====== ============================================================================

    where each letter runs for :math:`\delta` = its fraction of h (``"BAOAB"``:
    B(h/2) A(h/2) O(h) A(h/2) B(h/2)).

    **Shared gradients.** One closure call computes the gradient for all groups, so
    the groups' words must evaluate the force at the same times. Rule: all words
    have the same number of B's and the same cumulative A fraction before each B
    (or all are overdamped). B fractions may differ and between two B's each group
    runs its own letters ("BAODOAB" on one layer with "BAOAB" on the rest is the
    AdLaLa scheme). Otherwise a ValueError names the words and their force times.

    **Lazy force.** A B evaluates a new gradient only if an A moved the positions
    since the last evaluation (first-same-as-last), so "BAOAB" costs one closure
    call per step; the first step also evaluates the initial gradient (two calls).
    The gradient used by a B that comes before any evaluation in a step is a copy
    kept from the previous step (``state[p]["grad"]``), so zeroing gradients between
    steps is harmless. With mini-batches the two half kicks around a step boundary
    therefore use the same batch's gradient, as the reference code's merged kick
    ``p -= h grad L`` does.

    **Momentum.** Momenta start at zero (so the first step gives
    :math:`p = -(h/2)\nabla L` after the first B, as in the reference code) and
    ``state[p]["momentum"]`` holds the on-step momentum, after the whole word.

    **Constraints** (``constraint=`` per group; Leimkuhler, Pouchon & Vlaar, ICML
    2021): the group's tensors stay on a manifold, with the same objects as the core
    (:mod:`sdekit.constraints`, whose ``tensor_*`` methods hold the tensor versions):

    * ``Circle(r)``: each weight w has a slack s with :math:`w^2 + s^2 = r^2`
      (so :math:`|w| \le r`); s and its momentum live in ``state[p]["slack"]`` and
      ``state[p]["slack_momentum"]``. A is the exact rotation of each (w, s) with its
      momenta; B and O are followed by the projection of (p_w, p_s) onto the
      circle's tangent (RATTLE); O acts on both momenta.
    * ``Stiefel(n, p)``: each tensor of shape (..., n, p) is a stack of W with
      :math:`W^TW = I` (shape (..., p, n): :math:`WW^T = I`, rows orthonormal).
      A is a drift, SHAKE (to the constraint's ``tol``, or 16 units of rounding of
      the dtype if larger, within ``max_iter`` sweeps, else
      :class:`sdekit.DivergenceError` naming the step), then RATTLE,
      :math:`P \leftarrow P - W(W^TP + P^TW)/2`.
    * ``Sphere(r)``: the whole tensor has norm r; A is the exact great-circle rotation.

    **Start on the manifold.** At a group's first step its tensors are moved onto
    the manifold (Circle: w clamped to [-r, r], s = sqrt(r^2 - w^2); Stiefel: the
    polar factor :math:`UV^T` of W = U S V^T, the nearest orthonormal W; Sphere:
    rescaled to r); momenta start at zero, which is tangent. (The core's
    ``simulate`` refuses a q0 off the manifold instead, see
    :func:`sdekit.constraints.check_start`: there q0 is the user's physical state,
    here a network's initialisation, which is never on the manifold.) D counts N =
    (numel, with the slacks) - (number of constraints) degrees of freedom per tensor
    (:meth:`ndof`).
    Constrained SGD is a constrained group at kT = 0; constrained SGLD the
    overdamped limit gamma = inf (:class:`ConstrainedSGLD` builds both).

    **Multirate** (``rate=k`` per group; Vlaar & Leimkuhler, "Multirate training of
    neural networks", ICML 2022; thesis of T. Vlaar 2022, ch. on latent time scales). A
    slow group reads the gradient only every k-th step, so the closure's backward skips
    its tensors in the other steps (their ``requires_grad`` is off while it runs). The
    group setting ``multirate`` says what the group does in between:

    * ``"published"`` (default): the authors' rule. The group's force letters (B) run
      once per block of k steps with their own sub-step f h (those before the word's
      first A in the block's first step, those after its last A in the block's last
      step, the others in its middle step (k - 1) // 2); all its other letters (A, O, D)
      run in every step with step h. With BAOAB the two half kicks at a block boundary
      merge into one kick h g. Derivation, as for :func:`sgd_equivalent` (kT = 0,
      :math:`c = e^{-\gamma h}`, :math:`u_n` the momentum after the step's first B,
      :math:`\chi_n = 1` if k divides n, else 0): one step is
      :math:`q_{n+1} = q_n + \tfrac h2 (1 + c) u_n`, :math:`u_{n+1} = c\,u_n - h\chi_{n+1} g_{n+1}`,
      so with :math:`v_n = -u_n/h`

      .. math::

          v_n = c\,v_{n-1} + \chi_n \nabla L(q_n), \qquad q_{n+1} = q_n - \mathrm{lr}_{SGD}\, v_n,
          \qquad \mathrm{lr}_{SGD} = \tfrac{h^2 (1 + c)}{2},

      the authors' multirate SGD: the slow gradient is added once per k steps to a
      momentum buffer that is damped (by :math:`\mu = c`) and drifted with in every
      step (from :math:`p_0 = 0`, :math:`v_0 = \nabla L_0 / 2`). Effective step: h, as
      the fast group's (no letter of the group takes a longer step); the slow weights
      see on average the force :math:`-\nabla L / k` (a k-times smaller learning rate,
      :math:`\mathrm{lr}_{SGD}/k` per step), so at kT > 0 they sample about :math:`e^{-L/(k\,k_BT)}`, the group's temperature k kT.
    * ``"impulse"``: the word stretched over the block (impulse multiple time stepping,
      as r-RESPA; Tuckerman, Berne & Martyna, J. Chem. Phys. 97 (1992) 1990): the A's
      in every step with step h, the other letters (B, O, D) once per block, at the
      places above, with step k h. With BAOAB and odd k, seen at the block ends, the
      group is BAOAB with step k h (kick :math:`k h g`, damping :math:`c^k`; heavy-ball
      SGD per block with :math:`\mathrm{lr}_{SGD} = k^2h^2(1 + c^k)/2` and momentum
      :math:`c^k`), its drift spread over the block. Effective step: k h (stable only
      while :math:`k h \omega < 2`); it keeps the slow group's law
      :math:`e^{-L/k_BT}` to :math:`O((kh)^2)` at kT > 0, which the published rule does
      not, hence its use: multirate *sampling* at the right temperature. It is the rule
      sdekit had before issue 17; with heavy-ball SGD at lr 0.05, momentum 0.9 and
      k = 4 (k h = 0.92) it is unstable on the digits transfer study
      (``analysis/multirate_transfer.py``).

    Rate 1 is the single-rate scheme, bit for bit, under both rules.

    **Time.** Each group has a clock riding with its A letters: step n starts at
    :math:`t_n = t_0 + n h` (re-anchored when a scheduler changes h), and a letter
    acts at :math:`t_n + h \times` (the A fractions before it in the word).
    ``gamma`` and ``kT`` may be callables of t, evaluated at their letter's time
    (EM/LM: at :math:`t_n`); constants and constant callables give the same numbers
    bit for bit. :attr:`time` is group 0's clock: inside a closure the time of the
    force evaluation (BAOAB: :math:`t_n + h` = the next step's start, so the kept
    gradient stays valid), otherwise the start of the next step. A time-dependent
    loss reads it: ``loss = loss_fn(model(X), y, t=opt.time)``.

    Parameters
    ----------
    params : iterable of tensors or of dicts, or nn.Module
        Parameters or parameter groups (dicts with ``"params"`` and any of the
        settings below, which override the defaults for that group). ``"tau"`` is
        an alias of ``"kT"``.
    scheme : str, Scheme or list of (letter, fraction)
        The word (default "BAOAB"); "EM"/"LM" for overdamped groups.
    lr : float
        The step h > 0.
    gamma : float or callable
        Friction >= 0 (``inf`` allowed in words without D: momentum redrawn by O),
        or a function of the time t returning one (finite).
    kT : float or callable
        Temperature >= 0 (``tau`` is an alias), or a function of t. Default 0: no
        noise unless sigma_A is set (BAOAB at kT = 0 is heavy-ball SGD, see
        :func:`sgd_equivalent`).
    eps : float
        Thermostat coupling >= 0 (D letter).
    sigma_A : float or None
        Driving noise of O (replaces :math:`\sqrt{2\gamma k_BT}`); for EM/LM the
        noise amplitude :math:`\sigma_A\sqrt h` (kT = sigma_A^2/2).
    xi0 : float
        Initial thermostat variable (groups whose word has a D).
    constraint : Sphere, Circle, Stiefel or None
        Keep the group's tensors on this manifold (see above; default None).
    rate : int
        Multirate factor k >= 1: the group reads the gradient every k-th step (see
        above; default 1).
    multirate : {"published", "impulse"}
        What ``rate=k`` means (see above): the authors' rule (default), or the word
        stretched over the block with step k h.
    t0 : float
        Clock time of the first step (default 0).
    seed : int, optional
        Seed of the optimizer's own ``torch.Generator`` (on the parameters' device).
        Default: drawn from torch's global generator, so ``torch.manual_seed``
        makes runs reproducible.
    generator : torch.Generator, optional
        Use this generator (on the parameters' device) instead; it is advanced.

    Notes
    -----
    Settings are read from the groups at every step, so learning-rate schedulers
    (which change ``group["lr"]``, i.e. h) work. All parameters must live on one device, and each group's tensors share one
    dtype. ``step`` needs a closure (torch convention: it zeroes the gradients,
    computes the loss on the current mini-batch, calls ``backward`` and returns
    the loss); ``step`` returns the loss of its last closure call. The hot path uses
    ``torch._foreach_*`` ops over a group's tensors, one ``normal_`` per O letter
    per group (on a flat buffer viewed as the tensors) and keeps xi on the device,
    so no host-device synchronisation happens inside a step (except Stiefel's
    SHAKE convergence test). ``state_dict()`` holds tensors, numbers and strings only
    (momenta, slacks, xi, kept gradients, the generator state, the step count and
    the clocks; a constraint is written as its repr and a callable setting as
    "callable", both kept from the optimizer loading it) and ``load_state_dict``
    continues bit for bit.

    References
    ----------
    B. Leimkuhler, T. Matthews and T. Vlaar, "Partitioned integrators for
    thermodynamic parameterization of neural networks", Found. Data Sci. 1 (2019)
    457-489 (2023 revision), Sec. 3. B. Leimkuhler, T. Pouchon and T. Vlaar, "Better
    training using weight-constrained stochastic dynamics", ICML 2021 (constraints).
    T. Vlaar and B. Leimkuhler, "Multirate training of neural networks", ICML 2022.
    """

    def __init__(self, params, scheme="BAOAB", lr=0.1, gamma=1.0, kT=0.0, eps=0.1, sigma_A=None,
                 xi0=0.0, seed=None, generator=None, tau=None, constraint=None, rate=1, multirate="published",
                 t0=0.0):
        if isinstance(params, torch.nn.Module):
            params = params.parameters()
        if tau is not None:
            kT = tau
        defaults = dict(scheme=scheme, lr=lr, gamma=gamma, kT=kT, eps=eps, sigma_A=sigma_A, xi0=xi0,
                        constraint=constraint, rate=rate, multirate=multirate)
        self._scratch = {}
        self._coefficients = {}
        self._t0 = real("t0", t0)
        self._clocks = {}          # group index -> [t_anchor, n_anchor, h_anchor]
        self._now = None           # the force evaluation's time while a closure runs
        super().__init__(params, defaults)
        devices = {p.device for g in self.param_groups for p in g["params"]}
        if len(devices) != 1:
            raise ValueError(f"params: all parameters must be on one device, got {sorted(map(str, devices))}")
        self._device = devices.pop()
        if generator is not None:
            if not isinstance(generator, torch.Generator):
                raise ValueError(f"generator: must be a torch.Generator, got {generator!r}")
            if generator.device.type != self._device.type:
                raise ValueError(f"generator: is on {generator.device}, parameters on {self._device}")
            if seed is not None:
                raise ValueError(f"seed: give seed or generator, not both (seed={seed!r})")
            self._generator = generator
        else:
            if seed is None:
                seed = int(torch.randint(0, 2**62, (1,)).item())
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
                raise ValueError(f"seed: must be a non-negative integer, got {seed!r}")
            self._generator = torch.Generator(device=self._device).manual_seed(int(seed))
        self._n_steps = 0

    # ------------------------------------------------------------------ groups

    def add_param_group(self, param_group):
        """Add a group after checking its settings and that its word aligns with the others."""
        if not isinstance(param_group, dict):
            raise ValueError(f"params: a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        if "tau" in group:
            if "kT" in group:
                raise ValueError(f"tau: is an alias of kT; give one, got tau={group['tau']!r}, kT={group['kT']!r}")
            group["kT"] = group.pop("tau")
        for name, value in self.defaults.items():
            group.setdefault(name, value)
        key = _scheme_key(group["scheme"])
        layout = _layout(key)
        plain = layout.scheme.overdamped or Scheme(layout.scheme.word) == layout.scheme
        group["scheme"] = layout.scheme.word if plain else layout.scheme.to_json()
        group["lr"] = real("lr", group["lr"], low=0.0, low_open=True)
        group["gamma"] = _real_or_schedule("gamma", group["gamma"], low=0.0, allow_inf=True)
        group["kT"] = _real_or_schedule("kT", group["kT"], low=0.0)
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
        _aligned([_layout(_scheme_key(g["scheme"])) for g in self.param_groups] + [layout])
        super().add_param_group(group)

    # ------------------------------------------------------------------ state

    def _group_state(self, group, layout):
        """Lazily created per-tensor state: momentum (Langevin words), xi (words with D), LM noise;
        for a constrained group the tensor is first moved onto the manifold (and gets its slacks)."""
        out = []
        con = group["constraint"]
        for p in group["params"]:
            st = self.state[p]
            if not st:
                if con is not None:
                    extra = con.tensor_start(p)
                    if extra:
                        st["slack"], = extra
                        st["slack_momentum"] = torch.zeros_like(st["slack"])
                if layout.whole_step is None:
                    st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if layout.has_xi:
                    st["xi"] = torch.tensor(group["xi0"], dtype=p.dtype, device=p.device)
            out.append(st)
        return out

    def _noise(self, index, tensors):
        """Views of one flat buffer shaped as ``tensors`` (filled by one ``normal_``)."""
        key = tuple(id(p) for p in tensors)
        cached = self._scratch.get(index)
        if cached is None or cached[0] != key:
            numels = [p.numel() for p in tensors]
            buf = torch.empty(sum(numels), dtype=tensors[0].dtype, device=tensors[0].device)
            views = [v.view_as(p) for v, p in zip(buf.split(numels), tensors)]
            cached = (key, buf, views)
            self._scratch[index] = cached
        return cached[1], cached[2]

    @staticmethod
    def _xi_tag(states):
        """Identifies the stored xi tensors' current values (identity and in-place version counter)."""
        return tuple((id(st["xi"]), st["xi"]._version) for st in states)

    def _ndof(self, index, group):
        """:meth:`ndof` as a tensor on the device (cached)."""
        params = group["params"]
        key = ("ndof", index, tuple(id(p) for p in params))
        ndof = self._scratch.get(key)
        if ndof is None:
            ndof = torch.tensor([float(n) for n in self.ndof(index)], dtype=params[0].dtype, device=params[0].device)
            self._scratch[key] = ndof
        return ndof

    def _slack_owner(self, index, owners, device):
        """The tensor index of each slack momentum, on the device (cached: no host-to-device
        copy inside a step)."""
        key = ("owner", index, tuple(owners))
        owner = self._scratch.get(key)
        if owner is None:
            owner = self._scratch[key] = torch.tensor(owners, device=device)
        return owner

    def _positions(self, p):
        """A constrained tensor's position tuple: (p,) or (p, slack)."""
        st = self.state[p]
        return (p, st["slack"]) if "slack" in st else (p,)

    def _momenta(self, p):
        st = self.state[p]
        return (st["momentum"], st["slack_momentum"]) if "slack" in st else (st["momentum"],)

    def _clock(self, index, group, n):
        """Group ``index``'s time at the start of step n: t_anchor + (n - n_anchor) h, re-anchored
        when h (``lr``) has changed, so that t_n = t0 + n h exactly while h is constant."""
        h = group["lr"]
        clock = self._clocks.setdefault(index, [self._t0, 0, h])
        if h != clock[2]:
            clock[:] = [clock[0] + (n - clock[1]) * clock[2], n, h]
        return clock[0] + (n - clock[1]) * h

    @staticmethod
    def _portable(value):
        """A group setting as saved in a state dict: constraints by repr, callables as "callable"."""
        if isinstance(value, Manifold):
            return repr(value)
        if callable(value) and not isinstance(value, (numbers.Real, str)):
            return "callable"
        return value

    def state_dict(self):
        """torch's state dict plus ``"sdekit"``: the generator state, the step count and the
        clocks (tensors); constraints and callable settings are written as strings."""
        sd = super().state_dict()
        for g in sd["param_groups"]:
            for k in ("constraint", "gamma", "kT"):
                g[k] = self._portable(g.get(k))
        clocks = [self._clocks.get(i, [self._t0, 0, g["lr"]]) for i, g in enumerate(self.param_groups)]
        sd["sdekit"] = {"generator_state": self._generator.get_state().clone(),
                        "steps": torch.tensor(self._n_steps, dtype=torch.int64),
                        "clocks": torch.tensor([[float(t), float(n), float(h)] for t, n, h in clocks],
                                               dtype=torch.float64).reshape(-1, 3)}
        return sd

    def load_state_dict(self, state_dict):
        """Load a :meth:`state_dict`; the tensors are copied, so the dict is not aliased.

        Constraints and callable settings are this optimizer's own: the saved strings
        must match them (a constraint's repr; "callable" for a callable), else ValueError."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("sdekit", None)
        if extra is None:
            raise ValueError("state_dict: has no 'sdekit' entry (generator state, step count); "
                             "was it made by SDEOptimizer.state_dict()?")
        # settings that are objects (constraints, callables) stay this optimizer's own
        own = [{k: g[k] for k in ("constraint", "gamma", "kT") if k == "constraint" or callable(g[k])}
               for g in self.param_groups]
        for saved, mine in zip(state_dict.get("param_groups", []), own):
            for k in ("constraint", "gamma", "kT"):
                here = self._portable(mine[k]) if k in mine else None
                if (k in mine or saved.get(k) == "callable") and saved.get(k) != here:
                    raise ValueError(f"{k}: the state dict was saved with {k}={saved.get(k)!r}, this "
                                     f"optimizer has {k}={here if k in mine else 'a number'!r}")
        super().load_state_dict(state_dict)
        for g, mine in zip(self.param_groups, own):
            g.update(mine)
            # saved before the setting existed (issue 17): a slow group then ran the "impulse" rule
            g.setdefault("multirate", "impulse" if g.get("rate", 1) != 1 else "published")
        for st in self.state.values():
            for k, v in list(st.items()):
                if isinstance(v, torch.Tensor):
                    st[k] = v.clone()
        self._generator.set_state(extra["generator_state"].clone())
        self._n_steps = int(extra["steps"])
        clocks = extra.get("clocks")
        if clocks is not None:
            self._clocks = {i: [float(t), int(n), float(h)] for i, (t, n, h) in enumerate(clocks.tolist())}
        self._scratch = {}

    @property
    def generator(self):
        """The optimizer's ``torch.Generator``."""
        return self._generator

    @property
    def steps_taken(self):
        """Number of completed steps."""
        return self._n_steps

    @property
    def time(self):
        """Group 0's clock: while a closure runs, the time of that force evaluation; otherwise
        the start of the next step, :math:`t_0 + n h` (n = :attr:`steps_taken`, h constant)."""
        if self._now is not None:
            return self._now
        return self._clock(0, self.param_groups[0], self._n_steps)

    # ------------------------------------------------------------------ letters

    def _apply(self, item, x):
        """One item of a group's layout: its letter's torch hook, if the letter runs in this step of
        a multirate block (:func:`_substep`), for its sub-step at its clock time t_n + h (A fractions
        before it); then RATTLE on a constrained group if the letter moved p."""
        h = x.group["lr"]
        delta = _substep(item, h, x.phase, x.rate, x.rule)
        if delta is None:
            return
        letter = item[0]
        letter.torch(x, delta, x.t + item[3] * h)
        if x.constraint is not None and "p" in letter.moves:
            x.rattle()

    # ------------------------------------------------------------------ step

    @staticmethod
    def _grads(group):
        out = []
        for p in group["params"]:
            if p.grad is None:
                out.append(torch.zeros_like(p))
            elif p.grad.is_sparse:
                raise ValueError("params: sparse gradients are not supported")
            else:
                out.append(p.grad)
        return out

    def _evaluate(self, closure, time, xs=None, need=None):
        """Call the closure at clock ``time``; groups with ``need`` False get no gradient
        (their tensors' requires_grad is off while it runs, so backward skips them)."""
        frozen = []
        if need is not None and not all(need):
            for x, wanted in zip(xs, need):
                if not wanted:
                    frozen += [p for p in x.params if p.requires_grad]
        self._now = time
        try:
            for p in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                return closure()
        finally:
            for p in frozen:
                p.requires_grad_(True)
            self._now = None

    @torch.no_grad()
    def step(self, closure=None):
        """One step of every group's word; returns the loss of the last closure call.

        Parameters
        ----------
        closure : callable
            Zeroes the gradients, computes the loss on the current mini-batch, calls
            ``backward`` and returns the loss. Called once per step (twice on the
            first step of words that begin with B, for the initial gradient).
        """
        if closure is None or not callable(closure):
            raise ValueError(f"closure: SDEOptimizer.step needs a closure that recomputes the loss and "
                             f"its gradient (the force is evaluated inside the step), got {closure!r}")
        groups = self.param_groups
        layouts = [_layout(_scheme_key(g["scheme"])) for g in groups]
        flags = _aligned(layouts)
        n = self._n_steps
        xs = [Letters(self, i, g, lay, n) for i, (g, lay) in enumerate(zip(groups, layouts))]
        if layouts[0].whole_step is not None:
            loss = self._evaluate(closure, xs[0].t)
            for group, layout, x in zip(groups, layouts, xs):
                x.grads = self._grads(group)
                layout.whole_step.torch(x, group["lr"], x.t)
        else:
            loss = self._underdamped(closure, groups, layouts, xs, flags, n)
        self._n_steps += 1
        return loss

    def _underdamped(self, closure, groups, layouts, xs, flags, n):
        """The words of all groups, cut at their (aligned) B's, with shared lazy force evaluations."""
        loss, last = None, None        # last: the B index of this step's latest force evaluation
        for j in range(len(flags)):
            for layout, x in zip(layouts, xs):
                for item in layout.segments[j]:
                    self._apply(item, x)
            if flags[j] or (n == 0 and last is None):
                # the groups that kick with this force, now or (kept) at the next step's first B's
                need = [any(_runs(lay.kicks[b], (n + off) % x.rate, x.rate, x.rule) for off, b in _consumers(flags, j))
                        for lay, x in zip(layouts, xs)]
                if any(need):
                    loss = self._evaluate(closure, xs[0].t + layouts[0].times[j] * groups[0]["lr"], xs, need)
                    last = j
                    for group, x, wanted in zip(groups, xs, need):
                        x._fresh = wanted
                        if wanted:
                            x._evaluated = self._grads(group)
            for layout, x in zip(layouts, xs):
                item = layout.kicks[j]
                if _runs(item, x.phase, x.rate, x.rule):
                    x.grads = x._evaluated if last is not None else [st["grad"] for st in x.states]
                    self._apply(item, x)
        for layout, x in zip(layouts, xs):
            for item in layout.segments[-1]:
                self._apply(item, x)
        if last is not None and not flags[0]:
            # the next step's first B uses this step's last gradient: keep a copy
            for group, x in zip(groups, xs):
                if not x._fresh:
                    continue
                grads = self._grads(group)
                kept = []
                for st, g in zip(x.states, grads):
                    if "grad" not in st:
                        st["grad"] = torch.empty_like(g)
                    kept.append(st["grad"])
                torch._foreach_copy_(kept, grads)
        for x in xs:
            if x.xi is not None:
                x._store_xi()
        return loss

    # ------------------------------------------------------------------ views

    def ndof(self, group=0):
        """The degrees of freedom N of each tensor of a group (the thermostat's N): numel, or on
        a manifold the tangent dimension (Circle: numel; Stiefel(n, p): numel - p(p+1)/2 per W;
        Sphere: numel - 1)."""
        g = self.param_groups[group]
        con = g["constraint"]
        return [p.numel() if con is None else con.tensor_dof(p) for p in g["params"]]

    def xi(self, group=0):
        """The thermostat variables of a group (one per tensor), as a 1-D tensor on the device."""
        states = [self.state[p] for p in self.param_groups[group]["params"]]
        if not states or "xi" not in states[0]:
            raise ValueError(f"group: group {group} has no thermostat variable (no D in its word, or no step yet)")
        return torch.stack([st["xi"] for st in states])


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


# ----------------------------------------------------------------------------- presets

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
    return _as_groups(groups)


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
    lr, tau1, tau2, gamma, sigma_A, eps, xi0 : float
        Defaults are the reference code's: h = 0.25, tau1 = tau2 = 1e-4, gamma = 0.1,
        sigma_A = 0.01, eps = 0.05, xi0 = 0.1 (the paper's figures use eps = 0.1).
    seed, generator
        As in :class:`SDEOptimizer`.

    References
    ----------
    Leimkuhler, Matthews, Vlaar, "Partitioned integrators for thermodynamic
    parameterization of neural networks", Found. Data Sci. 2019, Sec. 3.3.
    """

    def __init__(self, model_or_groups, lr=0.25, tau1=1e-4, tau2=1e-4, gamma=0.1, sigma_A=0.01,
                 eps=0.05, xi0=0.1, seed=None, generator=None):
        first, rest = _split(model_or_groups, "AdLaLa")
        groups = [_merge(dict(scheme="BAODOAB", kT=tau1, gamma=0.0, sigma_A=sigma_A, eps=eps, xi0=xi0), first)]
        if rest["params"]:
            groups.append(_merge(dict(scheme="BAOAB", kT=tau2, gamma=gamma), rest))
        super().__init__(groups, lr=lr, seed=seed, generator=generator)


class LOL(SDEOptimizer):
    r"""LOL: Langevin (BAOAB) on the first layer, overdamped Langevin on the rest.

    The first layer runs BAOAB with friction gamma1 and temperature tau1. The rest
    run BAOAB with :math:`\gamma = \infty`: O redraws :math:`p = \sqrt{\tau_2} R`
    every step, so their positions follow the Leimkuhler-Matthews overdamped scheme
    with time step :math:`h^2/2`:
    :math:`q' = q - \tfrac{h^2}2\nabla L + \tfrac h2\sqrt{\tau_2}(R_n + R_{n+1})`.

    Defaults h = 0.25, gamma1 = 0.01, tau1 = 1e-3 are the paper's Fig. 14 settings;
    the text gives no second temperature, so ``tau2`` defaults to tau1.

    References
    ----------
    Leimkuhler, Matthews, Vlaar, Found. Data Sci. 2019, Sec. 3.4.
    """

    def __init__(self, model_or_groups, lr=0.25, gamma1=0.01, tau1=1e-3, tau2=None, seed=None,
                 generator=None):
        first, rest = _split(model_or_groups, "LOL")
        tau2 = tau1 if tau2 is None else tau2
        groups = [_merge(dict(scheme="BAOAB", kT=tau1, gamma=gamma1), first)]
        if rest["params"]:
            groups.append(_merge(dict(scheme="BAOAB", kT=tau2, gamma=math.inf), rest))
        super().__init__(groups, lr=lr, seed=seed, generator=generator)


class MultiLayerLangevin(SDEOptimizer):
    r"""BAOAB on every layer, each with its own friction and temperature.

    ``gamma`` and ``kT`` are scalars or one value per layer (the modules owning
    parameters, in order; see :func:`layers`), or per explicit group.

    References
    ----------
    Leimkuhler, Matthews, Vlaar, Found. Data Sci. 2019, Sec. 3.2.
    """

    def __init__(self, model_or_groups, lr=0.1, gamma=1.0, kT=1e-4, seed=None, generator=None):
        if isinstance(model_or_groups, torch.nn.Module):
            groups = [{"params": ps} for _, ps in layers(model_or_groups)]
        else:
            groups = _as_groups(model_or_groups)
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
        super().__init__(groups, lr=lr, seed=seed, generator=generator)


class SGLD(SDEOptimizer):
    r"""Stochastic gradient Langevin dynamics (Euler-Maruyama on the parameters).

    .. math::

        \theta \leftarrow \theta - h\nabla L(\theta) + \sqrt{2 h k_BT}\,R
        = \theta - h\nabla L + \sigma\sqrt h\,R, \quad \sigma = \sqrt{2k_BT}.

    Give ``kT`` or ``sigma`` (default sigma = 0.01, the paper's Fig. 6 value).

    References
    ----------
    M. Welling and Y. W. Teh, ICML 2011; Leimkuhler, Matthews, Vlaar 2019, Sec. 2.
    """

    def __init__(self, params, lr=0.1, kT=None, sigma=None, seed=None, generator=None):
        kT = _kT_of(kT, sigma)
        super().__init__(params, scheme="EM", lr=lr, kT=kT, seed=seed, generator=generator)


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
        Learning rate (SGD's), > 0.
    sigma, kT : float
        Noise: give one (kT = sigma^2 / 2). Default sigma = 0.01; 0 for constrained SGD.
    seed, generator
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
                 generator=None):
        lr = real("lr", lr, low=0.0, low_open=True)
        kT = _kT_of(kT, sigma)
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
            groups = _as_groups(model_or_groups)
        super().__init__(groups, scheme="BAOAB", lr=math.sqrt(2.0 * lr), gamma=math.inf, kT=kT, seed=seed,
                         generator=generator)
