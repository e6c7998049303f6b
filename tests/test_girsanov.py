"""Issue 20, item 3: Girsanov path weights for a change of drift (sdekit.girsanov).

Exact checks on quadratic potentials: the exact law of log w on a linear chain
(E[w] = 1 to rounding, its mean and variance) from sdekit.girsanov.log_weight_law,
and reweighting a run on one harmonic force to another gives the target chain's exact
moments (sdekit.girsanov.target_moments), at 4.5 standard errors from the data
(independent paths; the delta method for the ratio estimator). ``--break-letter=G``
scales every weight increment by 1.1 (tests/conftest.py): the statistical tests here
fail under it.
"""
import json

import numpy as np
import pytest

import sdekit
from sdekit import girsanov, linear
from sdekit.systems import Gaussian, Harmonic

from conftest import assert_within
from test_kernels import run_child

P, T = Harmonic(1.0), Harmonic(1.5)          # proposal U = q^2/2, target U = 2.25 q^2/2
U = girsanov.difference(T, P)                # u = -(2.25 - 1) q
KU = 1.25
KW = dict(h=0.3, gamma=1.0, kT=1.0, q0=1.0, seed=11)


def _second(m, i):
    return m.cov[i, i] + m.mean[i] ** 2


def _check_run(ens, word, n_steps, x0, h=KW["h"], overdamped=False, what=""):
    """Reweighted moments against the target's exact ones; log w's mean, variance and E[w] against
    the exact law of the linear chain. All at 4.5 standard errors from the data."""
    lw = ens.log_weight
    exact = girsanov.target_moments(word, 1.0, KU, h, n_steps, gamma=KW["gamma"], kT=KW["kT"], x0=x0)
    f = np.c_[ens.q[:, 0], ens.q[:, 0] ** 2] if overdamped else \
        np.c_[ens.q[:, 0], ens.q[:, 0] ** 2, ens.p[:, 0], ens.p[:, 0] ** 2]
    want = [exact.mean[0], _second(exact, 0)] + ([] if overdamped else [exact.mean[1], _second(exact, 1)])
    r = girsanov.reweight(f, lw)
    assert_within(r.mean, r.stderr, want, what=f"{what} reweighted q, q^2, p, p^2")
    law = girsanov.log_weight_law(word, 1.0, KU, h, n_steps, gamma=KW["gamma"], kT=KW["kT"], x0=x0)
    n = lw.size
    c = lw - lw.mean()
    assert_within(lw.mean(), lw.std() / np.sqrt(n), law.mean, what=f"{what} E[log w]")
    assert_within(c.var(), np.sqrt((np.mean(c ** 4) - c.var() ** 2) / n), law.var, what=f"{what} Var[log w]")
    w = np.exp(lw)
    assert_within(w.mean(), w.std() / np.sqrt(n), 1.0, what=f"{what} E[w]")
    return r


# ----------------------------------------------------------------------------- exact laws (no simulation)

@pytest.mark.parametrize("word,x0", [("BAOAB", [1.0, 0.5]), ("OBABO", [1.0, 0.0]), ("ABOBA", [0.0, 1.0]),
                                     ("EM", [1.0])])
def test_exact_mean_weight_is_one(word, x0):
    """E[w] = det(I - A)^-1/2 exp(c0 + b (I - A)^-1 b / 2) = 1 exactly: the weight is a likelihood ratio;
    E[log w] = -KL < 0 and Var > 0."""
    law = girsanov.log_weight_law(word, 1.0, KU, 0.3, 12, gamma=1.0, kT=1.0, x0=x0)
    assert abs(law.mean_weight - 1.0) < 1e-10
    assert law.mean < 0 < law.var
    assert girsanov.log_weight_law(word, 1.0, 0.0, 0.3, 12, x0=x0) == (0.0, 0.0, 1.0, 1.0)   # no drift change


def test_exact_law_on_a_gaussian_with_mass_and_a_non_unit_temperature():
    K = np.array([[2.0, 0.5], [0.5, 1.0]])
    Ku = np.array([[0.3, -0.2], [-0.2, 0.6]])
    law = girsanov.log_weight_law("BAOAB", K, Ku, 0.2, 8, gamma=[0.7, 1.3], kT=0.5, mass=[1.0, 2.0],
                                  x0=[1.0, -1.0, 0.0, 0.5])
    assert abs(law.mean_weight - 1.0) < 1e-10 and law.var > 0


