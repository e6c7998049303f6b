"""Pinned numbers of the torch adapter: its state_dicts and trajectories stay bit for bit.

The arrays in ``tests/data/torch_pinned.npz`` and the settings in
``tests/data/torch_pinned.json`` were produced by ``sdekit/torch.py`` at commit a365da7 (the parent of the pin commit),
before the adapter was split into the package ``sdekit/torch/`` (issue 17), by

    PYTHONPATH=. python tests/test_torch_pinned.py --write

Each case runs 12 mini-batch steps of an optimizer on a tiny MLP (float64, one thread),
saves ``state_dict()``, loads it into a fresh optimizer and runs 4 steps more: every tensor
of both state dicts (momenta, xi, slacks, kept gradients, generator state, steps, clocks),
the parameters and the losses are compared bit for bit (``np.array_equal`` on the raw
bytes' values), and the state dict's non-tensor entries (its param_groups' settings, the
per-tensor keys) exactly. Settings that a later change added to the groups are listed in
:data:`ADDED_SETTINGS` with their value for the pinned runs.
"""
import json
import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdekit import torch as st  # noqa: E402
from sdekit.constraints import Circle, Sphere, Stiefel  # noqa: E402

DATA = pathlib.Path(__file__).parent / "data"
NPZ, JSON = DATA / "torch_pinned.npz", DATA / "torch_pinned.json"

ADDED_SETTINGS = {"multirate": ("published", "impulse")}
"""Group settings added after the pin, with the values they may have in the pinned runs: the
pinned multirate case ran the rule that is now called "impulse" (issue 17 made the published
rule of Vlaar & Leimkuhler the default and kept this one under that name; at rate 1 the two
are the same scheme)."""

TORCH_NOISE = {"noise": "torch"}
"""The pinned runs' normals: torch's generator (the only noise when they were pinned; issue 17
made the Philox stream the CPU default and kept this one as ``noise="torch"``)."""

PINNED_MULTIRATE = {"multirate": "impulse"}
"""The pinned multirate case's rule (the only rule when it was pinned; named since issue 17)."""


def _model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4), torch.nn.Tanh(),
                               torch.nn.Linear(4, 2)).double()


def _weights_biases(model):
    return [p for p in model.parameters() if p.dim() >= 2], [p for p in model.parameters() if p.dim() < 2]


def _layers(model):
    return [list(m.parameters()) for m in model if list(m.parameters())]


def _gamma(t):
    return 0.5 + 0.25 * t


def _kT(t):
    return 1e-3 / (1.0 + t)


CASES = {
    "BAOAB": lambda m: st.SDEOptimizer(m, lr=0.1, gamma=1.0, kT=1e-3, seed=5, **TORCH_NOISE),
    "OBABO": lambda m: st.SDEOptimizer(m, scheme="OBABO", lr=0.1, gamma=2.0, kT=1e-3, seed=5, **TORCH_NOISE),
    "BADODAB": lambda m: st.SDEOptimizer(m, scheme="BADODAB", lr=0.1, gamma=0.5, kT=1e-3, eps=0.5, xi0=0.2, seed=5,
                                         **TORCH_NOISE),
    "AdLaLa": lambda m: st.AdLaLa(m, lr=0.2, seed=5, **TORCH_NOISE),
    "LOL": lambda m: st.LOL(m, lr=0.2, seed=5, **TORCH_NOISE),
    "MultiLayerLangevin": lambda m: st.MultiLayerLangevin(m, lr=0.1, gamma=[1.0, 0.5, 2.0],
                                                          kT=[1e-4, 1e-3, 1e-2], seed=5, **TORCH_NOISE),
    "SGLD": lambda m: st.SGLD(m.parameters(), lr=0.05, sigma=0.05, seed=5, **TORCH_NOISE),
    "LM": lambda m: st.SDEOptimizer(m, scheme="LM", lr=0.05, kT=1e-3, seed=5, **TORCH_NOISE),
    "ConstrainedSGLD-Circle": lambda m: st.ConstrainedSGLD(m, Circle(0.7), lr=0.05, sigma=0.05, seed=5,
                                                           **TORCH_NOISE),
    "Circle-Sphere-Stiefel": lambda m: st.SDEOptimizer(
        [{"params": [_weights_biases(m)[0][0]], "constraint": Stiefel(5, 3)},
         {"params": _weights_biases(m)[0][1:], "constraint": Circle(0.9)},
         {"params": _weights_biases(m)[1][:1], "constraint": Sphere(1.5)},
         {"params": _weights_biases(m)[1][1:], "scheme": "BAODOAB", "gamma": 0.0, "sigma_A": 0.02, "eps": 0.3}],
        lr=0.15, gamma=1.0, kT=1e-3, seed=5, **TORCH_NOISE),
    "multirate-2-3": lambda m: st.SDEOptimizer(
        [{"params": _layers(m)[0], "rate": 2, **PINNED_MULTIRATE},
         {"params": _layers(m)[1], "rate": 3, **PINNED_MULTIRATE},
         {"params": _layers(m)[2]}], lr=0.1, gamma=1.0, kT=1e-3, seed=5, **TORCH_NOISE),
    "scheduled": lambda m: st.SDEOptimizer(m, lr=0.1, gamma=_gamma, kT=_kT, seed=5, **TORCH_NOISE),
}


