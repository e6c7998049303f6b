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
presets :class:`AdLaLa`, :class:`LOL`, :class:`MultiLayerLangevin` and
:class:`SGLD` are thin constructors over :class:`SDEOptimizer`.

The letters' coefficients come from :mod:`sdekit.operators` (``ou_coefficients``
for O, ``thermostat`` for D, and the affine maps ``drift``/``kick``/
``euler_maruyama``/``leimkuhler_matthews`` evaluated at unit arguments for the
rest); this module only applies them in place with ``torch._foreach_*`` ops.

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

from . import operators as ops
from .schemes import Scheme

__all__ = ["SDEOptimizer", "AdLaLa", "LOL", "MultiLayerLangevin", "SGLD",
           "sgd_equivalent", "layers"]

_tops = ops.bind(torch.exp, torch.expm1, torch.sqrt)
"""The operators on tensors (for the thermostatted O, whose friction gamma + xi is a tensor)."""

_ALIGN_TOL = 1e-12


# ----------------------------------------------------------------------------- schemes

class _Layout:
    """A word cut at its B's: ``segments[0] B segments[1] B ... B segments[k]``.

    ``times[j]`` is the cumulative A fraction before the j-th B (the time, in units
    of h, at which that B's force is evaluated), ``kicks[j]`` its fraction, and
    ``flags[j]`` whether it needs a fresh gradient in the steady state.
    """

    def __init__(self, scheme):
        self.scheme = scheme
        self.overdamped = scheme.overdamped
        self.segments, self.kicks, self.times, self.flags = [[]], [], [], []
        t = 0.0
        for (letter, f), fresh in zip(scheme.steps, scheme.evaluations):
            if letter == "B":
                self.kicks.append(f)
                self.times.append(t)
                self.flags.append(fresh)
                self.segments.append([])
            else:
                if letter == "A":
                    t += f
                self.segments[-1].append((letter, f))
        self.has_D = "D" in scheme.word
        self.has_O = "O" in scheme.word


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


@lru_cache(maxsize=256)
def _layout(key):
    scheme = Scheme(list(key) if isinstance(key, tuple) else key)
    if not scheme.overdamped and not ("A" in scheme.word and "B" in scheme.word):
        raise ValueError(f"scheme: a parameter group's word must contain A and B (or be 'EM'/'LM'), "
                         f"got {scheme.word!r}")
    return _Layout(scheme)


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
    kinds = {bool(lay.overdamped) for lay in layouts}
    if len(kinds) > 1:
        words = [lay.scheme.word for lay in layouts]
        raise ValueError(f"scheme: overdamped (EM/LM) and underdamped groups cannot share gradients, got {words}")
    if first.overdamped:
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