def test_target_chain_without_drift_change_is_the_proposal_and_with_one_moves_toward_the_target():
    plain = linear.transient_moments("BAOAB", 1.0, 0.3, 15, mean0=[1.0, 0.0])
    same = girsanov.target_moments("BAOAB", 1.0, 0.0, 0.3, 15, x0=[1.0, 0.0])
    np.testing.assert_allclose(same.mean, plain.mean, rtol=0, atol=1e-14)
    np.testing.assert_allclose(same.cov, plain.cov, rtol=0, atol=1e-14)
    # the target chain's stationary <q^2> tends to kT / (1 + KU) as h -> 0
    far = girsanov.target_moments("BAOAB", 1.0, KU, 0.01, 4000, x0=[0.0, 0.0])
    assert abs(far.cov[0, 0] - 1.0 / (1.0 + KU)) < 5e-3


# ----------------------------------------------------------------------------- runs

@pytest.mark.statistical
def test_numpy_reweighting_gives_the_target_moments():
    ens = sdekit.ensemble("BAOAB", P, n_steps=10, n_paths=20000, backend="numpy", drift_change=U, **KW)
    r = _check_run(ens, "BAOAB", 10, [1.0, 0.0], what="numpy BAOAB")
    assert 0.05 * ens.n_paths < r.ess < ens.n_paths
    # streamed: mean and mean square of log w at every record, the last one the final paths'
    np.testing.assert_allclose(ens.mean["log_weight"][-1], ens.log_weight.mean(), rtol=1e-12)
    assert ens.mean["log_weight"][0] == 0.0


@pytest.mark.statistical
def test_numpy_euler_maruyama_weights():
    kw = {k: v for k, v in KW.items() if k != "gamma"}
    ens = sdekit.ensemble("EM", P, n_steps=10, n_paths=20000, backend="numpy", drift_change=U, **kw)
    _check_run(ens, "EM", 10, [1.0], overdamped=True, what="numpy EM")


@pytest.mark.statistical
def test_cpu_kernel_reweighting_gives_the_target_moments():
    ens = sdekit.ensemble("BAOAB", P, n_steps=10, n_paths=20000, backend="cpu", drift_change=U, record_every=5,
                          **KW)
    _check_run(ens, "BAOAB", 10, [1.0, 0.0], what="cpu BAOAB")
    np.testing.assert_allclose(ens.mean["log_weight"][-1], ens.log_weight.mean(), rtol=1e-12)
    # a record in the middle: E[log w] after 5 steps
    law5 = girsanov.log_weight_law("BAOAB", 1.0, KU, KW["h"], 5, x0=[1.0, 0.0])
    se5 = np.sqrt((ens.meansq["log_weight"][1] - ens.mean["log_weight"][1] ** 2) / ens.n_paths)
    assert_within(ens.mean["log_weight"][1], se5, law5.mean, what="cpu E[log w] at step 5")


def test_cpu_trajectory_resume_and_checkpoint_carry_the_weight(tmp_path):
    kw = dict(KW, backend="cpu", drift_change=U)
    full = sdekit.simulate("BAOAB", P, n_steps=40, record_every=10, **kw)
    assert full.log_weight.shape == (5,) and full.log_weight[0] == 0.0
    assert full.log_weight[-1] == full.state.log_weight[0]
    half = sdekit.simulate("BAOAB", P, n_steps=20, record_every=10, **kw)
    sdekit.save(tmp_path / "s.npz", half.state)
    rest = sdekit.simulate("BAOAB", P, n_steps=20, record_every=10, resume=sdekit.load(tmp_path / "s.npz"), **kw)
    np.testing.assert_array_equal(np.concatenate([half.log_weight, rest.log_weight]), full.log_weight)
    # the ensemble kernel gives path 0 the same numbers as the trajectory
    ens = sdekit.ensemble("BAOAB", P, n_steps=40, n_paths=3, **kw)
    assert ens.log_weight[0] == full.log_weight[-1]
    # a state with a weight does not resume under another drift change, nor without one
    with pytest.raises(ValueError, match="^resume"):
        sdekit.simulate("BAOAB", P, n_steps=5, resume=full.state,
                        **dict(kw, drift_change=girsanov.difference(Harmonic(1.6), P)))
    with pytest.raises(ValueError, match="^resume"):
        sdekit.simulate("BAOAB", P, n_steps=5, resume=full.state, **{k: v for k, v in kw.items() if k != "drift_change"})


