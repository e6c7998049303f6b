r"""Samplers of diffusion models: the reverse-time SDE and the probability-flow ODE of a forward
SDE of :mod:`sdekit.forward_sdes`, integrated in the reverse time :math:`\tau = T - t`
(see :mod:`sdekit.diffusion`).

Samplers (each integrates from t = T to t = eps in N equal steps)
------------------------------------------------------------------
* :class:`EulerMaruyama` -- the reverse SDE by Euler–Maruyama (Song et al. 2021);
  :class:`ProbabilityFlow` with ``method="euler"`` or ``"heun"`` -- the ODE.
* :class:`Splitting` -- the splitting through the core: the reverse SDE is split into
  a *linear* piece, solved exactly over each sub-step by the O letter with
  time-integrated coefficients (:func:`sdekit.operators.ou_coefficients` for VP; the
  2x2 exact flow for CLD), and a *score kick*
  :math:`u_v \mathrel{+}= \delta\, w\beta(t)\,(s(u, t) + \lambda\,\text{prior score})`,
  composed by a :class:`~sdekit.schemes.Scheme` over {B, O}: ``"BOB"`` =
  kick(h/2) OU(h) kick(h/2) (two score evaluations per step: unlike Langevin's B, the
  kick moves the variable the score depends on, so there is no first-same-as-last
  reuse), ``"OBO"`` = OU(h/2) kick(h) OU(h/2) (one evaluation), which on CLD is Dockhorn et al.'s symmetric splitting CLD
  sampler (SSCS, their Alg. 1). ``split="prior"`` (default) subtracts the prior's
  score from the kick and puts it into the O letter (the O is then the forward OU
  run backwards in time, a contraction; for VP with N(0, I) data the kick vanishes and
  the sampler is exact); ``split="drift"`` keeps the whole score in the kick (the O then
  has negative friction, :math:`c = e^{+\beta\delta/2}`).
* :class:`PredictorCorrector` -- Song et al.'s PC sampler: Langevin corrector steps at
  t_n, then an Euler–Maruyama predictor step (VP).

Time-dependent letters: how sub-step times are assigned
-------------------------------------------------------
The time t is treated as one more state variable, :math:`dt/d\tau = -1`, and it is
*carried by the O letters*: an O with fraction f run when the clock reads t covers
[t - f h, t] and advances the clock to t - f h; a B (kick) is a frozen-time piece and
is evaluated at the clock's current value. So in ``"BOB"`` the kicks are at
:math:`t_n` and :math:`t_{n+1}`, in ``"OBO"`` the kick is at :math:`t_n - h/2`, and for
a general list of fractions the kick after O fractions :math:`f_1, \dots, f_j` is at
:math:`t_n - h\sum_i f_i`. Because this is an ordinary splitting of the autonomous
system (u, t), symmetric words stay symmetric. The O letter over [t1, t0] is the
time-independent letter with the step-averaged
:math:`\bar\beta = (b(t_0) - b(t_1))/(t_0 - t_1)` -- exact, because the linear piece is
a time change of an autonomous OU -- and for a linear schedule
:math:`\bar\beta = \beta((t_0 + t_1)/2)` exactly, so with a constant schedule the letter
is *bitwise* the time-independent one: ``ou_coefficients(-beta/2, h, sqrt(beta))``.

Order. With exact sub-flows a symmetric splitting has weak order 2. Here the kick
solves :math:`du_v = \delta\,w\beta\,r(u, t)` by one Euler step (the residual score r
depends on the variables the kick moves), which leaves an :math:`O(h^2)` local error,
so the splitting is *first order* in general -- with an error constant proportional
to the derivative of the residual score (zero for VP on N(0, I) data). The exactness
harness (:func:`~sdekit.diffusion_exact.exact_output_moments`) measures this: see
``analysis/diffusion_gaussian.py``.

See also
--------
sdekit.diffusion : the overview (the reverse-time SDE and the probability-flow ODE) and every
    name of the three modules below in one place.
sdekit.forward_sdes : the forward SDEs whose pieces these samplers run, and the scores.
sdekit.diffusion_exact : exact output moments of these samplers for Gaussian data.
"""
import time
from dataclasses import dataclass, field

