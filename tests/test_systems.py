"""sdekit.systems: exact values of unknown observables, user gradients numba cannot
compile, and the package's submodules reachable after ``import sdekit`` (issue 16)."""
import subprocess
import sys

import numpy as np
import pytest

import sdekit
from sdekit import systems


def _grad_cubic(q, out):
    for i in range(q.shape[0]):
        out[i] = q[i] ** 3


def _grad_driven(q, t, out):
    out[0] = q[0] * t


EXACT_SYSTEMS = [systems.Harmonic(2.0), systems.Gaussian(np.eye(2)), systems.DoubleWell(2),
                 systems.custom(_grad_cubic, dim=1, exact={"q2": [0.5]}),
                 systems.custom(_grad_driven, dim=1, time_dependent=True)]


# ---------------------------------------------------------------------------- exact values

@pytest.mark.parametrize("system", EXACT_SYSTEMS, ids=repr)
def test_exact_of_an_unknown_observable_names_it_and_lists_the_known_ones(system):
    with pytest.raises(ValueError, match=r"^name: .*'q3'") as err:
        system.exact("q3", 1.0)
    known = ["p", "p2"] + sorted(system._exact_positions(1.0))
    for name in known:
        assert repr(name) in str(err.value)
    assert isinstance(err.value, KeyError)  # sdekit.analysis.exact_value still catches it
    assert sdekit.analysis.exact_value(system, "q3", 1.0) is None


def test_exact_refuses_a_name_that_is_not_a_string_and_a_bad_kT():
    with pytest.raises(ValueError, match=r"^name: .*got 2"):
        systems.DoubleWell().exact(2, 1.0)
    with pytest.raises(ValueError, match=r"^kT: .*-1"):
        systems.Harmonic().exact("q2", -1.0)


def test_exact_known_values_unchanged():
    assert systems.Harmonic(2.0).exact("q2", 1.0).tolist() == [0.25]
    assert systems.DoubleWell().exact("p2", 0.5, mass=2.0).tolist() == [1.0]


# ---------------------------------------------------------------------------- custom gradients

def _grad_unknown_attribute(q, out):
    out[0] = q.no_such_attribute


def _grad_python_object(q, out):
    out[0] = len({"a": object()})


@pytest.mark.parametrize("gradient, says", [(_grad_unknown_attribute, "Unknown attribute 'no_such_attribute'"),
                                            (_grad_python_object, "")])
def test_custom_gradient_numba_cannot_compile_is_refused_at_construction(gradient, says):
    with pytest.raises(ValueError, match=r"^gradient: numba cannot compile") as err:
        systems.custom(gradient, dim=1)
    message = str(err.value)
    assert gradient.__name__ in message and says in message
    assert "\n" not in message and "Failed in nopython" not in message
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_custom_gradient_error_points_at_the_user_s_line():
    with pytest.raises(ValueError, match=r"test_systems\.py, line \d+\)$"):
        systems.custom(_grad_unknown_attribute, dim=1)


def test_custom_time_dependent_gradient_is_probed_with_the_time():
    with pytest.raises(ValueError, match=r"^gradient: numba cannot compile '_grad_cubic' as gradient\(q, t, out\)"):
        systems.custom(_grad_cubic, dim=1, time_dependent=True)  # takes (q, out): one argument too many
    with pytest.raises(ValueError, match=r"^gradient: .*as gradient\(q, out\)"):
        systems.custom(_grad_driven, dim=1)  # takes (q, t, out)
    driven = systems.custom(_grad_driven, dim=1, time_dependent=True)
    assert driven.grad(np.array([2.0]), 3.0).tolist() == [6.0]


def test_custom_refuses_a_jitted_gradient():
    import numba

    with pytest.raises(ValueError, match=r"^gradient: .*py_func.*CPUDispatcher"):
        systems.custom(numba.njit(_grad_cubic), dim=1)


def test_probe_compilation_is_the_one_the_numpy_backend_uses():
    """The probe compiles the dispatcher the numpy backend's batch loop calls: no second
    compilation at the first run."""
    def grad(q, out):
        for i in range(q.shape[0]):
            out[i] = 2.0 * q[i]

    system = systems.custom(grad, dim=2)
    closure = dict(zip(system._batch.py_func.__code__.co_freevars, system._batch.py_func.__closure__))
    jitted = closure["jitted"].cell_contents
    assert len(jitted.signatures) == 1
    assert system.grad(np.ones((3, 2))).tolist() == [[2.0, 2.0]] * 3
    assert len(jitted.signatures) == 1


# ---------------------------------------------------------------------------- submodules

def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", ["constraints", "diffusion", "metrics", "datasets", "linear", "analysis", "clusters"])
def test_import_sdekit_reaches_each_submodule(name):
    done = _python(f"import sys, sdekit; m = sdekit.{name}; "
                   f"assert m is sys.modules['sdekit.{name}']; assert '{name}' in dir(sdekit); "
                   f"print('torch' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]  # none of them imports torch


def test_import_sdekit_does_not_import_torch_and_sdekit_torch_does():
    done = _python("import sys, sdekit; t = 'torch' in sys.modules; o = sdekit.torch.SGLD; "
                   "print(t, 'torch' in sys.modules)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True"]


def test_sdekit_torch_without_torch_says_so():
    done = _python("import sys; sys.modules['torch'] = None; import sdekit; sdekit.torch")
    assert done.returncode != 0
    assert "ModuleNotFoundError: sdekit.torch needs PyTorch" in done.stderr, done.stderr


def test_unknown_attribute_is_still_an_attribute_error():
    assert not hasattr(sdekit, "no_such_module")
    with pytest.raises(AttributeError, match="no_such_module"):
        sdekit.no_such_module
