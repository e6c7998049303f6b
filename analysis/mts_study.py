"""Multiple time stepping: where does O go, and the r-RESPA resonance (exact and simulated).

Two two-scale systems, kT = 1, gamma = 1:

1. a stiff and a soft harmonic part, U = (omega_f^2 + omega_s^2) q^2 / 2, omega_f = 10,
   omega_s = 1 (``split(Harmonic(10), Harmonic(1))``): the exact configurational bias of
   <q^2> of each O placement against the outer step h (sdekit.linear with the groups'
   Hessians), checked by cpu ensembles at a few steps;
2. a double well coupled to a stiff harmonic coordinate, U = (x^2 - 1)^2 + kappa (y - x)^2 / 2,
   kappa = 100, whose exact x-marginal is the double well's: the simulated bias of <x^2>
   against h (independent paths, 4.5-standard-error bars).

O placements, each with 4 inner steps (k = 4), the fast group 0 inner, the slow group 1 outer:

* inner:  ``B1 (B0 A O A B0)^4 B1``      (O in every inner step)
* middle: ``B1 (B0 A B0)^2 O (B0 A B0)^2 B1``   (one O in the middle of the outer step)
* outer:  ``O B1 (B0 A B0)^4 B1 O``        (O around the outer step: OBABO-like)
* both:   ``O B1 (B0 A O A B0)^4 B1 O``    (O in the inner loop and around the outer step)

The resonance: with no friction the r-RESPA chain is symplectic, and its spectral radius
exceeds one in bands just below multiples of half the fast period, h = pi / omega_f
(Tuckerman, Berne & Martyna, J. Chem. Phys. 97, 1992; Ma, Izaguirre & Skeel, SIAM J. Sci.
Comput. 24, 2003; Morrone, Markland, Ceriotti & Berne, J. Chem. Phys. 134, 2011 for
Langevin damping of it). It is located here exactly by the linear chain's spectral radius
and confirmed by simulation: at gamma = 1e-3, inside the band, paths diverge; just outside
it they do not.

Writes analysis/figures/mts_study.png and a line in analysis/RESULTS.md.

    python analysis/mts_study.py [--quick]
"""
import time

import matplotlib.pyplot as plt
import numpy as np

import sdekit
from sdekit import linear
from sdekit.systems import DoubleWell, Harmonic, custom, split

from _results import figure, parser, record

FAST, SLOW, KAPPA = 10.0, 1.0, 100.0
PLACEMENTS = {"inner": "B1 (B0 A O A B0)^4 B1", "middle": "B1 (B0 A B0)^2 O (B0 A B0)^2 B1",
              "outer": "O B1 (B0 A B0)^4 B1 O", "both": "O B1 (B0 A O A B0)^4 B1 O"}
COLORS = ("C0", "C1", "C2", "C4")
HALF = np.pi / FAST   # half the fast period


def harmonic_bias(word, h):
    """Exact relative bias of <q^2> of the chain, or NaN where it is unstable."""
    try:
        C = linear.stationary_covariance(word, [FAST ** 2, SLOW ** 2], h)
    except ValueError:
        return np.nan
    return C[0, 0] * (FAST ** 2 + SLOW ** 2) - 1.0


def frictionless_radius(word, h):
    return linear.spectral_radius(linear.one_step(word, [FAST ** 2, SLOW ** 2], h, gamma=0.0)[0])


def coupled():
    """The double well in x coupled to y by the stiff spring kappa (y - x)^2 / 2, as two force groups."""
    def spring_gradient(q, out):
        f = KAPPA * (q[1] - q[0])
        out[0] = -f
        out[1] = f

    def spring_energy(q):
        d = q[1] - q[0]
        return 0.5 * KAPPA * d * d

    def well_gradient(q, out):
        out[0] = 4.0 * q[0] * (q[0] * q[0] - 1.0)
        out[1] = 0.0

    def well_energy(q):
        x = q[0] * q[0] - 1.0
        return x * x

    spring = custom(spring_gradient, 2, potential=spring_energy, name="spring(kappa=100)")
    well = custom(well_gradient, 2, potential=well_energy, name="well(x)")
    return split(spring, well)


