r"""Letters written as scalar arithmetic on one coordinate: the way to add a letter.

A :class:`CoordinateLetter` is a flow that acts on each coordinate j alone,

.. math::

    (q_j, p_j) \leftarrow \phi(q_j, p_j, F_j;\ \delta,\ \theta_j;\ R_j^{(1)}, \dots, R_j^{(n)}),

given as one Python function ``flow(*inputs, delta, *parameters, *normals)`` that
returns the new values of ``moves``. Written with arithmetic and numpy functions
(``np.exp``, ``np.cos``, ...), the same text runs vectorised on the numpy backend's
arrays and compiled by numba in the generated kernels, the way
:mod:`sdekit.operators` does for the built-in letters. Every hook is derived from it:

* :meth:`numpy` calls ``flow`` on the (n_paths, d) arrays;
* :meth:`source` calls the compiled ``flow`` per coordinate in the generated kernel;
* :meth:`linear_map` probes ``flow`` (it is affine in the state and the normals for a
  linear letter) and refuses a flow that is not linear.

The torch optimizer needs a :meth:`torch` hook written for tensors (none by default).
"""
import numpy as np

from .base import COEFFICIENTS, Letter

INPUTS = ("q", "p", "F")
"""Per-coordinate state a flow may read: positions, momenta, the force F(q)."""

PARAMETERS = ("inv_mass", "sqrt_mass", "gamma", "sigma", "kT", "eps")
"""Run parameters a flow may read: per coordinate (the masses) or scalars."""