def _data():
    g = torch.Generator().manual_seed(8)
    X = torch.randn(64, 3, generator=g, dtype=torch.float64)
    y = (X[:, 0] * X[:, 1] + X[:, 2] > 0).long()
    return X, y


def _flatten(sd, prefix, arrays, settings):
    """The state dict's tensors into ``arrays``, its other entries (JSON-able) into ``settings``."""
    for idx in sorted(sd["state"]):
        settings[f"{prefix}.state.{idx}"] = sorted(sd["state"][idx])
        for k, v in sd["state"][idx].items():
            arrays[f"{prefix}.state.{idx}.{k}"] = v.detach().numpy().copy() if isinstance(v, torch.Tensor) else v
    for k, v in sd["sdekit"].items():
        arrays[f"{prefix}.sdekit.{k}"] = v.numpy().copy()
    groups = []
    for g in sd["param_groups"]:
        groups.append({k: (v if not isinstance(v, float) else float.hex(v)) for k, v in sorted(g.items())})
    settings[f"{prefix}.param_groups"] = groups


def run(name, n_first=12, n_second=4, batch=16):
    """The case's arrays and settings (see the module docstring)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = _model()
        X, y = _data()
        opt = CASES[name](model)
        gen = torch.Generator().manual_seed(9)
        arrays, settings, losses = {}, {}, []

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X[idx]), y[idx])
            loss.backward()
            return loss

        for _ in range(n_first):
            idx = torch.randint(0, len(y), (batch,), generator=gen)
            losses.append(float(opt.step(closure).detach()))
        sd = opt.state_dict()
        _flatten(sd, "first", arrays, settings)
        fresh = CASES[name](model)
        fresh.load_state_dict(sd)
        opt = fresh
        for _ in range(n_second):
            idx = torch.randint(0, len(y), (batch,), generator=gen)
            losses.append(float(opt.step(closure).detach()))
        _flatten(opt.state_dict(), "second", arrays, settings)
        for pname, p in model.named_parameters():
            arrays[f"param.{pname}"] = p.detach().numpy().copy()
        arrays["losses"] = np.array(losses)
        return {k: np.asarray(v) for k, v in arrays.items()}, settings
    finally:
        torch.set_num_threads(threads)


def _stored():
    with np.load(NPZ, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(JSON.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_state_dicts_and_trajectories_are_the_pinned_ones(name):
    stored_arrays, stored_settings = _stored()
    arrays, settings = run(name)
    prefix = name + "/"
    mine = {k[len(prefix):]: v for k, v in stored_arrays.items() if k.startswith(prefix)}
    assert mine, f"{name}: not in {NPZ.name}"
    assert sorted(arrays) == sorted(mine), f"{name}: other arrays: {sorted(set(arrays) ^ set(mine))}"
    for k, v in mine.items():
        assert arrays[k].dtype == v.dtype and arrays[k].shape == v.shape, f"{name}: {k}"
        assert np.array_equal(arrays[k], v), f"{name}: {k} differs from the pinned values"
    pinned = stored_settings[name]
    assert sorted(settings) == sorted(pinned)
    for k, v in pinned.items():
        if k.endswith("param_groups"):
            now = [{s: x for s, x in g.items()
                    if not (s in ADDED_SETTINGS and s not in old and x in ADDED_SETTINGS[s])}
                   for g, old in zip(settings[k], v)]
            assert now == v, f"{name}: {k}"
        else:
            assert settings[k] == v, f"{name}: {k}"


def _write():
    arrays, settings = {}, {}
    for name in sorted(CASES):
        a, s = run(name)
        arrays.update({f"{name}/{k}": v for k, v in a.items()})
        settings[name] = s
    DATA.mkdir(exist_ok=True)
    np.savez_compressed(NPZ, **arrays)
    JSON.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(arrays)} arrays of {len(CASES)} cases to {NPZ} and {JSON}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        raise SystemExit("usage: PYTHONPATH=. python tests/test_torch_pinned.py --write")
    _write()