import numpy as np

from ._checks import finite_array, integer, real
from .forward_sdes import CLD, VPSDE, _check_sde
from .schemes import Scheme

__all__ = ["EulerMaruyama", "ProbabilityFlow", "Splitting", "PredictorCorrector", "SSCS",
           "time_grid", "sample"]


# ----------------------------------------------------------------------------- samplers

class _Sampler:
    """Common part: ``step(u, t, h, z, score, cache=None) -> u``; ``n_noise(d)`` normals per row."""

    linear = True          # an affine map of (u, z) when the score is affine
    evals_per_step = 1

    def __init__(self, sde):
        self.sde = _check_sde(sde)

    def __repr__(self):
        return self.label

    @staticmethod
    def _score(score, u, t, cache):
        """score(u, t), reusing the last evaluation when it was at the same (u object, t)."""
        if cache is not None and cache.get("u") is u and cache.get("t") == t:
            cache["reused"] = cache.get("reused", 0) + 1
            return cache["s"]
        s = score(u, t)
        if cache is not None:
            cache.update(u=u, t=t, s=s)
            cache["evals"] = cache.get("evals", 0) + 1
        return s


class EulerMaruyama(_Sampler):
    r"""Euler–Maruyama on the reverse SDE (Song et al. 2021):
    :math:`u_{n+1} = u_n + h\,[-f + GG^T\nabla\log p](u_n, t_n) + G(t_n)\sqrt h\,z_n`,
    :math:`t_{n+1} = t_n - h`. Weak order 1."""

    label = "EM"

    def n_noise(self, d):
        return self.sde.n_noise(d)

    def step(self, u, t, h, z, score, cache=None):
        s = self._score(score, u, t, cache)
        return self.sde.add_noise(u + h * self.sde.reverse_drift(u, t, s, 1.0), t, h, z)


class ProbabilityFlow(_Sampler):
    r"""The probability-flow ODE :math:`du/d\tau = -f + \tfrac12 GG^T\nabla\log p_t`
    (Song et al. 2021, Eq. 13) by Euler (order 1) or Heun's method (order 2; Karras et al.
    2022). Deterministic (no noise)."""

    def __init__(self, sde, method="heun"):
        super().__init__(sde)
        if method not in ("euler", "heun"):
            raise ValueError(f"method: must be 'euler' or 'heun', got {method!r}")
        self.method = method
        self.label = f"ODE-{method}"
        self.evals_per_step = 1 if method == "euler" else 2

    def n_noise(self, d):
        return 0

    def step(self, u, t, h, z, score, cache=None):
        f0 = self.sde.reverse_drift(u, t, self._score(score, u, t, cache), 0.5)
        if self.method == "euler":
            return u + h * f0
        u1 = u + h * f0
        f1 = self.sde.reverse_drift(u1, t - h, self._score(score, u1, t - h, cache), 0.5)
        return u + (0.5 * h) * (f0 + f1)


class Letters:
    """What a letter's :meth:`~sdekit.letters.Letter.diffusion` hook sees of one step of a
    :class:`Splitting` sampler.

    Attributes
    ----------
    sde : VPSDE or CLD
        The forward SDE: its ``force``, ``kick`` and ``o_letter`` are the pieces' arithmetic.
    w : float
        1 for the reverse SDE, 1/2 for the probability-flow ODE.
    lam : float
        1 (``split="prior"``: the prior's score is in the linear piece) or 0 (``"drift"``).
    kick : str
        How a score kick is solved: "euler" or "heun".
    """

    def __init__(self, sampler, z, width, score, cache):
        self.sde, self.w, self.lam, self.kick = sampler.sde, sampler.w, sampler.lam, sampler.kick
        self._z, self._width, self._score, self._cache, self._next = z, width, score, cache, 0

    def score(self, u, t):
        """The score s(u, t), reusing the last evaluation at the same (u object, t)."""
        return _Sampler._score(self._score, u, t, self._cache)

    def normals(self, n):
        """The next n blocks of the step's standard normals (one block per normal per
        coordinate of u, in word order); None for the ODE."""
        j, self._next = self._next, self._next + n
        return self._z[..., j * self._width:(j + n) * self._width] if self._width else None


