"""The optimizer: :class:`SDEOptimizer`, a splitting integrator as a ``torch.optim.Optimizer``.

It keeps the state (momenta, xi, slacks, kept gradients, the generator, the clocks), builds
each group's :class:`~sdekit.torch.context.Letters` for a step and hands the step to
:mod:`sdekit.torch.stepping`; settings are checked by :mod:`sdekit.torch.settings`, words
cut by :mod:`sdekit.torch.layout`, state dicts written by :mod:`sdekit.torch.checkpoint`.
"""
import numbers

import torch

from .._checks import real
from . import checkpoint, noise, stepping
from .context import GroupCache, Letters
from .layout import aligned, layout_of, scheme_key
from .settings import check_group

__all__ = ["SDEOptimizer"]


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
    (:mod:`sdekit.constraints`; their tensor forms are in :mod:`sdekit.torch.manifolds`):

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
      :math:`\mathrm{lr}_{SGD}/k` per step), so at kT > 0 they sample about
      :math:`e^{-L/(k\,k_BT)}`: the group runs at the temperature k kT.
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
        The SDE step h > 0 (not SGD's learning rate: BAOAB at kT = 0 with step h and
        friction gamma is heavy-ball SGD with learning rate :math:`h^2(1 + e^{-\gamma h})/2`
        and momentum :math:`e^{-\gamma h}`, see :func:`sgd_equivalent`; the default
        h = 0.1, gamma = 1 is SGD at lr 0.0095, momentum 0.905).
    gamma : float or callable
        Friction >= 0 (``inf`` allowed in words without D: momentum redrawn by O),
        or a function of the time t returning one (finite).
    kT : float or callable
        Temperature >= 0 (``tau`` is an alias), or a function of t. Default 0: no
        noise unless sigma_A is set (BAOAB at kT = 0 is heavy-ball SGD, see
        :func:`sgd_equivalent`). The core's ``simulate`` defaults to kT = 1, the unit
        of a physical system's energy; a network's loss is of order 1 with up to
        millions of parameters, and kT = 1 (a thermal speed of 1 per parameter)
        would drown the gradient, so training starts deterministic and the presets set
        the papers' temperatures (1e-4 to 1e-3).
    eps : float
        Thermostat coupling >= 0 (D letter). Default 0.1, the partitioned-integrators
        paper's figures' value, where the core's ``simulate`` has 1: D changes xi by
        :math:`h\varepsilon(p^Tp - Nk_BT)`, which grows with the tensor's size N, and
        a network's tensors are large.
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
        0 <= seed < 2**64: the key of the Philox stream (``noise="philox"``) or the seed
        of the optimizer's own ``torch.Generator`` on the parameters' device
        (``noise="torch"``). Default: drawn from torch's global generator, so
        ``torch.manual_seed`` makes runs reproducible.
    generator : torch.Generator, optional
        Use this generator (on the parameters' device) for the normals, with
        ``noise="torch"``; it is advanced.
    noise : {"philox", "torch"} or None
        Where the O letters' standard normals come from (:mod:`sdekit.torch.noise`).
        ``"philox"``: the project's counter-based Philox4x32-10 stream, float32 Box-Muller
        normals written in parallel into the noise buffer (CPU tensors; counter layout
        in :mod:`sdekit.torch.philox_normals`); number i of the d-th draw is a function of
        (seed, d, i), so runs are the same bit for bit whatever ``torch.set_num_threads``.
        ``"torch"``: ``normal_`` of a ``torch.Generator`` (the stream of sdekit before
        issue 17; serial on the CPU, a few ns per number). Default None: ``"philox"`` on
        the CPU, ``"torch"`` on other devices or when ``generator`` or
        ``prefetch_noise=True`` is given.
    prefetch_noise : bool
        With ``noise="torch"``: draw the next letters' normals in a background thread
        while the closure runs (:class:`sdekit.torch.noise.Prefetch`): the same numbers
        bit for bit, the generator's cost hidden behind forward and backward where a core
        is free (CPU). The generator must then be the optimizer's alone (do not draw from
        it between steps). Default False.

    Notes
    -----
    Settings are read from the groups at every step, so learning-rate schedulers
    (which change ``group["lr"]``, i.e. h) work. All parameters must live on one
    device, and each group's tensors share one dtype. ``step`` needs a closure
    (torch convention: it zeroes the gradients, computes the loss on the current
    mini-batch, calls ``backward`` and returns the loss); ``step`` returns the loss
    of its last closure call. The hot path uses ``torch._foreach_*`` ops over a
    group's tensors, one draw of normals per O letter per group (on a flat buffer
    viewed as the tensors) and keeps xi on the device,
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
                 t0=0.0, prefetch_noise=False, noise=None):
        if isinstance(params, torch.nn.Module):
            params = params.parameters()
        if tau is not None:
            kT = tau
        defaults = dict(scheme=scheme, lr=lr, gamma=gamma, kT=kT, eps=eps, sigma_A=sigma_A, xi0=xi0,
                        constraint=constraint, rate=rate, multirate=multirate)
        self._caches = {}          # group index -> GroupCache
        self._coefficients = {}    # the letters' memo (Letters.memo), shared by the groups
        self._t0 = real("t0", t0)
        self._clocks = {}          # group index -> [t_anchor, n_anchor, h_anchor]
        self._now = None           # the force evaluation's time while a closure runs
        super().__init__(params, defaults)
        devices = {p.device for g in self.param_groups for p in g["params"]}
        if len(devices) != 1:
            raise ValueError(f"params: all parameters must be on one device, got {sorted(map(str, devices))}")
        self._device = devices.pop()
        self._noise = _noise_source(noise, seed, generator, prefetch_noise, self._device)
        self._generator = self._noise.generator
        self._n_steps = 0

    def add_param_group(self, param_group):
        """Add a group after checking its settings and that its word aligns with the others."""
        group, layout = check_group(param_group, self.defaults)
        aligned([layout_of(scheme_key(g["scheme"])) for g in self.param_groups] + [layout])
        super().add_param_group(group)

    # ------------------------------------------------------------------ state

    def _group_state(self, index, group, layout):
        """Lazily created per-tensor state: momentum (Langevin words), xi (words with D), LM noise;
        for a constrained group the tensor is first moved onto the manifold (and gets its slacks)."""
        out = []
        form = self._cache(index).form_for(group["constraint"])
        for p in group["params"]:
            st = self.state[p]
            if not st:
                if form is not None:
                    extra = form.start(p)
                    if extra:
                        st["slack"], = extra
                        st["slack_momentum"] = torch.zeros_like(st["slack"])
                if layout.whole_step is None:
                    st["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if layout.has_xi:
                    st["xi"] = torch.tensor(group["xi0"], dtype=p.dtype, device=p.device)
            out.append(st)
        return out

    def _cache(self, index):
        cache = self._caches.get(index)
        if cache is None:
            cache = self._caches[index] = GroupCache()
        return cache

    def _clock(self, index, group, n):
        """Group ``index``'s time at the start of step n: t_anchor + (n - n_anchor) h, re-anchored
        when h (``lr``) has changed, so that t_n = t0 + n h exactly while h is constant."""
        h = group["lr"]
        clock = self._clocks.setdefault(index, [self._t0, 0, h])
        if h != clock[2]:
            clock[:] = [clock[0] + (n - clock[1]) * clock[2], n, h]
        return clock[0] + (n - clock[1]) * h

    def _context(self, index, group, layout, n):
        """The :class:`~sdekit.torch.context.Letters` of group ``index`` in step n."""
        return Letters(index, group, layout, self._group_state(index, group, layout), self._clock(index, group, n),
                       n % group["rate"], self._cache(index), self._noise, self._coefficients, self._n_steps,
                       ndof=lambda: self.ndof(index))

    def state_dict(self):
        """torch's state dict plus ``"sdekit"``: the generator state, the step count and the
        clocks (tensors); constraints and callable settings are written as strings."""
        return checkpoint.state_dict(self, super().state_dict())

    def load_state_dict(self, state_dict):
        """Load a :meth:`state_dict`; the tensors are copied, so the dict is not aliased.

        Constraints and callable settings are this optimizer's own: the saved strings
        must match them (a constraint's repr; "callable" for a callable), else ValueError."""
        checkpoint.load_state_dict(self, state_dict, super().load_state_dict)
        self._caches = {}

    @property
    def generator(self):
        """The optimizer's ``torch.Generator`` (``noise="torch"``); None with ``noise="philox"``."""
        return self._generator

    @property
    def noise(self):
        """Where the normals come from: ``"philox"`` or ``"torch"``."""
        return self._noise.kind

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

    # ------------------------------------------------------------------ step

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
        layouts = [layout_of(scheme_key(g["scheme"])) for g in groups]
        flags = aligned(layouts)
        n = self._n_steps
        xs = [self._context(i, g, lay, n) for i, (g, lay) in enumerate(zip(groups, layouts))]
        if layouts[0].whole_step is not None:
            loss = stepping.whole_steps(self, closure, groups, layouts, xs)
        else:
            loss = stepping.underdamped(self, closure, groups, layouts, xs, flags, n)
        self._noise.end_step()
        self._n_steps += 1
        return loss

    def _evaluate(self, closure, time, xs=None, need=None):
        """Call the closure at clock ``time``; groups with ``need`` False get no gradient
        (their tensors' requires_grad is off while it runs, so backward skips them)."""
        frozen = []
        if need is not None and not all(need):
            for x, wanted in zip(xs, need):
                if not wanted:
                    frozen += [p for p in x.params if p.requires_grad]
        self._now = time
        self._noise.before_closure()
        try:
            for p in frozen:
                p.requires_grad_(False)
            with torch.enable_grad():
                return closure()
        finally:
            for p in frozen:
                p.requires_grad_(True)
            self._now = None

    # ------------------------------------------------------------------ views

    def ndof(self, group=0):
        """The degrees of freedom N of each tensor of a group (the thermostat's N): numel, or on
        a manifold the tangent dimension (Circle: numel; Stiefel(n, p): numel - p(p+1)/2 per W;
        Sphere: numel - 1)."""
        g = self.param_groups[group]
        form = self._cache(group).form_for(g["constraint"])
        return [p.numel() if form is None else form.dof(p) for p in g["params"]]

    def xi(self, group=0):
        """The thermostat variables of a group (one per tensor), as a 1-D tensor on the device."""
        states = [self.state[p] for p in self.param_groups[group]["params"]]
        if not states or "xi" not in states[0]:
            raise ValueError(f"group: group {group} has no thermostat variable (no D in its word, or no step yet)")
        return torch.stack([st["xi"] for st in states])


NOISES = ("philox", "torch")


def _noise_source(kind, seed, generator, prefetch, device):
    """The optimizer's noise source (:mod:`sdekit.torch.noise`) for the ``noise`` setting ``kind``."""
    if not isinstance(prefetch, bool):
        raise ValueError(f"prefetch_noise: must be True or False, got {prefetch!r}")
    if kind is None:
        kind = "torch" if (generator is not None or prefetch or device.type != "cpu") else "philox"
    if kind not in NOISES:
        raise ValueError(f"noise: must be one of {NOISES} or None, got {kind!r}")
    if kind == "torch":
        gen = _generator(seed, generator, device)
        return (noise.Prefetch if prefetch else noise.Direct)(gen)
    if generator is not None:
        raise ValueError(f"generator: is a torch.Generator, used with noise='torch'; noise='philox' takes "
                         f"seed= (got generator={generator!r})")
    if prefetch:
        raise ValueError("prefetch_noise: prefetches torch's generator (noise='torch'); noise='philox' "
                         "draws in parallel and needs no prefetch, got prefetch_noise=True")
    if device.type != "cpu":
        raise ValueError(f"noise: 'philox' fills CPU tensors, the parameters are on {device}; use noise='torch'")
    return noise.Philox(_seed(seed))


def _seed(seed):
    """A checked seed, 0 <= seed < 2**64 (default: drawn from torch's global generator)."""
    if seed is None:
        seed = int(torch.randint(0, 2**62, (1,)).item())
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: must be an integer with 0 <= seed < 2**64, got {seed!r}")
    return int(seed)


def _generator(seed, generator, device):
    """The optimizer's generator: ``generator`` checked, or a new one seeded with ``seed`` (default:
    drawn from torch's global generator)."""
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise ValueError(f"generator: must be a torch.Generator, got {generator!r}")
        if generator.device.type != device.type:
            raise ValueError(f"generator: is on {generator.device}, parameters on {device}")
        if seed is not None:
            raise ValueError(f"seed: give seed or generator, not both (seed={seed!r})")
        return generator
    return torch.Generator(device=device).manual_seed(_seed(seed))
