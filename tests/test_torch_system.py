"""A torch module as the system (issue 10: "a system may be a torch module evaluated in batches").

``systems.torch_module`` evaluates the module on all paths, batch by batch, in the numpy
backend. References: the same force written as a numba gradient (``systems.Harmonic``,
``systems.custom``), run with the same seed; for the statistics, BAOAB's exact
configurational marginal on the harmonic oscillator, <q^2> = kT / omega^2 for every
stable h (Leimkuhler & Matthews, AMRX 2013).
"""
import doctest
import math
import subprocess
import sys

import numpy as np
import pytest

import sdekit
from sdekit import systems

from conftest import assert_within

torch = pytest.importorskip("torch")

OMEGA = 1.5                # omega^2 = 2.25 exactly, so -w2 * q is the same number in torch and numpy
W = np.array([[-1.2, 0.3], [0.3, -0.8]])
B = np.array([0.25, -0.4])


def linear(weight, bias=None):
    """A float64 torch.nn.Linear with the given weight (and bias)."""
    weight = np.atleast_2d(weight)
    layer = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(torch.as_tensor(weight))
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias))
    return layer


def _grad_affine(q, out):  # grad U for the force W q + B
    out[0] = -(-1.2 * q[0] + 0.3 * q[1] + 0.25)
    out[1] = -(0.3 * q[0] - 0.8 * q[1] - 0.4)


class Driven(torch.nn.Module):
    """F(q, t) = -1.3 q + 0.8 cos(1.7 t), with t a (b, 1) column."""

    def forward(self, q, t):
        return -1.3 * q + 0.8 * torch.cos(1.7 * t)


def _grad_driven(q, t, out):
    out[0] = 1.3 * q[0] - 0.8 * math.cos(1.7 * t)


class HalfSquare(torch.nn.Module):
    """U(q) = w2 |q|^2 / 2 (one number per row), for output="potential"."""

    def forward(self, q):
        return 0.5 * OMEGA ** 2 * (q * q).sum(dim=1)


def run(system, word="BAOAB", **kw):
    args = dict(h=0.3, n_steps=25, gamma=1.0, kT=0.7, seed=11)
    args.update(kw)
    return sdekit.simulate(word, system, **args)


def test_importing_systems_does_not_import_torch():
    code = "import sys, sdekit, sdekit.systems, sdekit.diffusion; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_linear_module_is_bitwise_the_harmonic_force():
    layer = linear([[-OMEGA ** 2]])
    ref = systems.Harmonic(OMEGA)
    for word in ("BAOAB", "OBABO", "EM"):
        a = sdekit.ensemble(word, systems.torch_module(layer, 1), h=0.3, n_steps=20, n_paths=50, seed=3)
        b = sdekit.ensemble(word, ref, h=0.3, n_steps=20, n_paths=50, seed=3, backend="numpy")
        assert a.state.backend == "numpy"
        np.testing.assert_array_equal(a.q, b.q)
        if a.p is not None:
            np.testing.assert_array_equal(a.p, b.p)


@pytest.mark.parametrize("kT", [0.0, 0.7])  # noise-free, and noisy with the same seed
def test_affine_module_matches_the_custom_gradient(kT):
    module = systems.torch_module(linear(W, B), 2)
    ref = systems.custom(_grad_affine, 2)
    q0 = np.array([0.9, -0.6])
    a, b = run(module, kT=kT, q0=q0), run(ref, kT=kT, q0=q0, backend="numpy")
    assert np.abs(a.q).max() > 0.1
    np.testing.assert_allclose(a.q, b.q, rtol=0, atol=1e-14)
    np.testing.assert_allclose(a.p, b.p, rtol=0, atol=1e-14)


def test_batches_do_not_change_the_result():
    layer = linear(W, B)
    one = sdekit.ensemble("BAOAB", systems.torch_module(layer, 2), h=0.3, n_steps=10, n_paths=37, seed=5)
    many = sdekit.ensemble("BAOAB", systems.torch_module(layer, 2, batch_size=8), h=0.3, n_steps=10,
                           n_paths=37, seed=5)
    np.testing.assert_array_equal(one.q, many.q)
    np.testing.assert_array_equal(one.p, many.p)
    x = np.random.default_rng(0).standard_normal((37, 2))
    np.testing.assert_array_equal(systems.evaluate_module(layer, x, batch_size=5),
                                  systems.evaluate_module(layer, x))


def test_precisions():
    """float32 paths with a float64 module: the force is rounded to float32 as for any system;
    a float32 module: the force to float32 accuracy."""
    a = sdekit.ensemble("BAOAB", systems.torch_module(linear(W, B), 2), 0.3, 10, 5, seed=1, dtype="float32")
    b = sdekit.ensemble("BAOAB", systems.custom(_grad_affine, 2), 0.3, 10, 5, seed=1, dtype="float32",
                        backend="numpy")
    assert a.q.dtype == np.float32
    np.testing.assert_allclose(a.q, b.q, rtol=0, atol=1e-6)
    single = systems.torch_module(linear(W, B).float(), 2)
    assert single.dtype == torch.float32
    q = np.random.default_rng(2).standard_normal((6, 2))
    force = single.force(q)
    assert force.dtype == np.float64 and np.abs(force - (q @ W.T + B)).max() < 1e-6
    assert np.abs(force - (q @ W.T + B)).max() > 1e-12  # it did run in float32


