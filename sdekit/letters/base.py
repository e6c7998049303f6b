r"""What a letter is: its metadata and one hook per consumer.

A letter is the exact (or approximate) flow of one piece of an SDE, run for a
sub-step :math:`\delta = f h`. Everything sdekit knows about a letter lives on its
:class:`Letter` object, one module per letter in :mod:`sdekit.letters`:

metadata (read by :class:`~sdekit.schemes.Scheme`, :mod:`sdekit.schedules` and the
kernel generator)
    ``moves`` (the parts of the state it changes: ``"q"``, ``"p"``, ``"xi"``),
    ``needs_force`` (it reads F(q): a B), ``normals`` (standard normals it draws per
    coordinate), ``clock`` (the time t rides with it: A), ``records`` (what is
    recorded right after it: O records ``p_O``), ``coefficients`` (the parameters it
    reads that may depend on t: ``"gamma"``, ``"sigma"``, ``"kT"``), ``whole_step``
    (EM and LM: a whole overdamped step, named rather than spelled).

hooks (one per consumer; a missing hook raises a ValueError naming the letter and
the consumer, never a silent fallback)
    :meth:`numpy` (the reference backend, :mod:`sdekit.reference`), :meth:`source`
    (lines of the generated numba kernel, :mod:`sdekit.kernels.codegen`),
    :meth:`linear_map` (:mod:`sdekit.linear`), :meth:`torch` (the optimizer,
    :mod:`sdekit.torch`) and :meth:`diffusion` (the diffusion samplers' splitting,
    :mod:`sdekit.diffusion`).

The arithmetic itself stays in :mod:`sdekit.operators` (the one text of the
mathematics); hooks receive the operators namespace of their consumer (``ops``) so
the ``--break-letter`` test harness can replace a flow in one consumer alone.
"""

STATE_PARTS = ("q", "p", "xi")
"""The parts of the state a letter may move."""

COEFFICIENTS = ("gamma", "sigma", "kT")
"""Parameters a letter may read that can be callables of t (one table column per
occurrence of the letter in the word, in this order: :mod:`sdekit.schedules`)."""

CONSUMERS = ("numpy", "source", "linear_map", "torch", "diffusion")
"""The hooks a letter may define."""


