"""Checkpoints: atomic .npz with checksum; bitwise resume from a file; every bad file refused."""
import json
import os
import zipfile

import numpy as np
import pytest

import sdekit
from sdekit.checkpoint import load, save
from sdekit.systems import DoubleWell

KW = dict(h=0.05, gamma=0.5, kT=1.0, backend="numpy")


@pytest.fixture
def state():
    return sdekit.ensemble("BADODAB", DoubleWell(2), n_steps=30, n_paths=8, seed=2, sigma_A=0.3, **KW).state


@pytest.mark.parametrize("scheme", ["BAOAB", "LM"])
def test_resume_from_file_is_bitwise(tmp_path, scheme):
    whole = sdekit.simulate(scheme, DoubleWell(), n_steps=100, seed=9, **KW)
    half = sdekit.simulate(scheme, DoubleWell(), n_steps=50, seed=9, **KW)
    f = save(tmp_path / "half.npz", half.state)
    rest = sdekit.simulate(scheme, DoubleWell(), n_steps=50, resume=load(f), **KW)
    assert np.array_equal(rest.q, whole.q[51:]) and np.array_equal(rest.state.q, whole.state.q)


def test_round_trip_keeps_every_field(tmp_path, state):
    back = load(save(tmp_path / "s.npz", state))
    for name in ("q", "p", "xi", "force"):
        a, b = getattr(state, name), getattr(back, name)
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert (back.step, back.rng, back.spec, back.backend) == (state.step, state.rng, state.spec, state.backend)


def test_save_is_atomic(tmp_path, state, monkeypatch):
    target = tmp_path / "c.npz"
    save(target, state)
    before = target.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        save(target, state)
    assert target.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]  # no temporary file left behind


def _rewrite(path, edit):
    """Rewrite the npz with the metadata edited by ``edit(meta)``."""
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    edit(meta)
    np.savez(path, __meta__=np.array(json.dumps(meta)), **arrays)


@pytest.mark.parametrize("damage, message", [
    ("truncate", "unreadable"), ("flip", "unreadable|checksum"), ("step", "checksum"),
    ("array", "checksum"), ("version", "version"), ("pickle", "unreadable"), ("foreign", "not an sdekit"),
    ("missing", "no such"), ("empty", "unreadable"),
])
def test_bad_checkpoints_are_refused_naming_the_file(tmp_path, state, damage, message):
    f = tmp_path / "c.npz"
    save(f, state)
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        i = data.index(b"\x93NUMPY", len(data) // 3) + 200  # inside an array's payload
        f.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    elif damage == "step":
        _rewrite(f, lambda m: m.update(step=m["step"] + 1))
    elif damage == "array":
        with np.load(f) as z:
            arrays = {k: z[k] for k in z.files}
        arrays["q"] = arrays["q"] + 1e-12
        np.savez(f, **arrays)
    elif damage == "version":
        _rewrite(f, lambda m: m.update(version=99))
    elif damage == "pickle":
        np.savez(f, __meta__=np.array([{"format": "x"}], dtype=object))
    elif damage == "foreign":
        np.savez(f, q=np.zeros(3))
    elif damage == "missing":
        f.unlink()
    elif damage == "empty":
        f.write_bytes(b"")
    with pytest.raises(ValueError, match=message) as err:
        load(f)
    assert str(f) in str(err.value)


def test_save_refuses_what_is_not_a_state(tmp_path):
    with pytest.raises(ValueError, match="^state"):
        save(tmp_path / "x.npz", {"q": np.zeros(2)})


# ------------------------------------------------------------------ checkpoint_every, interrupts

@pytest.mark.parametrize("backend", ["numpy", "cpu"])
def test_checkpointed_runs_are_the_same_numbers(tmp_path, backend):
    kw = dict(h=0.05, gamma=0.5, kT=1.0, seed=7, backend=backend)
    whole = sdekit.simulate("BAOAB", DoubleWell(), n_steps=100, record_every=5, **kw)
    chunked = sdekit.simulate("BAOAB", DoubleWell(), n_steps=100, record_every=5, checkpoint=tmp_path / "c.npz",
                              checkpoint_every=20, **kw)
    for name in ("t", "q", "p", "p_O", "xi"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))
    assert load(tmp_path / "c.npz").step == 100
    e1 = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=60, n_paths=50, record_every=10, **kw)
    e2 = sdekit.ensemble("BAOAB", DoubleWell(), n_steps=60, n_paths=50, record_every=10,
                         checkpoint=tmp_path / "e.npz", checkpoint_every=30, **kw)
    np.testing.assert_array_equal(e1.q, e2.q)
    for k in e1.mean:
        np.testing.assert_array_equal(e1.mean[k], e2.mean[k])
    np.testing.assert_array_equal(e1.n_alive, e2.n_alive)


def test_interrupt_writes_the_last_chunk_and_resume_completes_the_run(tmp_path):
    kw = dict(h=0.05, gamma=0.5, kT=1.0, backend="numpy")
    whole = sdekit.simulate("BAOAB", DoubleWell(), n_steps=100, seed=3, **kw)
    calls = {"n": 0}

    def ctrl_c(q, p):  # an observable that presses Ctrl-C in the middle of the third chunk
        calls["n"] += 1
        if calls["n"] == 1 + 1 + 20 + 20 + 10:
            raise KeyboardInterrupt
        return q[:, 0]

    f = tmp_path / "c.npz"
    with pytest.raises(KeyboardInterrupt):
        sdekit.simulate("BAOAB", DoubleWell(), n_steps=100, seed=3, checkpoint=f, checkpoint_every=20,
                        observables={"x": ctrl_c}, **kw)
    state = load(f)
    assert state.step == 40  # two whole chunks; the interrupted one is redone
    rest = sdekit.simulate("BAOAB", DoubleWell(), n_steps=60, resume=state, **kw)
    np.testing.assert_array_equal(rest.state.q, whole.state.q)
    np.testing.assert_array_equal(rest.q, whole.q[41:])  # a resumed run has no record 0


@pytest.mark.parametrize("kwargs, name", [
    (dict(checkpoint_every=10), "checkpoint_every"), (dict(checkpoint=3), "checkpoint"),
    (dict(checkpoint="x.npz", checkpoint_every=0), "checkpoint_every"),
    (dict(checkpoint="x.npz", checkpoint_every=15, record_every=10), "checkpoint_every"),
])
def test_bad_checkpoint_arguments(tmp_path, kwargs, name, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=f"^{name}"):
        sdekit.simulate("BAOAB", DoubleWell(), h=0.1, n_steps=30, backend="numpy", **kwargs)
