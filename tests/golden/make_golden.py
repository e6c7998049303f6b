#!/usr/bin/env python
"""Golden numbers: the cases, and the script that writes their stored hashes.

Every case is a small function returning ``{name: value}``: numpy arrays (stored as the
sha256 of their C-contiguous bytes, with dtype and shape, plus a few summary floats for
debugging) or small JSON-able values (ints, strings, RNG-state dicts: stored exactly).
``tests/test_golden.py`` imports this module, recomputes every case with the sdekit it
imports and compares bit for bit.

Regenerate (from the repository root, with the code whose numbers are to be pinned)::

    python tests/golden/make_golden.py                 # every group
    python tests/golden/make_golden.py --only kernels  # one group (others kept as stored)
    python tests/golden/make_golden.py --list          # the case ids

To pin another checkout's numbers, put it first on the path, e.g.
``PYTHONPATH=/path/to/other/checkout python tests/golden/make_golden.py`` (the script prints the
sdekit it imported). Groups: see ``GROUPS``. The ``kernels`` group stores the generated
kernel texts under ``tests/golden/kernels/`` (compared exactly by a separate test); the
other groups are numbers, which a refactor must never change.
"""
import argparse
import hashlib
import json
import math
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden.json")
KERNEL_DIR = os.path.join(HERE, "kernels")
FORMAT = 1

GROUPS = ("numpy", "cpu", "float32", "cuda", "constraints", "time", "mask", "torch", "linear", "diffusion",
          "kernels", "letters")

CASES = {}
"""case id -> (group, function)."""


def case(group, name, *args, **kwargs):
    """Register ``function(*args, **kwargs)`` as case ``name`` of ``group`` (used as a decorator)."""
    assert group in GROUPS, group

    def register(f):
        assert name not in CASES, name
        CASES[name] = (group, lambda: f(*args, **kwargs))
        return f

    return register


# ----------------------------------------------------------------------------- encoding

def _array(x):
    """A numpy array of ``x`` (torch tensors converted), C-contiguous."""
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x)


def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def summary(a):
    """A few exact floats (repr round-trips) to show when a hash differs."""
    if a.size == 0:
        return {}
    if a.dtype.kind not in "fiub":
        return {}
    f = a.astype(np.float64).ravel()
    finite = f[np.isfinite(f)]
    out = {"first": repr(float(f[0])), "last": repr(float(f[-1])), "n_nonfinite": int(f.size - finite.size)}
    if finite.size:
        out["mean"] = repr(float(finite.mean()))
        out["absmax"] = repr(float(np.abs(finite).max()))
    return out


def encode(values):
    """``{name: value}`` -> ``{"arrays": {...}, "values": {...}}`` as stored in golden.json."""
    arrays, plain = {}, {}
    for name, v in values.items():
        if isinstance(v, np.ndarray) or hasattr(v, "detach"):
            a = _array(v)
            arrays[name] = {"sha256": digest(a), "dtype": a.dtype.str, "shape": list(a.shape), "summary": summary(a)}
        else:
            plain[name] = json.loads(json.dumps(v, sort_keys=True))  # exact JSON value (ints, strings, None)
    return {"arrays": arrays, "values": plain}


def compute(case_id):
    """The stored form (``encode``) of one case, computed with the sdekit imported now."""
    group, f = CASES[case_id]
    return dict(encode(f()), group=group)


# ----------------------------------------------------------------------------- result extraction

def _idx(a):
    """An index set or a count as int64 (what is pinned is the set, not numpy's index dtype)."""
    return np.asarray(a).astype(np.int64)


def state_values(s, prefix="state."):
    """What a run's ``.state`` needs to resume: arrays, step, RNG position."""
    out = {}
    for k in ("q", "p", "xi", "force", "noise"):
        v = getattr(s, k)
        out[prefix + k] = None if v is None else np.asarray(v)
    out[prefix + "step"] = int(s.step)
    out[prefix + "rng"] = s.rng
    out[prefix + "backend"] = s.backend
    return out


def ensemble_values(e):
    out = {"t": e.t, "q": e.q, "p": None if e.p is None else e.p, "xi": e.xi, "n_alive": _idx(e.n_alive),
           "diverged": _idx(e.diverged), "mean_keys": sorted(e.mean)}
    for k in sorted(e.mean):
        out[f"mean.{k}"] = e.mean[k]
        out[f"meansq.{k}"] = e.meansq[k]
    out.update(state_values(e.state))
    return out


def trajectory_values(tr):
    out = {"t": tr.t, "q": tr.q, "p": tr.p, "p_O": tr.p_O, "xi": tr.xi}
    if tr.accepted is not None:   # Metropolis words (the "letters" group, added with issue 15)
        out["accepted"] = tr.accepted
    out.update(state_values(tr.state))
    return out


# ----------------------------------------------------------------------------- systems and words