class CoordinateLetter(Letter):
    r"""A letter given by one coordinate-wise ``flow`` function (see the module docstring).

    Set, on a subclass:

    ``name``, ``title``, ``update``
        as for :class:`~sdekit.letters.Letter`;
    ``inputs`` : tuple from ``("q", "p", "F")``
        the flow's leading arguments (reading ``"F"`` makes the letter need the force);
    ``moves`` : tuple from ``("q", "p")``
        what the flow returns, in this order (one value, or a tuple);
    ``parameters`` : tuple from :data:`PARAMETERS`
        arguments after ``delta`` (``gamma``, ``sigma`` and ``kT`` may then be callables of t);
    ``normals`` : int
        standard normals per coordinate, passed last;
    ``flow`` : ``staticmethod(function)``
        the arithmetic.

    Examples
    --------
    The exact flow of the harmonic piece :math:`dq = p\,dt,\ dp = -\omega^2 q\,dt` (unit mass):

    >>> import numpy as np
    >>> from sdekit.letters import CoordinateLetter
    >>> def rotate(q, p, delta):
    ...     c, s = np.cos(delta), np.sin(delta)
    ...     return c * q + s * p, -s * q + c * p
    >>> class Harmonic(CoordinateLetter):
    ...     name, title, update = "H", "harmonic", "(q, p) rotated by ({f})"
    ...     inputs = moves = ("q", "p")
    ...     flow = staticmethod(rotate)
    >>> Harmonic().moves
    ('q', 'p')
    """

    inputs = ("q", "p")
    parameters = ()
    flow = None
    constrained = False

    def __init__(self):
        if self.flow is None or not callable(self.flow):
            raise ValueError(f"letter: {self.name!r} needs flow = staticmethod(function), got {self.flow!r}")
        for attr, allowed in (("inputs", INPUTS), ("moves", ("q", "p")), ("parameters", PARAMETERS)):
            value = getattr(self, attr)
            if not isinstance(value, tuple) or any(v not in allowed for v in value) or len(set(value)) < len(value):
                raise ValueError(f"letter: {self.name!r} {attr} must be a tuple of distinct names from "
                                 f"{allowed}, got {value!r}")
        if not self.moves:
            raise ValueError(f"letter: {self.name!r} must move q or p, got moves={self.moves!r}")
        if self.constrained and "q" in self.moves:
            raise ValueError(f"letter: {self.name!r} moves q, so on a constrained system it would leave the "
                             f"manifold (a coordinate-wise flow cannot do SHAKE): set constrained=False")
        self.needs_force = "F" in self.inputs
        self.coefficients = tuple(c for c in COEFFICIENTS if c in self.parameters)

    # ------------------------------------------------------------------ numpy

    def numpy(self, x, k, delta, new_force):
        w, spec = x.w, x.spec
        if self.needs_force and new_force:
            w.F = x.force(k)
        state = {"q": w.q, "p": w.p, "F": w.F}
        args = [state[n] for n in self.inputs] + [delta] + [self._parameter(x, n, k) for n in self.parameters]
        args += [x.normals(w.q.shape) for _ in range(self.normals)]
        out = self.flow(*args)
        out = out if len(self.moves) > 1 else (out,)
        for part, value in zip(self.moves, out):
            setattr(w, part, np.asarray(value, dtype=spec.dtype))

    @staticmethod
    def _parameter(x, name, k):
        if name in COEFFICIENTS:
            return x.coefficient(name, k)
        return getattr(x.spec, name)

    # ------------------------------------------------------------------ linear

    def linear_map(self, delta, K, gamma, kT, mass, ops):
        r"""T and Q of the flow on x = (q, p), found by probing it.

        The flow acts on each coordinate alone, so it is fixed by its response to
        unit q, p, F and normals: :math:`x' = A x + A_F F + N R` with F = -K q gives
        :math:`T = A - A_F K` and :math:`Q = N N^T`. The flow is checked to be linear
        (superposition at a random point, to 1e-10 relative); ValueError otherwise.
        """
        d = K.shape[0]
        if "eps" in self.parameters:
            raise ValueError(f"letter {self.name!r}: sdekit.linear has no eps (thermostat coupling) to pass to its flow")
        params = {"inv_mass": 1.0 / mass, "sqrt_mass": np.sqrt(mass), "gamma": gamma * np.ones(d),
                  "kT": kT * np.ones(d), "sigma": np.sqrt(2.0 * gamma * kT) * np.ones(d)}

        def response(values):
            args = [values[n] for n in self.inputs] + [delta] + [params[n] for n in self.parameters]
            args += [values[f"R{i}"] for i in range(self.normals)]
            out = self.flow(*args)
            out = out if len(self.moves) > 1 else (out,)
            moved = dict(zip(self.moves, (np.broadcast_to(np.asarray(v, dtype=float), (d,)) for v in out)))
            return np.concatenate([moved.get("q", values["q"]), moved.get("p", values["p"])])

        names = list(self.inputs) + [f"R{i}" for i in range(self.normals)]
        zero = {n: np.zeros(d) for n in ("q", "p", "F", *names)}
        base = response(zero)
        unit = {n: response({**zero, n: np.ones(d)}) - base for n in names}
        # q and p not read by the flow pass through unchanged unless moved
        for n in ("q", "p"):
            if n not in unit:
                unit[n] = response({**zero, n: np.ones(d)}) - base
        rng = np.random.default_rng(0)
        point = {n: rng.standard_normal(d) for n in names}
        point.update({n: rng.standard_normal(d) for n in ("q", "p") if n not in point})
        linear = base + sum(unit[n] * np.tile(point[n], 2) for n in point if n in unit)   # (2d,) responses
        actual = response({**zero, **point})
        if np.any(base != 0) or not np.allclose(actual, linear, rtol=1e-10, atol=1e-12):
            raise ValueError(f"letter {self.name!r}: its flow is not linear in (q, p, F) and the normals, so "
                             f"sdekit.linear cannot give an exact Gaussian law")
        diag = lambda v: np.diag(v)
        blocks = lambda n: (diag(unit[n][:d]), diag(unit[n][d:]))
        (qq, pq), (qp, pp) = blocks("q"), blocks("p")
        T = np.block([[qq, qp], [pq, pp]])
        if "F" in unit:
            qF, pF = blocks("F")
            T = T + np.vstack([qF, pF]) @ np.hstack([-K, np.zeros((d, d))])
        Q = np.zeros((2 * d, 2 * d))
        for i in range(self.normals):
            N = np.vstack(blocks(f"R{i}"))
            Q += N @ N.T
        return T, Q

    # --- source(): the generated kernel's lines (sdekit.kernels.codegen)

    def source(self, g, k, delta, new_force):
        """One call of the compiled ``flow`` per coordinate (registered with
        :mod:`sdekit.kernels.runtime` by its fingerprint), its normals drawn from the path's
        Philox stream in the numpy backend's order (every coordinate's first, then second, ...)."""
        g.comment(self.update.format(f=g.fraction(k)))
        if self.needs_force and new_force:
            g.force(k)
        flow = g.function(self.flow, f"flow_{self.name}")
        per_coordinate = {"q": "q[{j}]", "p": "p[{j}]", "F": "F[{j}]", "inv_mass": "inv_mass[{j}]",
                          "sqrt_mass": "sqrt_mass[{j}]", "eps": "eps"}
        args = [per_coordinate[n] for n in self.inputs] + [delta]
        args += [g.coefficient(n, k) if n in COEFFICIENTS else per_coordinate[n] for n in self.parameters]
        args += [f"{{z{i}}}" for i in range(self.normals)]
        expr = f"{flow}({', '.join(args)})"
        if self.normals:
            g.each_normal([(self.moves, expr)], normals=self.normals, cast=True)
        else:
            g.each(self.moves, expr, cast=True)