def test_numpy_resume_is_bitwise():
    kw = dict(KW, backend="numpy", drift_change=U)
    full = sdekit.ensemble("OBABO", P, n_steps=20, n_paths=50, **kw)
    half = sdekit.ensemble("OBABO", P, n_steps=10, n_paths=50, **kw)
    rest = sdekit.ensemble("OBABO", P, n_steps=10, n_paths=50, resume=half.state, **kw)
    np.testing.assert_array_equal(rest.log_weight, full.log_weight)


THREADS_CHILD = """
import json, numpy as np, numba, sdekit
from sdekit import girsanov
from sdekit.systems import Harmonic
e = sdekit.ensemble("BAOAB", Harmonic(1.0), h=0.3, n_steps=10, n_paths=1000, seed=11, backend="cpu", q0=1.0,
                    record_every=5, drift_change=girsanov.difference(Harmonic(1.5), Harmonic(1.0)))
print(json.dumps({"threads": numba.get_num_threads(), "lw": e.log_weight.tobytes().hex(),
                  "mean": e.mean["log_weight"].tobytes().hex(), "q": e.q.tobytes().hex()}))
"""


def test_weights_are_the_same_for_one_and_two_threads():
    one = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=1))
    two = json.loads(run_child(THREADS_CHILD, NUMBA_NUM_THREADS=2))
    assert (one["threads"], two["threads"]) == (1, 2)
    assert {k: v for k, v in one.items() if k != "threads"} == {k: v for k, v in two.items() if k != "threads"}


def test_weights_do_not_change_the_proposal_paths():
    """The weight is bookkeeping: the paths (and the random stream) are those of the plain run."""
    for backend in ("numpy", "cpu"):
        a = sdekit.ensemble("BAOAB", P, n_steps=10, n_paths=300, backend=backend, drift_change=U, **KW)
        b = sdekit.ensemble("BAOAB", P, n_steps=10, n_paths=300, backend=backend, **KW)
        np.testing.assert_array_equal(a.q, b.q)
        assert a.state.rng == b.state.rng and b.log_weight is None


def test_reweight_and_effective_sample_size():
    assert girsanov.effective_sample_size(np.zeros(10)) == pytest.approx(10.0)
    assert girsanov.effective_sample_size([0.0, -800.0, -900.0]) == pytest.approx(1.0)
    r = girsanov.reweight([1.0, 3.0], np.log([3.0, 1.0]))
    assert r.mean == pytest.approx(1.5) and r.ess == pytest.approx(1.6)
    # the delta-method error: sum w_i^2 (f_i - mean)^2 / (sum w)^2
    assert r.stderr == pytest.approx(np.sqrt(0.75 ** 2 * 0.25 + 0.25 ** 2 * 2.25))


def test_difference_system():
    u = girsanov.difference(Gaussian(np.eye(2) * 2.0), Harmonic([1.0, 1.0]))
    np.testing.assert_allclose(u.force(np.array([[1.0, 2.0]])), [[-1.0, -2.0]])
    np.testing.assert_allclose(u.hessian(), np.eye(2))
    out = np.empty(2)
    u.gradient(np.array([1.0, 2.0]), out)
    np.testing.assert_allclose(out, [1.0, 2.0])


# ----------------------------------------------------------------------------- longer runs

@pytest.mark.slow
@pytest.mark.statistical
@pytest.mark.parametrize("word,n_steps,h", [("BAOAB", 40, 0.3), ("OBABO", 20, 0.5), ("ABOBA", 30, 0.1),
                                            ("EM", 40, 0.05)])
def test_cpu_reweighting_long(word, n_steps, h):
    kw = dict(KW, h=h)
    if word == "EM":
        del kw["gamma"]
    ens = sdekit.ensemble(word, P, n_steps=n_steps, n_paths=200000, backend="cpu", drift_change=U, **kw)
    _check_run(ens, word, n_steps, [1.0] if word == "EM" else [1.0, 0.0], h=h, overdamped=word == "EM",
               what=f"cpu {word} h={h} n={n_steps}")