FRACTION_WORD = [("A", 1.3), ("B", 0.5), ("O", 0.25), ("A", -0.3), ("O", 0.75), ("B", 0.5)]
"""An explicit-fraction word with a negative fraction (that of tests/test_kernels.py)."""


CATALOGUE_WORDS = ("BAOAB", "ABOBA", "OBABO", "OABAO", "BABO", "ABO", "BADODAB", "EM", "LM")
"""sdekit.schemes.CATALOGUE at commit 87292ca, written out: the pinned set does not follow the catalogue."""


def words():
    """(id, scheme) of every catalogue word and the explicit-fraction word."""
    return [(w, w) for w in CATALOGUE_WORDS] + [("frac", FRACTION_WORD)]


def overdamped(scheme):
    from sdekit.schemes import Scheme

    return Scheme(scheme).overdamped is not None


def start(n, d, seed, scheme, spread=1.5):
    """Reproducible spread-out initial q0 (n, d) and p0 (None for overdamped schemes)."""
    rng = np.random.default_rng(seed)
    q0 = rng.uniform(-spread, spread, (n, d))
    p0 = None if overdamped(scheme) else rng.normal(size=(n, d))
    return q0, p0


def sphere_gradient(q, out):  # U = -2 q_z + q_x^2 / 2 on the unit sphere
    out[0] = q[0]
    out[1] = 0.0
    out[2] = -2.0


def stiefel_gradient(q, out):  # U = sum_i c_i q_i^2 / 2, anisotropic (so it acts on Stiefel(3, 2))
    for i in range(q.shape[0]):
        out[i] = 0.3 * (i + 1) * q[i]


def annealed_kT(t):
    return 1.0 / (1.0 + t)


def varying_gamma(t):
    return 1.0 + 0.5 * math.sin(t)


def driven_gradient(q, t, out):  # the text of tests/test_time_dependent.py's DRIVEN: the same kernels
    out[0] = 1.3 * q[0] - 0.8 * math.cos(1.7 * t)


def systems():
    """The systems of the cases, built once. Where it costs nothing in coverage, they are
    those of the other test files (same gradient code, constants and name: the same
    generated kernels, so a full test run compiles them once and numba's disk cache
    serves the rest): Harmonic(1.0) as in tests/test_kernels.py's catalogue tests,
    Harmonic(dim=10) BADODAB, DoubleWell() float32 BAOAB, the driven oscillator of
    tests/test_time_dependent.py."""
    global _SYSTEMS
    if _SYSTEMS is None:
        from sdekit.systems import DoubleWell, Harmonic, custom

        _SYSTEMS = {"ho1": Harmonic(1.0), "ho10": Harmonic(dim=10), "dw1": DoubleWell(1), "dw8": DoubleWell(8),
                    "sphere": custom(sphere_gradient, dim=3, name="sphere-golden"),
                    "stiefel": custom(stiefel_gradient, dim=6, name="stiefel-golden"),
                    "driven": custom(driven_gradient, 1, name="driven", time_dependent=True)}
    return _SYSTEMS


_SYSTEMS = None

# The shared settings: CHUNK = 256 paths (cpu), so 600 paths are three chunks, 300 two.
N_PATHS, N_STEPS, RECORD = 600, 60, 20
KW = dict(gamma=1.0, kT=1.0, xi0=0.1, eps=0.5)
SIM_STEPS, SIM_RECORD = 200, 10


def step_size(scheme):
    """h of the shared runs: stable on the double well from |q| <= 1.5 (explicit overdamped
    steps need h < 2 / U''(1) = 0.25 there; the negative fraction is less stable)."""
    if overdamped(scheme):
        return 0.05
    return 0.25 if isinstance(scheme, str) else 0.15


def run_ensemble(scheme, system, backend, dtype="float64", n_paths=N_PATHS, n_steps=N_STEPS, seed=7, **kw):
    import sdekit

    d = system.dim
    q0, p0 = start(n_paths, d, seed=100 + d, scheme=scheme)
    args = dict(KW, h=step_size(scheme), q0=q0, p0=p0, record_every=RECORD)
    args.update(kw)
    e = sdekit.ensemble(scheme, system, n_steps=n_steps, n_paths=n_paths, seed=seed, backend=backend,
                        dtype=dtype, **args)
    return ensemble_values(e)


def run_simulate(scheme, system, backend, dtype="float64", seed=8, **kw):
    import sdekit

    d = system.dim
    q0 = np.linspace(-0.7, 0.9, d)
    p0 = None if overdamped(scheme) else np.linspace(0.4, -0.3, d)
    args = dict(KW, h=step_size(scheme), q0=q0, p0=p0, record_every=SIM_RECORD)
    args.update(kw)
    tr = sdekit.simulate(scheme, system, n_steps=SIM_STEPS, seed=seed, backend=backend, dtype=dtype, **args)
    return trajectory_values(tr)


