"""User letters (sdekit.letters.CoordinateLetter) in the generated kernels.

A user letter's ``source`` hook calls its compiled ``flow`` per coordinate, in both storage
forms (registers for d <= storage.UNROLL, arrays otherwise), drawing its normals from the
path's Philox stream as O does. Checked here:

* noise-free (kT = 0), cpu = the numpy backend to ~1e-12 (the same arithmetic, compiled);
* with noise, the register form = the array form bit for bit (the same Philox normals);
* a user OU letter with O's arithmetic = O bit for bit (it draws the same normals the same way);
* a letter drawing two normals per coordinate = two letters drawing one each, bit for bit
  (every coordinate's first normal, then every coordinate's second: the numpy backend's order);
* a changed flow is another kernel (its fingerprint is in the text and the cache key);
* a letter with no source hook is refused, naming the letter and the backend;
* the cuda kernel runs the user letters under the numba-cuda simulator (= cpu to rounding).
"""
import json
import pathlib

import numpy as np
import pytest

import sdekit
from sdekit import Scheme, letters
from sdekit.kernels import storage
from sdekit.letters import CoordinateLetter, Letter
from sdekit.systems import Harmonic

from conftest import assert_same_ensemble
from test_kernels import run_child

import user_letters

LETTERS_CODE = (pathlib.Path(__file__).parent / "user_letters.py").read_text()   # for the child process
NS = vars(user_letters)


@pytest.fixture(scope="module", autouse=True)
def user_letters():
    made = [letters.register(cls(), replace=True) for cls in NS["USER"]]
    yield
    for letter in made:
        letters.unregister(letter.name)


KW = dict(h=0.2, n_steps=40, n_paths=300, seed=5, record_every=10, gamma=0.7, progress=False)
Q0 = {1: [0.8], 3: [0.8, -0.3, 0.5], 6: [0.8, -0.3, 0.5, 0.1, 0.0, -1.0]}


def _system(d):
    return Harmonic(np.ones(d)) if d > 1 else Harmonic(1.0)


def assert_close_ensemble(a, b, rtol, atol):
    for k in ("q", "p", "xi"):
        np.testing.assert_allclose(getattr(a, k), getattr(b, k), rtol=rtol, atol=atol, err_msg=k)
    assert sorted(a.mean) == sorted(b.mean)
    for k in b.mean:
        np.testing.assert_allclose(a.mean[k], b.mean[k], rtol=rtol, atol=atol, err_msg=k)
        np.testing.assert_allclose(a.meansq[k], b.meansq[k], rtol=rtol, atol=atol, err_msg=k)


# ----------------------------------------------------------------------------- noise-free: cpu = numpy

@pytest.mark.parametrize("word,d", [("HOH", 1), ("HOH", 6), ("BAEAB", 1), ("OHWHO", 6), ("BADEDAB", 1)])
def test_noise_free_cpu_equals_numpy(word, d):
    """kT = 0: no noise reaches the state, so the compiled flow is the numpy flow to rounding
    (register form for d = 1, array form for d = 6)."""
    kw = dict(KW, kT=0.0, q0=Q0[d], p0=[0.3] * d, xi0=0.2)
    ref = sdekit.ensemble(word, _system(d), backend="numpy", **kw)
    cpu = sdekit.ensemble(word, _system(d), backend="cpu", **kw)
    assert np.abs(cpu.q - np.array(Q0[d])).max() > 0.1   # it moved
    assert_close_ensemble(cpu, ref, rtol=1e-12, atol=1e-13)


def test_noise_free_trajectory_cpu_equals_numpy():
    kw = dict(h=0.1, n_steps=60, record_every=3, q0=[1.0, 0.0, -0.5], p0=[0.0, 0.5, 0.2], kT=0.0, gamma=0.3)
    ref = sdekit.simulate("BHOHB", _system(3), backend="numpy", **kw)
    cpu = sdekit.simulate("BHOHB", _system(3), backend="cpu", **kw)
    for k in ("t", "q", "p", "p_O", "xi"):
        np.testing.assert_allclose(getattr(cpu, k), getattr(ref, k), rtol=1e-12, atol=1e-13, err_msg=k)


