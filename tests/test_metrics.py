"""Tests of sdekit.metrics.linear_interpolation (exact: no sampling)."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdekit.metrics import DEFAULT_ALPHAS, linear_interpolation  # noqa: E402

ALPHAS = np.linspace(-0.5, 1.5, 9)


def _mse(out, y):
    return torch.mean((out.squeeze(-1) - y) ** 2)


def _net(widths, seed):
    torch.manual_seed(seed)
    mods = []
    for a, b in zip(widths[:-1], widths[1:]):
        mods += [torch.nn.Linear(a, b), torch.nn.Tanh()]
    return torch.nn.Sequential(*mods[:-1]).double()


def _data(seed, n=64, d=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)


def _params(model, scale, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: scale * torch.randn(p.shape, generator=g, dtype=p.dtype) for k, p in model.named_parameters()}


def _loss_with(model, theta, data):
    m = _net([3, 5, 4, 1], 0)
    m.load_state_dict(theta)
    with torch.no_grad():
        return float(_mse(m(data[0]), data[1]))


def test_endpoints_are_the_losses_at_theta0_and_theta1():
    model = _net([3, 5, 4, 1], 0)
    data = _data(1)
    t0, t1 = _params(model, 0.3, 2), _params(model, 1.0, 3)
    res = linear_interpolation(model, t0, t1, _mse, data, alphas=ALPHAS)
    i0, i1 = int(np.flatnonzero(ALPHAS == 0.0)[0]), int(np.flatnonzero(ALPHAS == 1.0)[0])
    exact0, exact1 = _loss_with(model, t0, data), _loss_with(model, t1, data)
    assert res.whole[i0] == pytest.approx(exact0, rel=1e-14, abs=0)
    assert res.whole[i1] == pytest.approx(exact1, rel=1e-14, abs=0)
    assert set(res.layers) == {"0 (Linear)", "2 (Linear)", "4 (Linear)"}
    for name, curve in res.layers.items():
        # at alpha = 1 every layer is at theta1; at alpha = 0 only this layer is reset to theta0
        assert curve[i1] == pytest.approx(exact1, rel=1e-14, abs=0)
        prefix = name.split(" ")[0] + "."
        mixed = {k: (t0[k] if k.startswith(prefix) else t1[k]) for k in t1}
        assert curve[i0] == pytest.approx(_loss_with(model, mixed, data), rel=1e-14, abs=0)


def test_linear_model_with_square_loss_gives_the_exact_parabola():
    # f = w.x + b is linear in theta, so the residual is (1-a) r0 + a r1 and the loss its mean square
    model = torch.nn.Linear(3, 1).double()
    X, y = _data(4)
    t0, t1 = _params(model, 0.5, 5), _params(model, 1.5, 6)
    res = linear_interpolation(model, t0, t1, _mse, (X, y), alphas=ALPHAS, per_layer=False)
    r0 = (X @ t0["weight"].T).squeeze(-1) + t0["bias"] - y
    r1 = (X @ t1["weight"].T).squeeze(-1) + t1["bias"] - y
    exact = [float(torch.mean(((1 - a) * r0 + a * r1) ** 2)) for a in ALPHAS]
    np.testing.assert_allclose(res.whole, exact, rtol=1e-12, atol=0)
    assert res.layers == {}


def test_one_layer_of_a_deep_linear_network_moves_on_a_parabola():
    # output is affine in any single layer's parameters, so each per-layer curve is quadratic:
    # third differences on a uniform alpha grid vanish (the whole-network curve is quartic)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)).double()
    data = _data(7)
    res = linear_interpolation(model, _params(model, 1.0, 8), _params(model, 1.0, 9), _mse, data,
                               alphas=np.linspace(-0.5, 1.5, 11))
    for curve in res.layers.values():
        assert np.max(np.abs(np.diff(curve, 3))) < 1e-12 * np.max(np.abs(curve))
    assert np.max(np.abs(np.diff(res.whole, 3))) > 1e-6 * np.max(np.abs(res.whole))


def test_model_parameters_and_mode_are_restored():
    model = _net([3, 5, 1], 10)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = linear_interpolation(model, _params(model, 1.0, 11), list(model.parameters()), _mse, _data(12))
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    np.testing.assert_array_equal(res.alphas, DEFAULT_ALPHAS)
    assert res.alphas[0] == -0.5 and res.alphas[-1] == 1.5
    # restored after an error inside loss_fn too
    def failing(out, y):
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError, match="boom"):
        linear_interpolation(model, _params(model, 1.0, 11), _params(model, 1.0, 13), failing, _data(12))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_table_and_plot():
    import matplotlib
    matplotlib.use("Agg")
    model = _net([3, 5, 1], 14)
    res = linear_interpolation(model, _params(model, 1.0, 15), _params(model, 1.0, 16), _mse, _data(17),
                               alphas=[0.0, 0.5, 1.0])
    lines = res.table().splitlines()
    assert lines[0].split()[:2] == ["alpha", "whole"] and len(lines) == 4
    assert float(lines[3].split()[1]) == pytest.approx(res.whole[2], rel=1e-5)
    ax = res.plot(title="t")
    assert ax.get_ylabel() == "loss" and "alpha" in ax.get_xlabel()
    assert len(ax.get_lines()) >= 1 + len(res.layers)
    import matplotlib.pyplot as plt
    plt.close(ax.figure)


@pytest.mark.parametrize("kwargs, match", [
    (dict(model="net"), "model"),
    (dict(model=torch.nn.ReLU()), "model"),
    (dict(theta0={"weight": torch.zeros(1, 3)}), "theta0"),
    (dict(theta1=[torch.zeros(1, 3)]), "theta1"),
    (dict(theta1={"weight": torch.zeros(2, 3), "bias": torch.zeros(1)}), "theta1"),
    (dict(theta0={"weight": torch.full((1, 3), float("nan")), "bias": torch.zeros(1)}), "theta0"),
    (dict(theta0=3.0), "theta0"),
    (dict(loss_fn="mse"), "loss_fn"),
    (dict(data=torch.zeros(3)), "data"),
    (dict(alphas=[]), "alphas"),
    (dict(alphas=[[0.0, 1.0]]), "alphas"),
    (dict(alphas=[0.0, float("inf")]), "alphas"),
    (dict(per_layer="yes"), "per_layer"),
])
def test_bad_input(kwargs, match):
    model = torch.nn.Linear(3, 1).double()
    args = dict(model=model, theta0=_params(model, 1.0, 0), theta1=_params(model, 1.0, 1), loss_fn=_mse,
                data=_data(2))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        linear_interpolation(**args)