def runs(**named):
    """Several runs in one case: ``{run name: thunk}`` -> ``{"run.name": value}``. Runs that share a
    compiled kernel (or numba-compiled constraint functions) belong to one case, so that
    pytest-xdist, which deals consecutive tests out to different workers, compiles each once."""
    out = {}
    for run, thunk in named.items():
        out.update({f"{run}.{k}": v for k, v in thunk().items()})
    return out


# ----------------------------------------------------------------------------- numpy and cpu, every word

ENSEMBLE_ON_CPU = ("BAOAB", "BADODAB")
"""Words whose cpu case also runs the ensemble driver (compiling a kernel costs 1-2 s for the
trajectory driver, 3-5 s for the parallel ensemble driver; the other ensemble-driver cases are
the mask, float32, sphere and time-dependent ones, the last two in array form)."""


def _register_words():
    """numpy: every word, ensemble and simulate, d = 1 and 8 (double well) and d = 1 harmonic.
    cpu, register form (d = 1 <= UNROLL): every word through the trajectory driver (the same
    generated ``step`` as the ensemble driver's), BAOAB and BADODAB through both; array form
    (d = 10): BADODAB's trajectory."""
    S = systems
    for wid, scheme in words():
        case("numpy", f"numpy-ensemble-dw1-{wid}")(lambda s=scheme: run_ensemble(s, S()["dw1"], "numpy"))
        case("numpy", f"numpy-simulate-dw1-{wid}")(lambda s=scheme: run_simulate(s, S()["dw1"], "numpy"))
        case("numpy", f"numpy-ensemble-dw8-{wid}")(lambda s=scheme: run_ensemble(s, S()["dw8"], "numpy", n_paths=300))
        case("numpy", f"numpy-ensemble-ho1-{wid}")(lambda s=scheme: run_ensemble(s, S()["ho1"], "numpy"))
        named = {"simulate": lambda s=scheme: run_simulate(s, S()["ho1"], "cpu")}
        if wid in ENSEMBLE_ON_CPU:
            named["ensemble"] = lambda s=scheme: run_ensemble(s, S()["ho1"], "cpu")
        case("cpu", f"cpu-ho1-{wid}")(lambda named=named: runs(**named))
    case("numpy", "numpy-simulate-ho10-BADODAB")(lambda: run_simulate("BADODAB", S()["ho10"], "numpy"))
    case("cpu", "cpu-ho10-BADODAB")(lambda: runs(simulate=lambda: run_simulate("BADODAB", S()["ho10"], "cpu")))
    # float32
    for wid in ("BAOAB", "LM", "BADODAB"):
        case("float32", f"numpy-ensemble-dw1-f32-{wid}")(
            lambda s=wid: run_ensemble(s, S()["dw1"], "numpy", dtype="float32"))
        case("float32", f"numpy-simulate-dw1-f32-{wid}")(
            lambda s=wid: run_simulate(s, S()["dw1"], "numpy", dtype="float32"))
    case("float32", "cpu-dw1-f32-BAOAB")(
        lambda: runs(ensemble=lambda: run_ensemble("BAOAB", S()["dw1"], "cpu", dtype="float32")))


_register_words()


# ----------------------------------------------------------------------------- the letters of issue 15

RESPA_WORD = "B1 (B0 A O A B0)^2 B1"


def split_system():
    from sdekit.systems import DoubleWell, Harmonic, split

    return split(Harmonic(6.0), DoubleWell())


def _register_new_letters():
    """Pinned when they were added (issue 15): GHMC, MALA and an r-RESPA word, numpy and cpu
    (register form; GHMC also in array form, d = 8, by the trajectory driver, which compiles in
    a third of the parallel driver's time), with their acceptance counts."""
    S = systems
    for wid, word, system in (("GHMC", "O{BAB}O", lambda: S()["dw1"]), ("MALA", "MALA", lambda: S()["dw1"]),
                              ("RESPA", RESPA_WORD, split_system)):
        case("letters", f"numpy-ensemble-{wid}")(lambda w=word, sy=system: run_ensemble(w, sy(), "numpy"))
        case("letters", f"cpu-{wid}")(lambda w=word, sy=system: runs(
            simulate=lambda: run_simulate(w, sy(), "cpu"), ensemble=lambda: run_ensemble(w, sy(), "cpu")))
    case("letters", "cpu-simulate-dw8-GHMC")(lambda: run_simulate("O{BAB}O", S()["dw8"], "cpu"))


_register_new_letters()


# ----------------------------------------------------------------------------- divergences (mask)

MASK_H = {"BAOAB": 0.4, "OBABO": 0.35}  # numpy: 41 and 18 of 600 paths escape; cpu BAOAB: 42