def test_noise_free_time_dependent_cpu_equals_numpy():
    """A user letter's coefficients (gamma of E) read from the time-dependent table, at its clock time."""
    kw = dict(KW, kT=0.0, gamma=lambda t: 1.0 + 0.5 * t, q0=Q0[3], p0=[0.3] * 3)
    ref = sdekit.ensemble("BAEAB", _system(3), backend="numpy", **kw)
    cpu = sdekit.ensemble("BAEAB", _system(3), backend="cpu", **kw)
    assert_close_ensemble(cpu, ref, rtol=1e-12, atol=1e-13)
    assert "tab[row, " in sdekit.kernels.source("BAEAB", _system(3), time_dependent=True)


# ----------------------------------------------------------------------------- with noise: the same normals

@pytest.mark.parametrize("word,d", [("BAEAB", 3), ("OHWHO", 1)])
def test_register_form_equals_array_form(word, d, monkeypatch):
    """The same letter in registers (d <= UNROLL) and in arrays draws the same Philox normals
    and does the same arithmetic: bit for bit."""
    kw = dict(KW, kT=1.3, q0=Q0[d])
    reg = sdekit.ensemble(word, _system(d), backend="cpu", **kw)
    assert "za[" in sdekit.kernels.source(word, _system(d)) or d == 1
    monkeypatch.setattr(storage, "UNROLL", 0)
    arr = sdekit.ensemble(word, _system(d), backend="cpu", **kw)
    assert "for j in range(D)" in sdekit.kernels.source(word, _system(d))
    assert_same_ensemble(reg, arr)
    assert reg.state.rng == arr.state.rng


@pytest.mark.parametrize("d", [1, 6])   # register and array forms
def test_user_ou_letter_draws_like_O(d):
    """U has O's arithmetic as a user flow: BAUAB = BAOAB bit for bit on the cpu backend, so U
    takes the same normals from the same Philox stream in the same order."""
    kw = dict(KW, kT=1.3, q0=Q0[d])
    o = sdekit.ensemble("BAOAB", _system(d), backend="cpu", **kw)
    u = sdekit.ensemble("BAUAB", _system(d), backend="cpu", **kw)
    np.testing.assert_allclose(u.q, o.q, rtol=1e-15, atol=0)
    np.testing.assert_allclose(u.p, o.p, rtol=1e-15, atol=0)
    for k in o.mean:   # U records no p_O
        if "O" not in k:
            np.testing.assert_allclose(u.mean[k], o.mean[k], rtol=1e-14, atol=0, err_msg=k)
    assert u.state.rng == o.state.rng


@pytest.mark.parametrize("d", [1, 6])   # register and array forms
def test_two_normals_per_coordinate_in_the_numpy_order(d):
    """W (two normals per coordinate, delta/2 each) = N N (one normal each, fraction 1/2 each):
    W's normals are every coordinate's first, then every coordinate's second."""
    kw = dict(KW, kT=0.9, q0=Q0[d])
    w = sdekit.ensemble("BAWAB", _system(d), backend="cpu", **kw)
    nn = sdekit.ensemble(Scheme([("B", .5), ("A", .5), ("N", .5), ("N", .5), ("A", .5), ("B", .5)]), _system(d),
                         backend="cpu", **kw)
    assert_same_ensemble(w, nn)
    assert w.state.rng == nn.state.rng
    assert w.state.rng["counter"] == 2 * d * KW["n_steps"]


def test_trajectory_register_equals_array(monkeypatch):
    kw = dict(h=0.1, n_steps=50, record_every=5, q0=[1.0, 0.0], kT=1.0, seed=4)
    reg = sdekit.simulate("OHWHO", _system(2), backend="cpu", **kw)
    monkeypatch.setattr(storage, "UNROLL", 0)
    arr = sdekit.simulate("OHWHO", _system(2), backend="cpu", **kw)
    for k in ("q", "p", "p_O", "xi"):
        np.testing.assert_array_equal(getattr(reg, k), getattr(arr, k), err_msg=k)


# ----------------------------------------------------------------------------- text, cache key, refusals

def test_source_calls_the_flow_and_names_its_fingerprint():
    text = sdekit.kernels.source("BHOHB", _system(3))
    assert "flow_H = _function(" in text and "LETTERS = " in text
    assert "q_0, p_0 = flow_H(q[0], p[0], d[1])" in text      # register form: one call per coordinate
    text = sdekit.kernels.source("OHWHO", Harmonic(np.ones(6)))
    assert "for j in range(D): q[j], p[j] = flow_H(q[j], p[j], d[1])" in text
    assert "for j in range(2 * D):" in text                    # W's normals, drawn ahead
    assert "p[j] = flow_W(p[j], d[2], sigma, sqrt_mass[j], za[j], za[1 * D + j])" in text


def _flow_a(p, delta):
    return p * (1.0 - delta)