def simulated_bias(word, system, h, n_paths, seed, backend, exact, duration=40.0):
    """<q_0^2> at the end of a run from exact-ish starts, its standard error and the divergences."""
    n = int(round(duration / h))
    e = sdekit.ensemble(word, system, h=h, n_steps=n, n_paths=n_paths, seed=seed, backend=backend,
                        record_every=n, on_divergence="mask", q0=[1.0] * system.dim, progress=False)
    return e.mean["q2"][-1, 0] / exact - 1.0, e.stderr("q2")[-1, 0] / exact, e.diverged.size


def diverged(word, system, h, args, n_paths=200, n_steps=4000):
    """How many of n_paths paths diverge within n_steps at gamma = 1e-3 (all of them: the ensemble
    has nothing left to average, which sdekit reports as a DivergenceError)."""
    try:
        e = sdekit.ensemble(word, system, h=h, n_steps=n_steps, n_paths=n_paths, gamma=1e-3, seed=args.seed,
                            backend=args.backend, on_divergence="mask", q0=[0.1], max_abs=1e3, progress=False)
    except sdekit.DivergenceError:
        return n_paths
    return e.diverged.size


def main():
    args = parser(__doc__.splitlines()[0]).parse_args()
    t0 = time.time()
    n_paths = 2000 if args.quick else 40000
    hs = np.linspace(0.02, 1.6, 80 if args.quick else 400) * HALF
    fig, ax = plt.subplots(1, 3, figsize=(16, 4.6))

    # 1. exact bias of <q^2> on the two harmonic parts, and simulations at a few steps
    harmonic = split(Harmonic(FAST), Harmonic(SLOW))
    exact_q2 = 1.0 / (FAST ** 2 + SLOW ** 2)
    checks, worst_z, unstable = [], 0.0, {}
    for (name, word), color in zip(PLACEMENTS.items(), COLORS):
        bias = np.array([harmonic_bias(word, h) for h in hs])
        unstable[name] = hs[np.isnan(bias)] / HALF
        ax[0].plot(hs / HALF, bias, color=color, label=f"{name}: {word}")
        for h in (0.3 * HALF, 0.8 * HALF):
            b, se, lost = simulated_bias(word, harmonic, h, n_paths, args.seed, args.backend, exact_q2)
            z = abs(b - harmonic_bias(word, h)) / se
            worst_z = max(worst_z, z)
            ax[0].errorbar([h / HALF], [b], yerr=[4.5 * se], fmt="o", color=color, ms=4, capsize=3)
            checks.append(f"{name} h={h / HALF:.1f}(T_f/2): exact {harmonic_bias(word, h):+.4f}, "
                          f"simulated {b:+.4f} +- {se:.4f}")
    ax[0].axvline(1.0, color="0.7", ls=":")
    ax[0].set_yscale("symlog", linthresh=1e-3)
    ax[0].set(xlabel="outer step h / (T_fast / 2)", ylabel="<q^2>_h / <q^2> - 1 (lines: exact chain)",
              title="stiff + soft harmonic: where O goes")
    ax[0].legend(fontsize=7)

    # 2. the resonance: spectral radius without friction, confirmed by simulated divergences
    undamped = "B1 (B0 A B0)^4 B1"
    radius = np.array([frictionless_radius(undamped, h) for h in hs])
    fine = np.linspace(0.9, 1.0, 2001) * HALF   # the first band lies just below h = T_f / 2
    first = fine[np.array([frictionless_radius(undamped, h) for h in fine]) > 1 + 1e-9] / HALF
    lo, hi = (first.min(), first.max()) if first.size else (np.nan, np.nan)
    ax[1].plot(hs / HALF, radius, color="k", label=f"{undamped}, gamma = 0 (exact)")
    ax[1].axvspan(lo, hi, color="C3", alpha=0.25, label=f"first band [{lo:.4f}, {hi:.4f}]")
    confirm = []
    for h in ((lo + hi) / 2 * HALF, 0.9 * HALF) if first.size else ():
        lost = diverged(PLACEMENTS["inner"], harmonic, h, args)
        confirm.append((h / HALF, lost))
        ax[1].plot([h / HALF], [1.0], "x" if lost else "o", color="C3", ms=8)
    ax[1].plot([], [], "x", color="C3", label="simulated, gamma = 1e-3: diverged")
    ax[1].plot([], [], "o", color="C3", label="simulated, gamma = 1e-3: stable")
    ax[1].set(xlabel="outer step h / (T_fast / 2)", ylabel="spectral radius of the one-step map",
              title="the r-RESPA resonance (gamma = 0)")
    ax[1].legend(fontsize=8)

    # 3. double well coupled to a stiff coordinate: simulated bias of <x^2>
    system = coupled()
    dw_exact = DoubleWell().exact("q2", 1.0)[0]
    half_c = np.pi / np.sqrt(2 * KAPPA)   # the spring's half period (reduced mass 1/2)
    steps = np.array([0.3, 0.6, 0.9, 1.2]) * half_c
    rows = {}
    for (name, word), color in zip(PLACEMENTS.items(), COLORS):
        out = [simulated_bias(word, system, h, n_paths, args.seed, args.backend, dw_exact) for h in steps]
        b, se, lost = map(np.array, zip(*out))
        rows[name] = (b, se, lost)
        ax[2].errorbar(steps / half_c, b, yerr=4.5 * se, fmt="o-", color=color, capsize=3, label=name)
    ax[2].axhline(0.0, color="0.5", lw=0.8)
    ax[2].set(xlabel="outer step h / (T_spring / 2),  T_spring / 2 = pi / sqrt(2 kappa)",
              ylabel="<x^2>_h / <x^2> - 1 (simulated)",
              title="double well + stiff spring (kappa = 100)")
    ax[2].legend(fontsize=8)
    fig.suptitle(f"Multiple time stepping, 4 inner steps, kT = 1, gamma = 1 (points: {n_paths} paths, "
                 f"4.5 standard errors)")
    fig.tight_layout()
    fig.savefig(figure("mts_study.png"), dpi=110)

    elapsed = time.time() - t0
    dw = "; ".join(f"{name}: " + ", ".join(f"{x:+.3f}+-{s:.3f}" for x, s in zip(b, se))
                   for name, (b, se, _) in rows.items())
    at = 0.8 * HALF
    best_h = min(PLACEMENTS, key=lambda n: abs(harmonic_bias(PLACEMENTS[n], at)) if np.isfinite(
        harmonic_bias(PLACEMENTS[n], at)) else np.inf)
    best_dw = min(rows, key=lambda n: abs(rows[n][0][-1]))
    stability = "; ".join(f"{name}: " + (f"unstable at h/(T_f/2) in [{u.min():.3f}, {u.max():.3f}] of the grid"
                                          if u.size else "stable on the whole grid")
                          for name, u in unstable.items())
    text = (f"two-scale systems, 4 inner steps, outer step h in units of T_fast/2 = pi/10. Stiff + soft harmonic, "
            f"exact chain vs simulation: {'; '.join(checks)} (worst {worst_z:.1f} s.e.); exact stability at gamma = 1, h/(T_f/2) in [0.02, 1.6]: {stability}. Resonance (gamma = 0, exact "
            f"spectral radius > 1): h/(T_f/2) in [{lo:.3f}, {hi:.3f}]; simulated at gamma = 1e-3, 200 paths, "
            f"4000 steps: " + ", ".join(f"h = {h:.3f}: {k} diverged" for h, k in confirm)
            + f". Double well + spring, bias of <x^2> at h/(T_spring/2) = "
            f"{', '.join(f'{h / half_c:.2f}' for h in steps)}: {dw}. Stable through the band at gamma = 1 (an O in the inner loop damps the fast motion between "
            f"slow kicks): {', '.join(n for n, u in unstable.items() if not u.size) or 'none'}; unstable there "
            f"(O only in the outer step): {', '.join(n for n, u in unstable.items() if u.size) or 'none'}. "
            f"Smallest exact harmonic bias at "
            f"h = 0.8 T_f/2: {best_h}; smallest double-well bias at the largest step: {best_dw} "
            f"(figure mts_study.png; {elapsed:.0f} s).")
    record("mts_study.py", text, args.quick)


if __name__ == "__main__":
    main()