def _real(name, value, *, low=None, low_open=False, allow_inf=False, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name}: must be a real number, got {value!r}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    if low is not None and (value < low or (low_open and value == low)):
        raise ValueError(f"{name}: must be {'>' if low_open else '>='} {low}, got {value!r}")
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
    gamma : float
        Friction >= 0 (``inf`` allowed in words without D: momentum redrawn by O).
    kT : float
        Temperature >= 0 (``tau`` is an alias). Default 0: no noise unless sigma_A
        is set (BAOAB at kT = 0 is heavy-ball SGD, see :func:`sgd_equivalent`).
    eps : float
        Thermostat coupling >= 0 (D letter).
    sigma_A : float or None
        Driving noise of O (replaces :math:`\sqrt{2\gamma k_BT}`); for EM/LM the
        noise amplitude :math:`\sigma_A\sqrt h` (kT = sigma_A^2/2).
    xi0 : float
        Initial thermostat variable (groups whose word has a D).
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
    so no host-device synchronisation happens inside a step. ``state_dict()``
    holds tensors and numbers only (momenta, xi, kept gradients, the generator
    state and the step count) and ``load_state_dict`` continues bit for bit.

    References
    ----------
    B. Leimkuhler, T. Matthews and T. Vlaar, "Partitioned integrators for
    thermodynamic parameterization of neural networks", Found. Data Sci. 1 (2019)
    457-489 (2023 revision), Sec. 3.
    """

    def __init__(self, params, scheme="BAOAB", lr=0.1, gamma=1.0, kT=0.0, eps=0.1, sigma_A=None,
                 xi0=0.0, seed=None, generator=None, tau=None):
        if isinstance(params, torch.nn.Module):
            params = params.parameters()
        if tau is not None:
            kT = tau
        defaults = dict(scheme=scheme, lr=lr, gamma=gamma, kT=kT, eps=eps, sigma_A=sigma_A, xi0=xi0)
        self._scratch = {}
        self._coefficients = {}
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
        group["lr"] = _real("lr", group["lr"], low=0.0, low_open=True)
        group["gamma"] = _real("gamma", group["gamma"], low=0.0, allow_inf=True)
        group["kT"] = _real("kT", group["kT"], low=0.0)
        group["eps"] = _real("eps", group["eps"], low=0.0)
        group["sigma_A"] = _real("sigma_A", group["sigma_A"], low=0.0, allow_none=True)
        group["xi0"] = _real("xi0", group["xi0"])
        if math.isinf(group["gamma"]) and (layout.has_D or group["sigma_A"] is not None):
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
        _aligned([_layout(_scheme_key(g["scheme"])) for g in self.param_groups] + [layout])
        super().add_param_group(group)

    # ------------------------------------------------------------------ state

    def _group_state(self, group, layout):
        """Lazily created per-tensor state: momentum (Langevin words), xi (words with D), LM noise."""
        out = []
        for p in group["params"]:
            st = self.state[p]
            if not st:
                if not layout.overdamped:
                    st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if layout.has_D:
                    st["xi"] = torch.tensor(group["xi0"], dtype=p.dtype, device=p.device)
            out.append(st)
        return out

    def _noise(self, index, group):
        """Views of one flat buffer shaped as the group's tensors (filled by one ``normal_``)."""
        params = group["params"]
        key = tuple(id(p) for p in params)
        cached = self._scratch.get(index)
        if cached is None or cached[0] != key:
            numels = [p.numel() for p in params]
            buf = torch.empty(sum(numels), dtype=params[0].dtype, device=params[0].device)
            views = [v.view_as(p) for v, p in zip(buf.split(numels), params)]
            cached = (key, buf, views)
            self._scratch[index] = cached
        return cached[1], cached[2]

    @staticmethod
    def _xi_tag(states):
        """Identifies the stored xi tensors' current values (identity and in-place version counter)."""
        return tuple((id(st["xi"]), st["xi"]._version) for st in states)

    def _ndof(self, index, group):
        """N of each tensor of a group (numel), as a tensor on the device (cached)."""
        params = group["params"]
        key = ("ndof", index, tuple(id(p) for p in params))
        ndof = self._scratch.get(key)
        if ndof is None:
            ndof = torch.tensor([float(p.numel()) for p in params], dtype=params[0].dtype, device=params[0].device)
            self._scratch[key] = ndof
        return ndof

    def state_dict(self):
        """torch's state dict plus ``"sdekit"``: the generator state and the step count (tensors)."""
        sd = super().state_dict()
        sd["sdekit"] = {"generator_state": self._generator.get_state().clone(),
                        "steps": torch.tensor(self._n_steps, dtype=torch.int64)}
        return sd

    def load_state_dict(self, state_dict):
        """Load a :meth:`state_dict`; the tensors are copied, so the dict is not aliased."""
        state_dict = dict(state_dict)
        extra = state_dict.pop("sdekit", None)
        if extra is None:
            raise ValueError("state_dict: has no 'sdekit' entry (generator state, step count); "
                             "was it made by SDEOptimizer.state_dict()?")
        super().load_state_dict(state_dict)
        for st in self.state.values():
            for k, v in list(st.items()):
                if isinstance(v, torch.Tensor):
                    st[k] = v.clone()
        self._generator.set_state(extra["generator_state"].clone())
        self._n_steps = int(extra["steps"])
        self._scratch = {}

    @property
    def generator(self):
        """The optimizer's ``torch.Generator``."""
        return self._generator

    @property
    def steps_taken(self):
        """Number of completed steps."""
        return self._n_steps

    # ------------------------------------------------------------------ letters

    def _run(self, index, group, layout, segment, ctx):
        """Apply the non-B letters of one segment of a group's word, in place."""
        h = group["lr"]
        params, moms = ctx["params"], ctx["moms"]
        for letter, f in segment:
            delta = f * h
            if letter == "A":
                torch._foreach_add_(params, moms, alpha=ops.scalar.drift(0.0, 1.0, delta, 1.0))
            elif letter == "O":
                self._ou(index, group, layout, delta, ctx)
            elif letter == "D":
                kin = torch.stack(torch._foreach_norm(moms)).square()
                ctx["xi"] = ops.thermostat(ctx["xi"], kin, ctx["ndof"], group["kT"], group["eps"], delta)
                ctx["xi_tag"] = object()

    def _ou(self, index, group, layout, delta, ctx):
        gamma, kT, sigma_A = group["gamma"], group["kT"], group["sigma_A"]
        moms = ctx["moms"]
        sigma = sigma_A if sigma_A is not None else math.sqrt(2.0 * gamma * kT) if math.isfinite(gamma) else None
        if layout.has_D:
            # (c, s) depend on xi: computed on the device, and reused while xi is unchanged
            # (BAODOAB: the next step's first O has the same xi and delta as this step's last)
            key = (ctx["xi_tag"], delta, gamma, sigma, ops.ou_coefficients)
            cached = self._scratch.get(("ou", index))
            if cached is not None and cached[0] == key:
                c, s = cached[1]
            else:
                c, s = _tops.ou_coefficients(gamma + ctx["xi"], delta, sigma)
                c, s = list(c.unbind()), list(s.unbind())
                self._scratch[("ou", index)] = (key, (c, s))
            buf, noise = self._noise(index, group)
            buf.normal_(generator=self._generator)
            torch._foreach_mul_(moms, c)
            torch._foreach_addcmul_(moms, noise, s)
            return
        key = (gamma, delta, sigma, kT, ops.ou_coefficients)
        cs = self._coefficients.get(key)
        if cs is None:
            if math.isinf(gamma):          # the limit gamma -> inf of O: p redrawn from N(0, kT)
                cs = (0.0, math.sqrt(kT))
            else:
                cs = tuple(float(x) for x in ops.ou_coefficients(gamma, delta, sigma))
            if len(self._coefficients) > 1024:
                self._coefficients.clear()
            self._coefficients[key] = cs
        c, s = cs
        if c != 1.0:
            torch._foreach_mul_(moms, c)
        if s != 0.0:
            buf, noise = self._noise(index, group)
            buf.normal_(generator=self._generator)
            torch._foreach_add_(moms, noise, alpha=s)

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

    def _evaluate(self, closure):
        with torch.enable_grad():
            return closure()

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
        ctxs = []
        for i, (group, layout) in enumerate(zip(groups, layouts)):
            states = self._group_state(group, layout)
            ctx = {"params": group["params"], "states": states}
            if not layout.overdamped:
                ctx["moms"] = [st["momentum"] for st in states]
            if layout.has_D:
                ctx["xi"] = torch.stack([st["xi"] for st in states])
                ctx["ndof"] = self._ndof(i, group)
                ctx["xi_tag"] = self._xi_tag(states)
            ctxs.append(ctx)
        loss = None
        if layouts[0].overdamped:
            loss = self._evaluate(closure)
            for i, (group, layout, ctx) in enumerate(zip(groups, layouts, ctxs)):
                self._overdamped(i, group, layout, ctx)
        else:
            first = self._n_steps == 0
            evaluated = False
            for j in range(len(flags)):
                for i, (group, layout, ctx) in enumerate(zip(groups, layouts, ctxs)):
                    self._run(i, group, layout, layout.segments[j], ctx)
                fresh = flags[j] or (first and not evaluated)
                if fresh:
                    loss = self._evaluate(closure)
                    evaluated = True
                for group, layout, ctx in zip(groups, layouts, ctxs):
                    if fresh:
                        ctx["grads"] = self._grads(group)
                    grads = ctx["grads"] if evaluated else [st["grad"] for st in ctx["states"]]
                    torch._foreach_add_(ctx["moms"], grads, alpha=-ops.scalar.kick(0.0, 1.0, layout.kicks[j] * group["lr"]))
            for i, (group, layout, ctx) in enumerate(zip(groups, layouts, ctxs)):
                self._run(i, group, layout, layout.segments[-1], ctx)
            if evaluated and not flags[0]:
                # the next step's first B uses this step's last gradient: keep a copy
                for group, ctx in zip(groups, ctxs):
                    grads = self._grads(group)
                    kept = []
                    for st, g in zip(ctx["states"], grads):
                        if "grad" not in st:
                            st["grad"] = torch.empty_like(g)
                        kept.append(st["grad"])
                    torch._foreach_copy_(kept, grads)
            for i, ctx in enumerate(ctxs):
                if "xi" in ctx:
                    torch._foreach_copy_([st["xi"] for st in ctx["states"]], list(ctx["xi"].unbind()))
                    cached = self._scratch.get(("ou", i))
                    if cached is not None and cached[0][0] is ctx["xi_tag"]:
                        # computed from the final xi: valid for the next step's xi
                        self._scratch[("ou", i)] = ((self._xi_tag(ctx["states"]),) + cached[0][1:], cached[1])
        self._n_steps += 1
        return loss

    def _overdamped(self, index, group, layout, ctx):
        h, kT = group["lr"], group["kT"]
        if group["sigma_A"] is not None:
            kT = 0.5 * group["sigma_A"] ** 2
        params, grads = ctx["params"], self._grads(group)
        if layout.overdamped == "EM":
            torch._foreach_add_(params, grads, alpha=-ops.scalar.euler_maruyama(0.0, 1.0, h, kT, 0.0))
            a = ops.scalar.euler_maruyama(0.0, 0.0, h, kT, 1.0)
            if a != 0.0:
                buf, noise = self._noise(index, group)
                buf.normal_(generator=self._generator)
                torch._foreach_add_(params, noise, alpha=a)
            return
        # LM: q' = q + h F + a (R_n + R_{n+1}); R_n kept in the state
        states = ctx["states"]
        if "noise" not in states[0]:
            buf, noise = self._noise(index, group)
            buf.normal_(generator=self._generator)
            for st, r in zip(states, noise):
                st["noise"] = r.clone()
        previous = [st["noise"] for st in states]
        torch._foreach_add_(params, grads, alpha=-ops.scalar.leimkuhler_matthews(0.0, 1.0, h, kT, 0.0, 0.0))
        a = ops.scalar.leimkuhler_matthews(0.0, 0.0, h, kT, 1.0, 0.0)
        buf, noise = self._noise(index, group)
        buf.normal_(generator=self._generator)
        torch._foreach_add_(params, previous, alpha=a)
        torch._foreach_add_(params, noise, alpha=a)
        torch._foreach_copy_(previous, noise)

    # ------------------------------------------------------------------ views

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
    lr = _real("lr", lr, low=0.0, low_open=True)
    momentum = _real("momentum", momentum, low=0.0, low_open=True)
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
    return [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in groups]


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
            groups = [dict(g) if isinstance(g, dict) else {"params": list(g)} for g in model_or_groups]
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
        if kT is not None and sigma is not None:
            raise ValueError(f"sigma: give kT or sigma, not both (kT={kT!r}, sigma={sigma!r})")
        if kT is None:
            sigma = 0.01 if sigma is None else _real("sigma", sigma, low=0.0)
            kT = 0.5 * sigma * sigma
        super().__init__(params, scheme="EM", lr=lr, kT=kT, seed=seed, generator=generator)