def run_mask(scheme, backend):
    """DoubleWell at h = 0.35-0.4 from |q| <= 1.5: some paths really escape (blow up); the run
    carries on without them and reports them in .diverged."""
    out = run_ensemble(scheme, systems()["dw1"], backend, n_paths=600, n_steps=100, h=MASK_H[scheme],
                       record_every=25, on_divergence="mask", seed=3)
    return out


def check_generated(case_id, entry):
    """What the generator insists on before storing a case (not re-checked by the test, which
    compares the hashes): a mask case has real escapes, and not too many."""
    if CASES[case_id][0] == "mask":
        n = entry["arrays"]["diverged"]["shape"][0]
        assert 0 < n < 300, f"{case_id}: want some escapes of the 600 paths, got {n}"


for _b, _w in [("numpy", "BAOAB"), ("numpy", "OBABO"), ("cpu", "BAOAB")]:
    case("mask", f"{_b}-mask-dw1-{_w}", _w, _b)(run_mask)


# ----------------------------------------------------------------------------- constraints

def constrained_start(constraint, d, n, seed):
    rng = np.random.default_rng(seed)
    return constraint.project(rng.normal(size=(n, d))), rng.normal(size=(n, d))


def run_constrained(kind, backend, simulate=False):
    import sdekit
    from sdekit.constraints import Sphere, Stiefel

    if kind == "sphere":
        con, system, scheme = Sphere(1.0), systems()["sphere"], sdekit.Scheme("BAOAB", geodesic_steps=3)
    else:
        con, system, scheme = Stiefel(3, 2), systems()["stiefel"], "OBABO"
    q0, p0 = constrained_start(con, system.dim, 300, seed=5)
    kw = dict(h=0.2, gamma=1.0, kT=0.5, constraint=con, backend=backend, seed=11)
    if simulate:
        tr = sdekit.simulate(scheme, system, n_steps=100, q0=q0[0], p0=p0[0], record_every=10, **kw)
        return trajectory_values(tr)
    e = sdekit.ensemble(scheme, system, n_steps=50, n_paths=300, q0=q0, p0=p0, record_every=25, **kw)
    return ensemble_values(e)


# one case per constraint (the numba-compiled constraint functions are shared by the backends):
# numpy ensemble and simulate; cpu the ensemble driver for the sphere (g-BAOAB, K = 3), the
# trajectory driver for Stiefel(3, 2) (OBABO)
case("constraints", "sphere-gBAOAB")(lambda: runs(
    numpy_ensemble=lambda: run_constrained("sphere", "numpy"),
    numpy_simulate=lambda: run_constrained("sphere", "numpy", simulate=True),
    cpu_ensemble=lambda: run_constrained("sphere", "cpu")))
case("constraints", "stiefel-OBABO")(lambda: runs(
    numpy_ensemble=lambda: run_constrained("stiefel", "numpy"),
    numpy_simulate=lambda: run_constrained("stiefel", "numpy", simulate=True),
    cpu_simulate=lambda: run_constrained("stiefel", "cpu", simulate=True)))


# ----------------------------------------------------------------------------- time dependence

def run_time(what, backend, simulate=False, scheme="BAOAB"):
    if what == "kT":  # kT(t) = 1/(1 + t) and gamma(t) on the driven system
        system, kw = systems()["driven"], dict(kT=annealed_kT, gamma=varying_gamma, t0=0.3)
    elif what == "kT-dw":  # kT(t) alone on a time-independent force
        system, kw = systems()["dw1"], dict(kT=annealed_kT)
    else:  # a time-dependent force F(q, t), constant parameters
        system, kw = systems()["driven"], {}
    if simulate:
        return run_simulate(scheme, system, backend, **kw)
    return run_ensemble(scheme, system, backend, n_paths=300, **kw)


case("time", "numpy-ensemble-force_t", "force", "numpy")(run_time)
case("time", "numpy-ensemble-kT_t", "kT", "numpy")(run_time)
case("time", "numpy-simulate-kT_t", "kT", "numpy", simulate=True)(run_time)
case("time", "numpy-ensemble-kT_t-EM", "kT", "numpy", scheme="EM")(run_time)
case("time", "numpy-ensemble-kT_t-doublewell", "kT-dw", "numpy")(run_time)
case("time", "numpy-ensemble-kT_t-BADODAB", "kT", "numpy", scheme="BADODAB")(run_time)
# cpu: one time-dependent kernel (the driven system's BAOAB), both drivers
case("time", "cpu-driven-BAOAB")(lambda: runs(ensemble_force_t=lambda: run_time("force", "cpu"),
                                               ensemble_kT_t=lambda: run_time("kT", "cpu"),
                                               simulate_kT_t=lambda: run_time("kT", "cpu", simulate=True)))


# ----------------------------------------------------------------------------- cuda (numba-cuda's simulator)