CUDASIM_CHILD = """
import json, sdekit
from sdekit import girsanov
from sdekit.systems import Harmonic
u = girsanov.difference(Harmonic(1.5), Harmonic(1.0))
out = {}
for word, kw in [("BAOAB", dict(gamma=1.0))]:
    e = sdekit.ensemble(word, Harmonic(1.0), h=0.3, n_steps=6, n_paths=8, seed=5, record_every=3, q0=1.0,
                        backend="cuda", drift_change=u, **kw)
    out[word] = {"lw": e.log_weight.tolist(), "mean": e.mean["log_weight"].tolist(), "q": e.q.tolist()}
print(json.dumps(out))
"""


@pytest.mark.cuda
def test_cuda_weights_under_the_simulator():
    """The generated cuda kernel carries the weights: the cpu kernel's numbers to rounding."""
    out = json.loads(run_child(CUDASIM_CHILD, NUMBA_ENABLE_CUDASIM=1))
    for word, kw in [("BAOAB", dict(gamma=1.0))]:   # EM's kernel: test_cpu_reweighting_long (slow)
        c = sdekit.ensemble(word, P, h=0.3, n_steps=6, n_paths=8, seed=5, record_every=3, q0=1.0, backend="cpu",
                            drift_change=U, **kw)
        np.testing.assert_allclose(out[word]["q"], c.q, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(out[word]["lw"], c.log_weight, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(out[word]["mean"], c.mean["log_weight"], rtol=1e-12, atol=1e-14)


@pytest.mark.statistical
@pytest.mark.parametrize("backend", ["numpy", pytest.param("cpu", marks=pytest.mark.slow)])
def test_metropolis_words_carry_the_weight(backend):
    """GHMC (O{BAB}O): the uniforms of the tests have the same law under both chains, so the O letters'
    increments are the whole weight: E[w] = 1, and the reweighted <q^2> lies below the proposal's."""
    n = 20000 if backend == "numpy" else 200000
    ens = sdekit.ensemble("O{BAB}O", P, n_steps=10, n_paths=n, backend=backend, drift_change=U, **KW)
    w = np.exp(ens.log_weight)
    assert_within(w.mean(), w.std() / np.sqrt(n), 1.0, what=f"{backend} GHMC E[w]")
    r = girsanov.reweight(ens.q[:, 0] ** 2, ens.log_weight)
    assert r.mean + 5 * r.stderr < np.mean(ens.q[:, 0] ** 2)


@pytest.mark.slow
@pytest.mark.statistical
@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_five_coordinates_with_masses(backend):
    """d = 5 (the cpu kernel's array form), a diagonal mass: reweighted <q_i^2> and E[log w] exact."""
    om, mass = np.array([1.0, 1.5, 0.7, 2.0, 1.2]), [1.0, 2.0, 1.0, 0.5, 1.0]
    u = girsanov.difference(Harmonic(1.1 * om), Harmonic(om))
    x0 = np.r_[np.ones(5), np.zeros(5)]
    ens = sdekit.ensemble("OBABO", Harmonic(om), h=0.2, n_steps=10, n_paths=100000, q0=np.ones(5), seed=3,
                          mass=mass, backend=backend, drift_change=u)
    args = ("OBABO", np.diag(om ** 2), u.hessian(), 0.2, 10)
    exact = girsanov.target_moments(*args, mass=mass, x0=x0)
    law = girsanov.log_weight_law(*args, mass=mass, x0=x0)
    r = girsanov.reweight(ens.q ** 2, ens.log_weight)
    assert_within(r.mean, r.stderr, np.diag(exact.cov)[:5] + exact.mean[:5] ** 2, what=f"{backend} d=5 <q^2>")
    lw = ens.log_weight
    assert_within(lw.mean(), lw.std() / np.sqrt(lw.size), law.mean, what=f"{backend} d=5 E[log w]")
    assert abs(law.mean_weight - 1.0) < 1e-10


def test_masked_paths_and_record_blocks_keep_the_weights():
    """A path that leaves |q| <= max_abs stops there (its block replayed step by step): the weights are
    bitwise those of a run recorded every step, whatever the record block."""
    kw = dict(KW, backend="cpu", drift_change=U, max_abs=2.5, on_divergence="mask")
    runs = [sdekit.ensemble("BAOAB", P, n_steps=40, n_paths=2000, record_every=k, **kw) for k in (1, 8)]
    assert runs[0].diverged.size > 0
    np.testing.assert_array_equal(runs[0].diverged, runs[1].diverged)
    np.testing.assert_array_equal(runs[0].log_weight, runs[1].log_weight)
    np.testing.assert_array_equal(runs[0].mean["log_weight"][::8], runs[1].mean["log_weight"])