def _flow_b(p, delta):
    return p * (1.0 - 0.5 * delta)


class Damp(CoordinateLetter):
    """Q: one flow, and (Damp2) another under the same name."""
    name, title, update = "Q", "damp", "p *= 1 - ({f})"
    inputs = moves = ("p",)
    flow = staticmethod(_flow_a)


class Damp2(Damp):
    flow = staticmethod(_flow_b)


def test_a_changed_flow_is_another_kernel():
    try:
        letters.register(Damp(), replace=True)
        text_a, mod_a = sdekit.kernels.source("BAQAB"), sdekit.kernels.build("BAQAB", Harmonic())
        run_a = sdekit.ensemble("BAQAB", Harmonic(), 0.1, 10, 4, q0=[1.0], backend="cpu", seed=0, progress=False)
        letters.register(Damp2(), replace=True)
        text_b, mod_b = sdekit.kernels.source("BAQAB"), sdekit.kernels.build("BAQAB", Harmonic())
        run_b = sdekit.ensemble("BAQAB", Harmonic(), 0.1, 10, 4, q0=[1.0], backend="cpu", seed=0, progress=False)
    finally:
        letters.unregister("Q")
    assert text_a != text_b and mod_a is not mod_b
    assert not np.array_equal(run_a.p, run_b.p)


def test_a_resume_after_re_registering_a_changed_letter_is_refused():
    try:
        letters.register(Damp(), replace=True)
        kw = dict(h=0.1, n_steps=5, n_paths=4, q0=[1.0], backend="numpy", seed=0, progress=False)
        first = sdekit.ensemble("BAQAB", Harmonic(), **kw)
        assert first.state.spec["letters"]
        sdekit.ensemble("BAQAB", Harmonic(), resume=first.state, **kw)   # the same letter: fine
        letters.register(Damp2(), replace=True)
        with pytest.raises(ValueError, match="resume.*letters"):
            sdekit.ensemble("BAQAB", Harmonic(), resume=first.state, **kw)
    finally:
        letters.unregister("Q")
    assert "letters" not in sdekit.ensemble("BAOAB", Harmonic(), **kw).state.spec


def test_a_letter_without_source_hook_is_refused():
    class NumpyOnly(Letter):
        name, title, update = "Z", "numpy only", "p *= 1"
        moves = ("p",)

        def numpy(self, x, k, delta, new_force):
            pass

    letters.register(NumpyOnly(), replace=True)
    try:
        with pytest.raises(ValueError, match=r"letter 'Z'.*backend 'cpu'.*source"):
            sdekit.kernels.source("BAZAB")
        with pytest.raises(ValueError, match=r"letter 'Z'.*backend 'cuda'"):
            sdekit.kernels.source("BAZAB", backend="cuda")
    finally:
        letters.unregister("Z")


# ----------------------------------------------------------------------------- cuda (simulator)

CUDASIM_KW = dict(h=0.2, n_steps=8, n_paths=40, seed=3, record_every=4, gamma=0.7, kT=1.1, progress=False)
CUDASIM_CHILD = LETTERS_CODE + """
import json
import sdekit
from sdekit import letters
from sdekit.systems import Harmonic
for cls in USER:
    letters.register(cls(), replace=True)
out = {}
for word, d in [("BHOHB", 1), ("OHWHO", 3)]:
    g = sdekit.ensemble(word, Harmonic([1.0] * d), backend="cuda", q0=[0.5] * d, **KW)
    out[word] = {"q": g.q.tolist(), "p": g.p.tolist(), "rng": g.state.rng,
                 "mean": {k: v.tolist() for k, v in g.mean.items()}}
print(json.dumps(out))
"""


@pytest.mark.cuda
def test_user_letters_on_cuda_under_the_simulator():
    out = json.loads(run_child(CUDASIM_CHILD.replace("**KW", f"**{CUDASIM_KW!r}"), NUMBA_ENABLE_CUDASIM=1))
    for word, d in [("BHOHB", 1), ("OHWHO", 3)]:
        c = sdekit.ensemble(word, Harmonic([1.0] * d), backend="cpu", q0=[0.5] * d, **CUDASIM_KW)
        g = out[word]
        np.testing.assert_allclose(g["q"], c.q, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g["p"], c.p, rtol=1e-12, atol=1e-14)
        assert g["rng"] == c.state.rng
        for k in c.mean:
            np.testing.assert_allclose(g["mean"][k], c.mean[k], rtol=1e-12, atol=1e-14, err_msg=k)