class Splitting(_Sampler):
    r"""Splitting of the reverse SDE (or probability-flow ODE) into an exact linear O
    letter and a score kick B, composed by a :class:`~sdekit.schemes.Scheme` over {B, O}.

    Pieces, in reverse time with :math:`w = 1` (SDE) or 1/2 (ODE) and
    :math:`\lambda = 1` (``split="prior"``) or 0 (``"drift"``):

    * VP, O: :math:`dx = (\tfrac12 - w\lambda)\beta x\,d\tau + \sqrt\beta\,dW` -- the
      operators' O letter with friction :math:`-(\tfrac12 - w\lambda)\bar\beta`
      (:func:`sdekit.operators.ou_coefficients`); B:
      :math:`x \mathrel{+}= \delta\,w\beta(t)(s + \lambda x)`.
    * CLD, O: :math:`dx = -\beta M^{-1} v`, :math:`dv = \beta(x + (1 - 2w\lambda)\Gamma M^{-1} v) + \sqrt{2\Gamma\beta}\,dW`
      (exact 2x2 flow); B: :math:`v \mathrel{+}= \delta\,2w\Gamma\beta(t)(s + \lambda M^{-1}v)`.
      ``Splitting(CLD(), "OBO")`` is Dockhorn et al.'s SSCS.

    Each letter is its :meth:`~sdekit.letters.Letter.diffusion` hook (B in
    :mod:`sdekit.letters.kick`, O in :mod:`sdekit.letters.ou`); a letter without one is
    refused. Sub-step times: the letters with ``diffusion_clock`` (O) carry the clock
    (see the module docstring). Each letter that reads the force (B) costs one score
    evaluation (``evals_per_step``); each draws ``normals`` blocks of noise.

    Parameters
    ----------
    sde : VPSDE or CLD
    scheme : str, list of (letter, fraction) or Scheme
        A word over B and O (default ``"BOB"``); it must contain an O (the clock).
    split : {"prior", "drift"}
    ode : bool
        Integrate the probability-flow ODE instead of the reverse SDE.
    kick : {"euler", "heun"}
        How the kick piece :math:`du = \delta F(u, t)` (frozen t) is solved: one Euler
        step (the letter B; the splitting is then first order because F depends on the
        kicked variable) or Heun's rule (two score evaluations per kick; with the exact
        O this restores the second order of the symmetric composition).
    """

    def __init__(self, sde, scheme="BOB", split="prior", ode=False, kick="euler"):
        super().__init__(sde)
        if kick not in ("euler", "heun"):
            raise ValueError(f"kick: must be 'euler' or 'heun', got {kick!r}")
        self.kick = kick
        self.scheme = scheme if isinstance(scheme, Scheme) else Scheme(scheme)
        rule = ("a diffusion splitting is a word over letters with a diffusion() hook (B: score kick, O: exact "
                "linear flow, which carries the clock) with at least one O")
        for letter in (self.scheme.whole_step,) if self.scheme.whole_step else self._letters:
            if not letter.supports("diffusion"):
                raise ValueError(f"scheme: {letter.missing('diffusion', 'the diffusion sampler Splitting')}; "
                                 f"{rule}; got {self.scheme.word!r}")
        if not any(letter.diffusion_clock for letter in self._letters):
            raise ValueError(f"scheme: {rule}; got {self.scheme.word!r}")
        if split not in ("prior", "drift"):
            raise ValueError(f"split: must be 'prior' or 'drift', got {split!r}")
        self.split, self.ode = split, bool(ode)
        self.w = 0.5 if self.ode else 1.0
        self.lam = 1.0 if split == "prior" else 0.0
        self.label = f"{self.scheme.word}" + ("-ODE" if ode else "") + ("" if split == "prior" else "-drift")
        if isinstance(sde, CLD) and self.scheme.word == "OBO" and not ode and split == "prior":
            self.label = "SSCS"
        if kick == "heun":
            self.label += "-heun"
        # a kick moves the variables the score depends on: no first-same-as-last reuse
        self.evals_per_step = sum(1 for l in self._letters if l.needs_force) * (2 if kick == "heun" else 1)

    @property
    def _letters(self):
        return tuple(e.letter for e in self.scheme.entries)

    def _times(self, t, h):
        """(t_start, t_end) of each entry: a clock letter runs from the clock to clock - f h, the
        others at the clock."""
        out, clock, done = [], t, 0.0
        n_clock = sum(1 for l in self._letters if l.diffusion_clock)
        seen = 0
        for e in self.scheme.entries:
            if e.letter.diffusion_clock:
                seen += 1
                done += e.fraction
                # the last O lands exactly on t - h (no rounding drift of the clock)
                end = t - h if seen == n_clock else t - done * h
                out.append((clock, end))
                clock = end
            else:
                out.append((clock, clock))
        return out

    def substep_times(self, t, h):
        """[(letter, fraction, t_start, t_end)]: each O runs from the clock to clock - f h; a B is
        at the clock (t_start == t_end)."""
        return [(e.letter.name, e.fraction, t0, t1) for e, (t0, t1) in zip(self.scheme.entries, self._times(t, h))]

    def _normals(self):
        return sum(l.normals for l in self._letters)

    def n_noise(self, d):
        if self.ode:
            return 0
        return self.sde.o_noise(d) * self._normals()

    def step(self, u, t, h, z, score, cache=None):
        width = 0 if self.ode else (z.shape[-1] // max(1, self._normals()))
        x = Letters(self, z, width, score, cache)
        for e, (t0, t1) in zip(self.scheme.entries, self._times(t, h)):
            u = e.letter.diffusion(x, u, e.fraction * h, t0, t1)
        return u


def SSCS(sde=None):
    """Dockhorn et al.'s symmetric splitting CLD sampler: ``Splitting(CLD(), "OBO")``,
    i.e. exact OU(h/2), Euler score kick(h) at :math:`t_n - h/2`, exact OU(h/2)."""
    return Splitting(CLD() if sde is None else sde, "OBO", split="prior")


class PredictorCorrector(_Sampler):
    r"""Song et al.'s predictor–corrector sampler (ICLR 2021, Alg. 1/2; VP).

    At each :math:`t_n`: ``n_corrector`` Langevin steps
    :math:`x \leftarrow x + \epsilon\,s(x, t_n) + \sqrt{2\epsilon}\,z`, then one
    Euler–Maruyama predictor step to :math:`t_{n+1}`. Step size
    :math:`\epsilon = 2\alpha\,(r\,\|z\|/\|s\|)^2`, :math:`\alpha = 1 - \beta(t_n) h`,
    r = ``snr``. With ``step_size="snr"`` the norms are those of the drawn noise and
    score per sample (Song et al.'s rule, not affine in x); the default
    ``"deterministic"`` replaces :math:`\|z\|/\|s\|` by the noise level
    :math:`\sigma_t = \sqrt{1 - e^{-b(t)}}` (the ratio for data much narrower than the
    noise), so the sampler is affine and the exactness harness applies. The corrector
    step does not shrink with h (only with :math:`\sigma_t`): on Gaussian data the
    corrector adds an error that grows with r and decays slower than h (observed order
    about 0.6 for r = 0.16, N = 1024..4096), so PC is less accurate than EM at equal N.
    """

    def __init__(self, sde, n_corrector=1, snr=0.16, step_size="deterministic"):
        super().__init__(sde)
        if not isinstance(sde, VPSDE):
            raise ValueError(f"sde: the predictor-corrector sampler is implemented for VPSDE, got {sde!r}")
        self.n_corrector = integer("n_corrector", n_corrector, low=0)
        self.snr = real("snr", snr, low=0.0)
        if step_size not in ("deterministic", "snr"):
            raise ValueError(f"step_size: must be 'deterministic' or 'snr', got {step_size!r}")
        self.step_size = step_size
        self.linear = step_size == "deterministic"
        self.evals_per_step = 1 + self.n_corrector
        self.label = f"PC({self.n_corrector}, snr={self.snr:g})"

    def n_noise(self, d):
        return d * (1 + self.n_corrector)

    def step(self, u, t, h, z, score, cache=None):
        sde, d = self.sde, u.shape[-1]
        alpha = 1.0 - sde.schedule.beta(t) * h
        if self.n_corrector and alpha <= 0:
            raise ValueError(f"n_steps: too few for the corrector: alpha = 1 - beta(t) h = {alpha:.3g} <= 0 "
                             f"at t = {t:.4g}, h = {h:.4g} (Song et al.'s corrector needs beta h < 1)")
        for j in range(self.n_corrector):
            zj = z[..., (j + 1) * d:(j + 2) * d]
            s = self._score(score, u, t, cache)
            if self.step_size == "snr":
                ratio = np.linalg.norm(zj, axis=-1, keepdims=True) / np.linalg.norm(s, axis=-1, keepdims=True)
            else:
                ratio = sde.sigma(t)
            eps = 2.0 * alpha * (self.snr * ratio) ** 2
            u = u + eps * s + np.sqrt(2.0 * eps) * zj
        s = self._score(score, u, t, cache)
        return sde.add_noise(u + h * sde.reverse_drift(u, t, s, 1.0), t, h, z[..., :d])


# ----------------------------------------------------------------------------- drivers

def time_grid(n_steps, T=1.0, eps=1e-3):
    r"""The N + 1 times :math:`t_n = T - n h`, :math:`h = (T - \epsilon)/N` (last one exactly eps)."""
    n_steps = integer("n_steps", n_steps, low=1)
    T = real("T", T, low=0.0, low_open=True)
    eps = real("eps", eps, low=0.0)
    if eps >= T:
        raise ValueError(f"eps: must be < T = {T}, got {eps!r}")
    ts = np.linspace(T, eps, n_steps + 1)
    ts[-1] = eps
    return ts


def _check_sampler(sampler):
    if not isinstance(sampler, _Sampler):
        raise ValueError(f"sampler: must be one of EulerMaruyama, ProbabilityFlow, Splitting, "
                         f"PredictorCorrector, got {sampler!r}")
    return sampler


@dataclass
class SampleResult:
    """Output of :func:`sample`: the final states u (n, k d), their data block x (n, d),
    the score evaluations made (per sample batch) and the wall time."""
    u: np.ndarray
    x: np.ndarray
    evaluations: int
    wall: float
    ts: np.ndarray = field(repr=False)


def sample(sampler, score, n_samples, n_steps, dim, *, seed=0, eps=1e-3, u0=None):
    r"""Integrate ``sampler`` from t = T to t = eps in ``n_steps`` equal steps.

    Starts from the prior (VP: N(0, I); CLD: N(0, I) x N(0, M I)) unless ``u0`` is given.
    Noise: one numpy Generator from ``seed``; per step an (n, sampler.n_noise(d)) block
    of standard normals.

    Returns
    -------
    SampleResult
    """
    sampler = _check_sampler(sampler)
    n_samples = integer("n_samples", n_samples, low=1)
    dim = integer("dim", dim, low=1)
    sde = sampler.sde
    ts = time_grid(n_steps, sde.T, eps)
    rng = np.random.default_rng(seed)
    D = sde.k * dim
    if u0 is None:
        m, C = sde.prior(dim)
        u = m + rng.standard_normal((n_samples, D)) * np.sqrt(np.diag(C))
    else:
        u = finite_array("u0", u0)
        if u.shape != (n_samples, D):
            raise ValueError(f"u0: must have shape ({n_samples}, {D}), got {u.shape}")
    cache, start, nz = {}, time.perf_counter(), sampler.n_noise(dim)
    for k in range(len(ts) - 1):
        z = rng.standard_normal((n_samples, nz)) if nz else None
        u = sampler.step(u, ts[k], ts[k] - ts[k + 1], z, score, cache)
        if not np.all(np.isfinite(u)):
            raise FloatingPointError(f"sample: non-finite state at step {k + 1} (t = {ts[k + 1]:.6g}) "
                                     f"with {sampler.label}")
    return SampleResult(u=u, x=u[:, sde.data_block(dim)], evaluations=cache.get("evals", 0),
                        wall=time.perf_counter() - start, ts=ts)