CUDA_RUNS = [("BAOAB", "ensemble"), ("LM", "ensemble"), ("BADODAB", "simulate")]
CUDA_KW = dict(n_steps=8, n_paths=130, record_every=4)  # 130 paths: two blocks of 128


def cuda_values():
    """The cuda runs, in this process (NUMBA_ENABLE_CUDASIM=1 must have been set before numba.cuda
    was imported: :func:`run_cuda` starts a child process). The simulator runs every thread in
    Python: few paths, few steps."""
    import sdekit

    out = {}
    system = systems()["dw1"]
    n = CUDA_KW["n_paths"]
    for word, kind in CUDA_RUNS:
        q0, p0 = start(n, 1, seed=21, scheme=word)
        kw = dict(KW, h=step_size(word), backend="cuda", seed=12, record_every=CUDA_KW["record_every"],
                  n_steps=CUDA_KW["n_steps"])
        if kind == "ensemble":
            vals = ensemble_values(sdekit.ensemble(word, system, n_paths=n, q0=q0, p0=p0, **kw))
        else:
            vals = trajectory_values(sdekit.simulate(word, system, q0=q0[0], p0=None if p0 is None else p0[0], **kw))
        out.update({f"{word}.{kind}.{k}": v for k, v in vals.items()})
    return out


def _to_wire(values):
    out = {}
    for k, v in values.items():
        if isinstance(v, np.ndarray):
            a = np.ascontiguousarray(v)
            out[k] = {"array": a.tobytes().hex(), "dtype": a.dtype.str, "shape": list(a.shape)}
        else:
            out[k] = {"value": v}
    return out


def _from_wire(wire):
    out = {}
    for k, v in wire.items():
        if "array" in v:
            out[k] = np.frombuffer(bytes.fromhex(v["array"]), dtype=np.dtype(v["dtype"])).reshape(v["shape"])
        else:
            out[k] = v["value"]
    return out


@case("cuda", "cuda-simulator")
def run_cuda():
    """Runs :func:`cuda_values` in a child process under NUMBA_ENABLE_CUDASIM=1, with the same
    sdekit as this process (its folder first on PYTHONPATH)."""
    import sdekit

    root = os.path.dirname(os.path.dirname(os.path.abspath(sdekit.__file__)))
    path = [root] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=os.pathsep.join(path))
    res = subprocess.run([sys.executable, os.path.abspath(__file__), "--child-cuda"], env=env, cwd=root,
                         capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise RuntimeError(f"the cuda-simulator child failed:\n{res.stderr[-4000:]}")
    wire = json.loads(res.stdout.strip().splitlines()[-1])
    assert wire.pop("__sdekit__") == os.path.abspath(sdekit.__file__), "the child imported another sdekit"
    return _from_wire(wire)


# ----------------------------------------------------------------------------- torch

def _tiny_model(dtype):
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3), torch.nn.Tanh(),
                               torch.nn.Linear(3, 1)).to(dtype)


def _data(dtype):
    import torch

    g = torch.Generator().manual_seed(1)
    X = torch.randn(40, 2, generator=g, dtype=torch.float64)
    y = (X[:, 0] * X[:, 1] > 0).to(torch.float64)
    return X.to(dtype), y.to(dtype)