class Letter:
    r"""One letter of the alphabet: metadata plus one hook per consumer.

    Subclass it and set the class attributes; define the hooks the letter supports.
    Built-ins: :mod:`sdekit.letters.drift` (A), ``kick`` (B), ``ou`` (O),
    ``thermostat`` (D), ``overdamped`` (EM, LM). For a letter written as scalar
    arithmetic acting coordinate by coordinate, :class:`sdekit.letters.CoordinateLetter`
    derives every hook from one function.

    Attributes
    ----------
    name : str
        One upper-case character for a letter spelled in words (not V or R, the
        openmmtools aliases); any upper-case name for a ``whole_step`` letter.
    title : str
        A short name ("drift"), shown by :meth:`Scheme.describe`.
    update : str
        The update as text, with ``{f}`` for the sub-step ("q += ({f}) M^-1 p").
    moves : tuple of str
        Parts of the state it changes (:data:`STATE_PARTS`). A letter that moves q
        makes the cached force stale (the next B evaluates a new one).
    needs_force : bool
        Whether it reads the force F(q) (evaluated lazily, first-same-as-last).
    normals : int
        Standard normals drawn per coordinate, per occurrence (O: 1).
    clock : bool
        Whether the clock t rides with it (A: :attr:`Scheme.substep_times`).
    records : tuple of (str, str)
        ``(record, part)``: after the letter, ``record`` is a copy of ``part``
        (O: ``("p_O", "p")``, the momentum right after the last O).
    coefficients : tuple of str
        Parameters read per occurrence that may depend on t (:data:`COEFFICIENTS`).
    whole_step : bool
        A whole overdamped step (EM, LM): the scheme is the letter alone.
    constrained : bool
        Whether it runs on constrained systems (built-ins: True). A letter that moves
        p is followed by RATTLE there; one that moves q must do SHAKE itself.
    geodesic : bool
        Whether ``geodesic_steps`` splits it into drift–SHAKE–RATTLE sub-steps (A only).
    reference : str
        Where the letter comes from.
    uniforms : int
        Uniform random numbers drawn per occurrence (per path, not per coordinate): the
        Metropolis test of ``}`` and MALA. Each is one slot of the path's normal stream,
        :math:`u = \Phi(z)` of the slot's normal z, read from the slot's bits
        (:func:`sdekit.kernels.philox.uniform_of`).
    force_group : int or None
        The force group it kicks with (``B0``, ``B1``, ...: :func:`sdekit.systems.split`);
        None for the whole force.
    reversible : bool
        A deterministic, volume-preserving, time-reversible map (with p -> -p): it may sit
        inside a Metropolis-adjusted sub-word ``{ }`` (A, B and the group kicks).
    keeps_force : bool
        It may move q, but only back to a state whose force it restores with it (``}``
        on rejection), so the cached force stays valid.
    bracket : str or None
        ``"open"`` or ``"close"`` for the Metropolis brackets ``{`` and ``}``
        (:mod:`sdekit.letters.metropolis`).
    carries_weight : bool
        Its noise carries the path weight of a change of drift (``drift_change``,
        :mod:`sdekit.girsanov`): O and EM, whose hooks then add the weight's increment.
    shadow : str or None
        What the energy change :math:`\Delta H` it causes counts as in the shadow-work
        bookkeeping (:mod:`sdekit.shadow`; Sivak, Chodera & Crooks, PRX 3, 011007, 2013):
        ``"heat"`` (O: the kinetic-energy change is heat exchanged with the bath),
        ``"work"`` (a deterministic letter, A, B, ``{ }``: its energy change is shadow work,
        zero for an exact Hamiltonian flow) or None (not defined: thermostat variables,
        overdamped steps, a user's letter that does not say; ``shadow_work=True`` refuses it).
    """

    name = None
    title = ""
    update = ""
    moves = ()
    needs_force = False
    normals = 0
    clock = False
    records = ()
    coefficients = ()
    whole_step = False
    constrained = False
    geodesic = False
    reference = ""
    uniforms = 0
    force_group = None
    reversible = False
    keeps_force = False
    bracket = None
    carries_weight = False
    shadow = None

    # ------------------------------------------------------------------ consumers

    def numpy(self, x, k, delta, new_force):
        """Apply the letter to the batch of paths of the numpy backend, in place.

        Parameters
        ----------
        x : sdekit.reference.Letters
            The step's context: ``x.w`` the walker (q, p, xi, F, ...), ``x.spec``,
            ``x.ops`` the operators, ``x.normals(shape)``, ``x.force(k)``,
            ``x.coefficient(name, k)``, ``x.n_dof``.
        k : int
            Index of the letter in the word (``scheme.steps[k]``).
        delta : float
            Its sub-step f h.
        new_force : bool
            Whether it must evaluate a new force (``scheme.evaluations[k]``).
        """
        raise self.missing("numpy", "the numpy backend")

    def source(self, g, k, delta, new_force):
        """Write the letter's lines of the generated kernel's ``step`` (one path, one step).

        Parameters
        ----------
        g : sdekit.kernels.writer.Writer
            Writes the lines: ``g.comment(text)``, ``g.line(...)`` (scalar statements),
            ``g.each(targets, template, **kw)`` (a statement per coordinate, ``{j}`` in the
            template; a loop over arrays or a D-tuple of registers, whichever the kernel
            stores), ``g.each_normal(...)`` (the same with ``{z}`` the coordinate's normal
            from the path's Philox stream), ``g.force(k)``, ``g.end_force()``,
            ``g.coefficient(name, k)`` (gamma, sigma, kT: a scalar or the time-dependent
            table's column), ``g.path_constants(...)`` (values fixed along a path),
            ``g.function(f, name)`` (a user's scalar function), ``g.fraction(k)``; and
            ``g.constraint``, ``g.time_dependent``, ``g.adaptive``, ``g.n_dof``.
        k : int
            Index of the letter in the word (0 for a whole-step letter).
        delta : str
            The text of its sub-step f h in the kernel (``"d[2]"``).
        new_force : bool
            Whether it must evaluate a new force (``scheme.evaluations[k]``).

        The generator adds RATTLE after a letter that moves p on a constrained system and
        copies its ``records`` after the word's last writer; a missing hook is a ValueError
        naming the letter and the backend.
        """
        raise self.missing("source", "the compiled backends (cpu, cuda)")

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        """Linear map T and noise covariance Q of the letter on x = (q, p) (:mod:`sdekit.linear`)."""
        raise self.missing("linear_map", "sdekit.linear (exact Gaussian statistics)")

    def torch(self, x, delta, t):
        """Apply the letter to one parameter group of the torch optimizer, in place (:mod:`sdekit.torch`).

        Called by :class:`sdekit.torch.SDEOptimizer` for each occurrence of the letter in
        the group's word, in word order, in the steps where it runs (multirate groups run
        a ``clock`` letter every step, the others once per block). The optimizer
        evaluates the shared gradient before a letter that ``needs_force`` and projects
        the momenta (RATTLE) after a letter that moves ``"p"`` on a constrained group.
        Tensors are updated with ``torch._foreach_*`` ops; noise comes from
        ``x.normals(tensors)`` (one draw of the optimizer's noise per call), or is applied
        by ``x.ou_update(moms, c, s)`` (p = c p + s R, the draw fused into the update
        with ``noise="philox"``).

        Parameters
        ----------
        x : sdekit.torch.Letters
            The group in this step: ``x.params`` (q), ``x.moms`` (p), ``x.all_moms``
            (with slack momenta), ``x.grads`` (the loss gradient, F = -grads),
            ``x.xi`` (thermostat variables), ``x.group`` (settings; ``x.at(name, t)``
            for time-dependent ones), ``x.constraint``, ``x.ops`` and ``x.tops`` (the
            operators on numbers and on tensors; use these, not a direct import, so
            the ``--break-letter`` harness reaches the hook), ``x.normals(tensors)``,
            ``x.ou_update(moms, c, s)``, ``x.memo(key, compute)``.
        delta : float
            Its sub-step: its fraction of h (``lr``), times ``rate`` for a non-clock
            letter of a multirate group; h for a whole-step letter.
        t : float
            Its clock time: the step's start plus h times the clock fractions before it.
        """
        raise self.missing("torch", "the torch optimizer (sdekit.torch.SDEOptimizer)")

    diffusion_clock = False
    """Whether the reverse-time clock of :class:`sdekit.diffusion.Splitting` rides with the
    letter (O: it integrates over [t - f h, t]); letters without it are frozen-time pieces."""

    def diffusion(self, x, u, delta, t0, t1):
        """The letter as a piece of a diffusion sampler's splitting (:class:`sdekit.diffusion.Splitting`).

        Parameters
        ----------
        x : sdekit.diffusion.Letters
            The sampler's step: ``x.sde`` (VPSDE or CLD: ``force``, ``kick``,
            ``o_letter``), ``x.w`` (1: reverse SDE, 1/2: probability-flow ODE),
            ``x.lam`` (the prior's share of the linear piece), ``x.kick`` ("euler" or
            "heun"), ``x.score(u, t)``, ``x.normals(n)`` (the letter's n blocks of the
            step's standard normals, None for the ODE).
        u : ndarray
            The state (not changed: return the new one).
        delta : float
            Its sub-step f h.
        t0, t1 : float
            The clock before and after it (equal unless ``diffusion_clock``).
        """
        raise self.missing("diffusion", "the diffusion samplers (sdekit.diffusion.Splitting)")

    # ------------------------------------------------------------------ capabilities

    def supports(self, consumer):
        """Whether the letter defines the hook ``consumer`` (one of :data:`CONSUMERS`)."""
        if consumer not in CONSUMERS:
            raise ValueError(f"consumer: must be one of {CONSUMERS}, got {consumer!r}")
        return getattr(type(self), consumer) is not getattr(Letter, consumer)

    def missing(self, consumer, where):
        """The ValueError for a hook this letter does not define."""
        return ValueError(f"letter {self.name!r} ({self.title or type(self).__name__}) cannot run in {where}: "
                          f"it defines no {consumer}() hook")

    @property
    def moves_positions(self):
        """Whether it moves q."""
        return "q" in self.moves

    @property
    def stales_force(self):
        """Whether a cached force is stale after it: it moves q and does not restore the force."""
        return self.moves_positions and not self.keeps_force

    def describe(self, fraction_text):
        """One line of :meth:`Scheme.describe`: the name, the title and the update over ``fraction_text``."""
        text = self.update.format(f=fraction_text).replace("(h)", "h")
        return f"{self.title:<10} {text}"

    def __repr__(self):
        return f"<letter {self.name}: {self.title}>"