@pytest.mark.parametrize("word", ["BAOAB", "OBABO", "EM"])
def test_time_dependent_module_matches_the_custom_gradient(word):
    module = systems.torch_module(Driven(), 1, time_dependent=True)
    ref = systems.custom(_grad_driven, 1, time_dependent=True)
    a = run(module, word, t0=0.4, q0=[0.5])
    b = run(ref, word, t0=0.4, q0=[0.5], backend="numpy")
    assert a.state.backend == "numpy" and a.spec.time_dependent
    np.testing.assert_allclose(a.q, b.q, rtol=0, atol=1e-13)
    # F(0, t) = 0.8 cos(1.7 t): the module sees the time column
    np.testing.assert_allclose(module.force(np.zeros((3, 1)), 0.25), 0.8 * math.cos(1.7 * 0.25), rtol=1e-15)


def test_gradient_and_potential_outputs():
    q = np.random.default_rng(1).standard_normal((4, 3, 2))
    potential = systems.torch_module(HalfSquare(), 2, output="potential", batch_size=5)
    gradient = systems.torch_module(linear(OMEGA ** 2 * np.eye(2)), 2, output="gradient")
    np.testing.assert_allclose(potential.grad(q), OMEGA ** 2 * q, rtol=1e-15)
    np.testing.assert_allclose(gradient.force(q), -OMEGA ** 2 * q, rtol=1e-15)
    np.testing.assert_allclose(potential.potential(q), 0.5 * OMEGA ** 2 * (q * q).sum(-1), rtol=1e-15)
    a = run(potential, q0=[0.3, -0.2])
    b = run(systems.Harmonic(OMEGA, dim=2), q0=[0.3, -0.2], backend="numpy")
    np.testing.assert_allclose(a.q, b.q, rtol=0, atol=1e-14)


@pytest.mark.statistical
def test_linear_module_samples_the_harmonic_law_with_baoab():
    kT, n = 0.8, 20000
    system = systems.torch_module(linear([[-OMEGA ** 2]]), 1, batch_size=4096,
                                  exact={"q2": lambda kT: [kT / OMEGA ** 2]})
    rng = np.random.default_rng(7)
    q0 = rng.standard_normal((n, 1)) * math.sqrt(kT) / OMEGA  # start in the exact law
    ens = sdekit.ensemble("BAOAB", system, h=0.6, n_steps=40, n_paths=n, gamma=1.0, kT=kT, q0=q0, seed=8)
    assert_within(ens.mean["q2"][-1], ens.stderr("q2")[-1], system.exact("q2", kT), 4.5,
                  "BAOAB <q^2> with a torch.nn.Linear force")


def test_docstring_example_runs():
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner()
    for test in finder.find(systems.torch_module, "torch_module", globs=vars(systems).copy()):
        runner.run(test)
    assert runner.summarize(verbose=False).failed == 0


class NotATensor(torch.nn.Module):
    def forward(self, q):
        return q.numpy()


@pytest.mark.parametrize("make,arg", [
    (lambda: systems.torch_module(lambda q: -q, 1), "module"),
    (lambda: systems.torch_module(linear(W), 0), "dim"),
    (lambda: systems.torch_module(linear(W), 2, output="score"), "output"),
    (lambda: systems.torch_module(linear(W), 2, time_dependent=1), "time_dependent"),
    (lambda: systems.torch_module(linear(W), 2, batch_size=0), "batch_size"),
    (lambda: systems.torch_module(linear(W), 2, dtype=np.float64), "dtype"),
    (lambda: systems.torch_module(linear(W), 2, device="nowhere"), "device"),
    (lambda: systems.torch_module(linear(np.ones((3, 2))), 2).force(np.zeros((4, 2))), "module"),
    (lambda: systems.torch_module(NotATensor(), 2).force(np.zeros((4, 2))), "module"),
    (lambda: systems.torch_module(linear(W), 2).force(np.zeros((4, 3))), "q"),
    (lambda: systems.torch_module(linear(W), 2).force(np.zeros((4, 2)), 0.5), "t"),
    (lambda: systems.torch_module(Driven(), 1, time_dependent=True).force(np.zeros((4, 1))), "t"),
    (lambda: systems.torch_module(linear(W), 2).potential(np.zeros((4, 2))), "potential"),
    (lambda: systems.torch_module(HalfSquare(), 2, output="potential").potential(np.zeros((4, 3))), "q"),
    (lambda: sdekit.ensemble("BAOAB", systems.torch_module(linear(np.ones((3, 2))), 2), 0.1, 2, 4), "module"),
    (lambda: sdekit.ensemble("BAOAB", systems.torch_module(linear(W), 2), 0.1, 2, 4, backend="cpu"), "backend"),
    (lambda: sdekit.simulate("BAOAB", systems.torch_module(linear(W), 2), 0.1, 2, backend="cuda"), "backend"),
])
def test_bad_input_names_the_argument(make, arg):
    with pytest.raises(ValueError, match=rf"^{arg}:"):
        make()


class InPlace(torch.nn.Module):
    """Returns its input, changed in place (F = -q): must not change the paths."""

    def forward(self, q):
        return q.neg_()


def test_the_module_gets_a_copy_of_the_paths():
    q = np.array([[0.5], [-1.0]])
    force = systems.torch_module(InPlace(), 1).force(q)
    np.testing.assert_array_equal(q, [[0.5], [-1.0]])
    np.testing.assert_array_equal(force, -q)