def torch_values(make, n_steps=20, dtype="float64"):
    """20 full-batch steps of the optimizer ``make(model)`` on a tiny MLP; every tensor of its
    state_dict and the parameters."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dt = getattr(torch, dtype)
        model = _tiny_model(dt)
        X, y = _data(dt)
        opt = make(model)
        losses = []

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(X).squeeze(-1), y)
            loss.backward()
            return loss

        for _ in range(n_steps):
            losses.append(opt.step(closure).detach().clone())
        out = {f"param.{name}": p.detach().clone() for name, p in model.named_parameters()}
        out["losses"] = torch.stack(losses)
        sd = opt.state_dict()
        for idx in sorted(sd["state"]):
            for k in sorted(sd["state"][idx]):
                v = sd["state"][idx][k]
                out[f"state.{idx}.{k}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        for k in sorted(sd["sdekit"]):
            out[f"sdekit.{k}"] = sd["sdekit"][k]
        return {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
    finally:
        torch.set_num_threads(threads)


def _weights_biases(model):
    w = [p for p in model.parameters() if p.dim() >= 2]
    b = [p for p in model.parameters() if p.dim() < 2]
    return w, b


def _torch_makers():
    def sde(model):
        import sdekit.torch as st

        return st.SDEOptimizer(model, lr=0.1, gamma=1.0, kT=1e-3, seed=0)

    def sde_badodab(model):
        import sdekit.torch as st

        return st.SDEOptimizer(model, scheme="BADODAB", lr=0.1, gamma=0.5, kT=1e-3, eps=0.5, xi0=0.2, seed=0)

    def adlala(model):
        import sdekit.torch as st

        return st.AdLaLa(model, lr=0.25, seed=0)

    def lol(model):
        import sdekit.torch as st

        return st.LOL(model, lr=0.25, seed=0)

    def mll(model):
        import sdekit.torch as st

        return st.MultiLayerLangevin(model, lr=0.1, gamma=[1.0, 0.5, 2.0], kT=[1e-4, 1e-3, 1e-2], seed=0)

    def sgld(model):
        import sdekit.torch as st

        return st.SGLD(model.parameters(), lr=0.05, sigma=0.05, seed=0)

    def sgld_lm(model):
        import sdekit.torch as st

        return st.SDEOptimizer(model, scheme="LM", lr=0.05, kT=1e-3, seed=0)

    def csgld(model):
        import sdekit.torch as st
        from sdekit.constraints import Circle

        return st.ConstrainedSGLD(model, Circle(0.8), lr=0.05, sigma=0.05, seed=0)

    def constrained(model):  # Circle on the weights, Sphere on the first bias, the rest free
        import sdekit.torch as st
        from sdekit.constraints import Circle, Sphere

        w, b = _weights_biases(model)
        return st.SDEOptimizer([{"params": w, "constraint": Circle(1.0)}, {"params": b[:1], "constraint": Sphere(1.0)},
                                {"params": b[1:]}], lr=0.2, gamma=1.0, kT=1e-3, seed=0)

    def stiefel(model):
        import sdekit.torch as st
        from sdekit.constraints import Stiefel

        first = list(model[0].parameters())
        rest = [p for p in model.parameters() if all(p is not q for q in first)]
        return st.SDEOptimizer([{"params": [first[0]], "constraint": Stiefel(6, 2)}, {"params": first[1:] + rest}],
                               lr=0.2, gamma=1.0, kT=1e-3, seed=0)

    def multirate(model):  # the body slow (rate 2, and 4 for the middle layer), the head fast
        import sdekit.torch as st

        # the rule sdekit had when this was pinned, named "impulse" since issue 17 (same numbers)
        layers = [list(m.parameters()) for m in model if list(m.parameters())]
        return st.SDEOptimizer([{"params": layers[0], "rate": 2, "multirate": "impulse"},
                                {"params": layers[1], "rate": 4, "multirate": "impulse"},
                                {"params": layers[2]}], lr=0.1, gamma=1.0, kT=1e-3, seed=0)

    def scheduled(model):
        import sdekit.torch as st

        return st.SDEOptimizer(model, lr=0.1, gamma=varying_gamma, kT=annealed_kT, seed=0)

    return {"SDEOptimizer-BAOAB": (sde, "float64"), "SDEOptimizer-BAOAB-f32": (sde, "float32"),
            "SDEOptimizer-BADODAB": (sde_badodab, "float64"), "AdLaLa": (adlala, "float64"), "LOL": (lol, "float64"),
            "MultiLayerLangevin": (mll, "float64"), "SGLD": (sgld, "float64"), "SDEOptimizer-LM": (sgld_lm, "float64"),
            "ConstrainedSGLD": (csgld, "float64"), "constrained-circle-sphere": (constrained, "float64"),
            "constrained-stiefel": (stiefel, "float64"), "multirate": (multirate, "float64"),
            "scheduled-gamma-kT": (scheduled, "float64")}


for _name, (_make, _dt) in _torch_makers().items():
    case("torch", f"torch-{_name}", _make, dtype=_dt)(torch_values)


# ----------------------------------------------------------------------------- linear (exact Lyapunov)

LINEAR_WORDS = ["BAOAB", "ABOBA", "OBABO", "OABAO", "BABO", "ABO", "EM", "LM", FRACTION_WORD]
HESSIAN = [[2.0, 0.5], [0.5, 1.0]]


def _wid(w):
    return w if isinstance(w, str) else "frac"


def linear_values():
    from sdekit import linear

    out = {}
    for w in LINEAR_WORDS:
        out[f"{_wid(w)}.stationary"] = linear.stationary_covariance(w, HESSIAN, h=0.4, gamma=1.0, kT=1.0)
        if not overdamped(w):
            out[f"{_wid(w)}.stationary-partitioned"] = linear.stationary_covariance(
                w, HESSIAN, h=0.3, gamma=[0.5, 2.0], kT=[1.0, 0.5], mass=[1.0, 2.0])
        m = linear.transient_moments(w, HESSIAN, h=0.3, n_steps=17, mean0=[1.0, -0.5] if overdamped(w) else
                                     [1.0, -0.5, 0.2, 0.1], cov0=0.1)
        out[f"{_wid(w)}.transient.mean"], out[f"{_wid(w)}.transient.cov"] = m.mean, m.cov
    out["BAOAB.one_step.T"], out["BAOAB.one_step.Q"] = linear.one_step("BAOAB", HESSIAN, h=0.4)
    return out


case("linear", "linear-lyapunov")(linear_values)


# ----------------------------------------------------------------------------- diffusion (exact Gaussian harness)

DIFF_MU = np.array([0.5, -1.0])
DIFF_SIGMA = np.array([[2.0, 0.6], [0.6, 0.5]])


def diffusion_values():
    from sdekit import diffusion as D

    VP, CLD = D.VPSDE(), D.CLD()
    samplers = {"EM-VP": D.EulerMaruyama(VP), "OBO-VP": D.Splitting(VP, "OBO"),
                "BOB-VP-drift": D.Splitting(VP, "BOB", split="drift"), "SSCS-CLD": D.SSCS(CLD),
                "ODE-heun-VP": D.ProbabilityFlow(VP, "heun"), "PC-VP": D.PredictorCorrector(VP),
                "EM-CLD": D.EulerMaruyama(CLD)}
    out = {}
    for name, s in samplers.items():
        m = D.exact_output_moments(s, DIFF_MU, DIFF_SIGMA, 32, start="prior")
        out[f"{name}.mean"], out[f"{name}.cov"] = m.mean, m.cov
    ex = D.exact_output_moments(samplers["OBO-VP"], DIFF_MU, DIFF_SIGMA, 16, start="exact")
    out["OBO-VP.exact-start.mean"], out["OBO-VP.exact-start.cov"] = ex.mean, ex.cov
    tg = D.target_moments(CLD, DIFF_MU, DIFF_SIGMA)
    out["target-CLD.mean"], out["target-CLD.cov"] = tg.mean, tg.cov
    for name in ("OBO-VP", "SSCS-CLD"):  # sampling (numpy Generator)
        s = samplers[name]
        res = D.sample(s, D.GaussianScore(s.sde, DIFF_MU, DIFF_SIGMA), 200, 16, 2, seed=3)
        out[f"{name}.sample.u"] = res.u
        out[f"{name}.sample.evaluations"] = int(res.evaluations)
    return out


case("diffusion", "diffusion-exact-moments")(diffusion_values)


# The order of the tests: those that compile (or start the simulator) first, so that the
# workers of pytest-xdist share them out from the start and the cheap ones fill in at the end.
RUN_ORDER = ("cuda", "constraints", "cpu", "letters", "time", "float32", "mask", "torch", "numpy", "linear", "diffusion")
CASES = dict(sorted(CASES.items(), key=lambda item: RUN_ORDER.index(item[1][0])))


# ----------------------------------------------------------------------------- kernel texts

def kernel_sources():
    """name -> (scheme, system, keyword arguments of sdekit.kernels.source)."""
    import sdekit
    from sdekit.constraints import Circle, Sphere, Stiefel
    from sdekit.systems import custom

    s = systems()
    circle = custom(circle_gradient, dim=4, name="circle-golden")
    return {
        "cpu-d1-BAOAB": ("BAOAB", s["dw1"], {}),
        "cpu-d1-BADODAB": ("BADODAB", s["dw1"], {}),
        "cpu-d1-LM-float32": ("LM", s["dw1"], dict(dtype="float32")),
        "cpu-d1-EM": ("EM", s["dw1"], {}),
        "cpu-d1-frac": (FRACTION_WORD, s["dw1"], {}),
        "cpu-d8-BADODAB": ("BADODAB", s["dw8"], {}),
        "cpu-d8-LM": ("LM", s["dw8"], {}),
        "cuda-d1-BAOAB": ("BAOAB", s["dw1"], dict(backend="cuda")),
        "cuda-d1-LM": ("LM", s["dw1"], dict(backend="cuda")),
        "cuda-sphere-gBAOAB": (sdekit.Scheme("BAOAB", geodesic_steps=3), s["sphere"],
                               dict(backend="cuda", constraint=Sphere(1.0))),
        "cuda-circle-OBABO": ("OBABO", circle, dict(backend="cuda", constraint=Circle(1.0))),
        "cpu-sphere-gBAOAB": (sdekit.Scheme("BAOAB", geodesic_steps=3), s["sphere"], dict(constraint=Sphere(1.0))),
        "cpu-stiefel-OBABO": ("OBABO", s["stiefel"], dict(constraint=Stiefel(3, 2))),
        "cpu-td-kT-BAOAB": ("BAOAB", s["dw1"], dict(time_dependent=True)),
        "cpu-td-force-BAOAB": ("BAOAB", s["driven"], {}),
        "cpu-td-EM": ("EM", s["dw1"], dict(time_dependent=True)),
        "cpu-d1-GHMC": ("O{BAB}O", s["dw1"], {}),
        "cpu-d8-GHMC": ("O{BAB}O", s["dw8"], {}),
        "cpu-d1-MALA": ("MALA", s["dw1"], {}),
        "cpu-RESPA": (RESPA_WORD, split_system(), {}),
        "cuda-d1-GHMC": ("O{BAB}O", s["dw1"], dict(backend="cuda")),
    }


def circle_gradient(q, out):  # U = -w_1 on (w_1, w_2, s_1, s_2)
    out[0] = -1.0
    out[1] = 0.0
    out[2] = 0.0
    out[3] = 0.0


def kernel_text(name):
    import sdekit.kernels

    scheme, system, kw = kernel_sources()[name]
    return sdekit.kernels.source(scheme, system, **kw)


def kernel_file(name):
    return os.path.join(KERNEL_DIR, f"{name}.py.txt")


KERNEL_NAMES = ("cpu-d1-BAOAB", "cpu-d1-BADODAB", "cpu-d1-LM-float32", "cpu-d1-EM", "cpu-d1-frac", "cpu-d8-BADODAB",
                "cpu-d8-LM", "cuda-d1-BAOAB", "cuda-d1-LM", "cuda-sphere-gBAOAB", "cuda-circle-OBABO",
                "cpu-sphere-gBAOAB", "cpu-stiefel-OBABO", "cpu-td-kT-BAOAB", "cpu-td-force-BAOAB", "cpu-td-EM",
                "cpu-d1-GHMC", "cpu-d8-GHMC", "cpu-d1-MALA", "cpu-RESPA", "cuda-d1-GHMC")


# ----------------------------------------------------------------------------- writing

def load():
    if not os.path.exists(GOLDEN):
        return {"format": FORMAT, "cases": {}, "kernels": {}}
    with open(GOLDEN) as fh:
        return json.load(fh)


def dumps(obj, depth=0, expand=4):
    """JSON with sorted keys: dicts nested fewer than ``expand`` levels deep one key per line,
    deeper ones (an array's record, a value) on one line, so a diff shows one line per array."""
    if not isinstance(obj, dict) or depth >= expand or not obj:
        return json.dumps(obj, sort_keys=True)
    pad = " " * (depth + 1)
    items = [f"{pad}{json.dumps(k)}: {dumps(obj[k], depth + 1, expand)}" for k in sorted(obj)]
    return "{\n" + ",\n".join(items) + "\n" + " " * depth + "}"


def versions():
    import numba

    out = {"numpy": np.__version__, "numba": numba.__version__, "python": sys.version.split()[0]}
    try:
        import torch

        out["torch"] = torch.__version__
    except ImportError:
        pass
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=GROUPS, help="regenerate this group only (repeatable)")
    ap.add_argument("--list", action="store_true", help="print the case ids and exit")
    ap.add_argument("--check", action="store_true", help="compare with the stored file instead of writing it")
    ap.add_argument("--child-cuda", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child_cuda:  # in the child of run_cuda
        import sdekit

        wire = _to_wire(cuda_values())
        wire["__sdekit__"] = os.path.abspath(sdekit.__file__)
        print(json.dumps(wire))
        return 0
    if args.list:
        for cid, (group, _) in CASES.items():
            print(f"{group:12s} {cid}")
        for name in KERNEL_NAMES:
            print(f"{'kernels':12s} {name}")
        return 0
    import sdekit

    print(f"sdekit: {sdekit.__file__}", file=sys.stderr)
    groups = set(args.only or GROUPS)
    golden = load()
    bad = []
    for cid, (group, _) in CASES.items():
        if group not in groups:
            continue
        print(f"  {cid}", file=sys.stderr)
        entry = compute(cid)
        check_generated(cid, entry)
        if args.check:
            if golden["cases"].get(cid) != entry:
                bad.append(cid)
        golden["cases"][cid] = entry
    if "kernels" in groups:
        os.makedirs(KERNEL_DIR, exist_ok=True)
        for name in KERNEL_NAMES:
            text = kernel_text(name)
            entry = {"file": os.path.relpath(kernel_file(name), HERE),
                     "sha256": hashlib.sha256(text.encode()).hexdigest()}
            if args.check:
                if golden["kernels"].get(name) != entry:
                    bad.append(f"kernels/{name}")
                continue
            golden["kernels"][name] = entry
            with open(kernel_file(name), "w") as fh:
                fh.write(text)
    if args.check:
        print("differ: " + (", ".join(bad) if bad else "none"))
        return 1 if bad else 0
    known = set(CASES)
    golden["cases"] = {k: v for k, v in golden["cases"].items() if k in known}
    golden["kernels"] = {k: v for k, v in golden["kernels"].items() if k in KERNEL_NAMES}
    golden["format"] = FORMAT
    golden["generated_with"] = versions()
    with open(GOLDEN + ".tmp", "w") as fh:
        fh.write(dumps(golden) + "\n")
    os.replace(GOLDEN + ".tmp", GOLDEN)
    print(f"wrote {GOLDEN}: {len(golden['cases'])} cases, {len(golden['kernels'])} kernel texts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
