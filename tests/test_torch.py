"""Tests of the torch adapter (sdekit.torch), the data sets and ``sdekit train``.

Statistical tests compare with closed forms at 4.5 standard errors; under
``pytest --break-letter=O`` (the Euler O step, see conftest.py) the tests marked
``statistical`` fail.
"""
import copy
import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import sdekit.operators as ops  # noqa: E402
from sdekit import datasets, letters  # noqa: E402
from sdekit.constraints import Circle  # noqa: E402
from sdekit import torch as st  # noqa: E402
from sdekit.torch import philox_normals  # noqa: E402
from conftest import assert_within  # noqa: E402


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is faster and immune to other processes' load."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mlp(seed=0, hidden=8, dtype=torch.float64):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, 1)).to(dtype)


def _closure(opt, model, X, y):
    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(X).squeeze(-1), y)
        loss.backward()
        return loss
    return closure


def _quadratic_closure(opt, tensors, K):
    """L = sum over rows of x K x^T / 2, x = the concatenated tensors (one row per path)."""
    K = torch.as_tensor(K, dtype=torch.float64)

    def closure():
        opt.zero_grad()
        x = torch.cat(tensors, dim=1)
        loss = 0.5 * ((x @ K) * x).sum()
        loss.backward()
        return loss
    return closure


# ----------------------------------------------------------------------------- exact results

def test_baoab_at_zero_temperature_is_heavy_ball_sgd():
    r"""BAOAB with kT = 0 is torch SGD with momentum mu = e^{-gamma h}, lr = h^2 (1 + mu)/2.

    With u_n = p_n - (h/2) g_n (the momentum after the first half kick) one BAOAB
    step with kT = 0 reads q_{n+1} = q_n + (h/2)(1 + c) u_n, u_{n+1} = c u_n - h g_{n+1},
    c = e^{-gamma h}. With w_n = -u_n / h: w_n = c w_{n-1} + g_n and
    q_{n+1} = q_n - h^2 (1 + c)/2 w_n, which is SGD's v = mu v + g, theta -= lr v.
    BAOAB starts from p_0 = 0, so w_0 = g_0 / 2; torch starts its buffer at g_0, so
    we give torch the buffer -g_0 / (2 mu) (then mu * buf + g_0 = g_0 / 2).
    """
    h, gamma = 0.3, 0.7
    mu = math.exp(-gamma * h)
    lr = h * h * (1 + mu) / 2
    assert st.sgd_equivalent(lr, mu) == pytest.approx((h, gamma), rel=1e-14)
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(64, 2, generator=gen, dtype=torch.float64)
    y = (X[:, 0] * X[:, 1] > 0).double()
    a, b = _mlp(0), _mlp(0)
    opt_a = st.SDEOptimizer(a.parameters(), scheme="BAOAB", lr=h, gamma=gamma, kT=0.0, seed=0)
    opt_b = torch.optim.SGD(b.parameters(), lr=lr, momentum=mu)
    closure_b = _closure(opt_b, b, X, y)
    closure_b()
    for p in b.parameters():
        opt_b.state[p]["momentum_buffer"] = -p.grad.clone() / (2 * mu)
    closure_a = _closure(opt_a, a, X, y)
    for _ in range(100):
        opt_a.step(closure_a)
        opt_b.step(closure_b)
    diff = max(float((pa - pb).detach().abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))
    scale = max(float(p.detach().abs().max()) for p in a.parameters())
    assert diff <= 1e-12 * scale, diff


def _reference_adlala(model, X, y, h, tau1, tau2, gamma, sigma_A, eps, xi0, gen, n_steps):
    """The reference code's per-step sequence (ALGORITHMS.md sec. 3), written out with
    the operators' functions, one tensor at a time, with the exact O over h/2."""
    params = list(model.parameters())
    first, rest = params[:2], params[2:]

    def grad():
        for p in params:
            p.grad = None
        with torch.enable_grad():
            torch.nn.functional.binary_cross_entropy_with_logits(model(X).squeeze(-1), y).backward()
        return [p.grad.clone() for p in params]

    with torch.no_grad():
        mom = [torch.zeros_like(p) for p in params]
        xi = [torch.tensor(xi0, dtype=torch.float64) for _ in first]
        g = grad()
        mom = [ops.kick(m, -gi, h / 2) for m, gi in zip(mom, g)]          # p = -(h/2) grad L
        t = ops.bind(torch.exp, torch.expm1, torch.sqrt)
        for _ in range(n_steps):
            for i, q in enumerate(first):
                q.copy_(ops.drift(q, mom[i], h / 2, 1.0))
            noise = torch.randn(sum(q.numel() for q in first), generator=gen, dtype=torch.float64)
            chunks = noise.split([q.numel() for q in first])
            for i, q in enumerate(first):
                c, s = t.ou_coefficients(xi[i], h / 2, sigma_A)
                mom[i] = ops.ou(mom[i], c, s, 1.0, chunks[i].view_as(q))
            for i, q in enumerate(first):
                xi[i] = ops.thermostat(xi[i], (mom[i] * mom[i]).sum(), q.numel(), tau1, eps, h)
            noise = torch.randn(sum(q.numel() for q in first), generator=gen, dtype=torch.float64)
            chunks = noise.split([q.numel() for q in first])
            for i, q in enumerate(first):
                c, s = t.ou_coefficients(xi[i], h / 2, sigma_A)
                mom[i] = ops.ou(mom[i], c, s, 1.0, chunks[i].view_as(q))
                q.copy_(ops.drift(q, mom[i], h / 2, 1.0))
            c, s = ops.ou_coefficients(gamma, h, math.sqrt(2 * gamma * tau2))
            noise = torch.randn(sum(q.numel() for q in rest), generator=gen, dtype=torch.float64)
            chunks = noise.split([q.numel() for q in rest])
            for k, q in enumerate(rest):
                i = 2 + k
                q.copy_(ops.drift(q, mom[i], h / 2, 1.0))
                mom[i] = ops.ou(mom[i], float(c), float(s), 1.0, chunks[k].view_as(q))
                q.copy_(ops.drift(q, mom[i], h / 2, 1.0))
            g = grad()
            mom = [ops.kick(m, -gi, h) for m, gi in zip(mom, g)]             # merged kicks
        mom = [ops.kick(m, gi, h / 2) for m, gi in zip(mom, g)]              # back to on-step p
    return mom, xi


def test_adlala_follows_the_reference_sequence():
    """AdLaLa = the reference code's per-step sequence, to rounding (same random numbers)."""
    gen = torch.Generator().manual_seed(3)
    X = torch.randn(32, 2, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > X[:, 1]).double()
    a, b = _mlp(2), _mlp(2)
    settings = dict(lr=0.25, tau1=1e-3, tau2=1e-3, gamma=0.3, sigma_A=0.05, eps=0.5, xi0=0.1)
    opt = st.AdLaLa(a, seed=11, noise="torch", **settings)      # the reference draws from torch's generator
    assert [g["scheme"] for g in opt.param_groups] == ["BAODOAB", "BAOAB"]
    assert len(opt.param_groups[0]["params"]) == 2           # first Linear: weight and bias
    closure = _closure(opt, a, X, y)
    for _ in range(5):
        opt.step(closure)
    mom, xi = _reference_adlala(b, X, y, 0.25, 1e-3, 1e-3, 0.3, 0.05, 0.5, 0.1,
                                torch.Generator().manual_seed(11), 5)
    for pa, pb, m in zip(a.parameters(), b.parameters(), mom):
        torch.testing.assert_close(pa, pb, rtol=1e-13, atol=1e-15)
        torch.testing.assert_close(opt.state[pa]["momentum"], m, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(opt.xi(0), torch.stack(xi), rtol=1e-13, atol=1e-15)


def test_lazy_force_one_gradient_per_step():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(16, 2, generator=gen, dtype=torch.float64)
    y = (X[:, 0] > 0).double()
    for make, calls in ((lambda m: st.AdLaLa(m, seed=0), 11), (lambda m: st.SGLD(m, seed=0), 10),
                        (lambda m: st.SDEOptimizer(m.parameters(), scheme="OBABO", seed=0), 11)):
        model = _mlp()
        opt = make(model)
        count = [0]
        inner = _closure(opt, model, X, y)

        def closure():
            count[0] += 1
            return inner()
        for _ in range(10):
            loss = opt.step(closure)
        assert count[0] == calls
        assert loss.ndim == 0


def test_sgld_step_and_lol_overdamped_limit():
    """SGLD: theta - h grad + sqrt(2 h kT) R. LOL's second layer: LM with step h^2/2."""
    K = torch.tensor([[1.5]], dtype=torch.float64)
    q = torch.full((5, 1), 0.8, dtype=torch.float64, requires_grad=True)
    for noise in ("torch", "philox"):   # R: torch's generator seeded 4, or Philox key (4, 0), draw 0
        q = torch.full((5, 1), 0.8, dtype=torch.float64, requires_grad=True)
        opt = st.SGLD([q], lr=0.1, kT=0.3, seed=4, noise=noise)
        opt.step(_quadratic_closure(opt, [q], K))
        R = torch.empty(5, dtype=torch.float64)
        if noise == "torch":
            R.normal_(generator=torch.Generator().manual_seed(4))
        else:
            philox_normals.fill(R.numpy(), (4, 0), 0)
        expected = ops.euler_maruyama(torch.full((5, 1), 0.8, dtype=torch.float64), -1.5 * 0.8, 0.1, 0.3,
                                      R.view(5, 1))
        torch.testing.assert_close(q.detach(), expected, rtol=1e-15, atol=1e-15)

    # LOL, second layer (gamma = inf): with o_n = sqrt(tau2) R_n the momentum redrawn at step n,
    # the on-step momentum is P_n = o_n - (h/2) grad(Q_n), and the positions follow the
    # Leimkuhler-Matthews step with time step h^2/2:
    # Q_{n+1} = Q_n - (h^2/2) grad(Q_n) + (h/2)(o_n + o_{n+1}).
    h, tau2 = 0.3, 0.2
    q1 = torch.zeros(4000, 1, dtype=torch.float64, requires_grad=True)
    q2 = torch.ones(4000, 1, dtype=torch.float64, requires_grad=True)
    K = torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    opt = st.LOL([[q1], [q2]], lr=h, gamma1=1.0, tau1=0.1, tau2=tau2, seed=5)
    assert opt.param_groups[1]["gamma"] == math.inf
    closure = _quadratic_closure(opt, [q1, q2], K)
    Q, O = [], []
    for _ in range(5):
        opt.step(closure)
        Q.append(q2.detach().clone())
        O.append(opt.state[q2]["momentum"] + h / 2 * 2.0 * Q[-1])
    for n in range(1, 4):
        lm = Q[n] - h * h / 2 * 2.0 * Q[n] + h / 2 * (O[n] + O[n + 1])
        torch.testing.assert_close(Q[n + 1], lm, rtol=1e-13, atol=1e-13)
    assert abs(float(O[-1].var()) / tau2 - 1) < 0.1          # o_n ~ N(0, tau2): 4000 samples


# ----------------------------------------------------------------------------- statistics

def _stationary_sample(scheme, K, h, gamma, kT, n_paths=20_000, n_steps=250, seed=0):
    d = K.shape[0]
    q = torch.zeros(n_paths, d, dtype=torch.float64, requires_grad=True)
    opt = st.SDEOptimizer([q], scheme=scheme, lr=h, gamma=gamma, kT=kT, seed=seed)
    closure = _quadratic_closure(opt, [q], K)
    for _ in range(n_steps):
        opt.step(closure)
    return q.detach().numpy(), opt.state[q]["momentum"].numpy()


def _second_moments(x):
    """Means of x_i x_j over the rows (mean zero is known) and their standard errors."""
    prods = x[:, :, None] * x[:, None, :]
    return prods.mean(axis=0), prods.std(axis=0, ddof=1) / math.sqrt(len(x))


@pytest.mark.statistical
@pytest.mark.parametrize("scheme", ["BAOAB", "OBABO"])
def test_samples_gaussian_with_known_discretization_bias(scheme):
    """On L = q K q / 2 with exact gradients, the on-step (q, p) of BAOAB / OBABO have the
    closed-form stationary covariances (Leimkuhler & Matthews 2013):
    BAOAB: <qq> = kT K^-1, <pp> = kT (I - h^2 K / 4); OBABO: <qq> = kT (K (I - h^2 K/4))^-1, <pp> = kT I.
    20 000 independent paths (the rows of one parameter tensor), 250 steps from q = p = 0."""
    K = np.array([[2.0, 0.6], [0.6, 1.0]])
    h, gamma, kT = 0.5, 1.0, 0.7
    q, p = _stationary_sample(scheme, K, h, gamma, kT)
    I = np.eye(2)
    if scheme == "BAOAB":
        cov_q, cov_p = kT * np.linalg.inv(K), kT * (I - h * h * K / 4)
    else:
        cov_q, cov_p = kT * np.linalg.inv(K @ (I - h * h * K / 4)), kT * I
    mq, sq = _second_moments(q)
    mp, sp = _second_moments(p)
    assert_within(mq, sq, cov_q, what=f"{scheme} <q q^T>")
    assert_within(mp, sp, cov_p, what=f"{scheme} <p p^T>")
    # the bias is resolved: <pp> differs from kT I by many standard errors for BAOAB
    if scheme == "BAOAB":
        assert np.max(np.abs(mp - kT * I) / sp) > 10


@pytest.mark.statistical
@pytest.mark.parametrize("scheme", ["EM", "LM"])
def test_overdamped_groups_sample_known_laws(scheme):
    """EM: <q^2> = kT / (w^2 (1 - h w^2 / 2)); LM: <q^2> = kT / w^2 exactly
    (Leimkuhler, Matthews & Stoltz 2016). 20 000 paths, 300 steps from q = 0."""
    w2, h, kT = 1.5, 0.2, 0.5
    q = torch.zeros(20_000, 1, dtype=torch.float64, requires_grad=True)
    opt = st.SDEOptimizer([q], scheme=scheme, lr=h, kT=kT, seed=3)
    closure = _quadratic_closure(opt, [q], np.array([[w2]]))
    for _ in range(300):
        opt.step(closure)
    m, s = _second_moments(q.detach().numpy())
    exact = kT / w2 / (1 - h * w2 / 2) if scheme == "EM" else kT / w2
    assert_within(m, s, [[exact]], what=f"{scheme} <q^2>")


@pytest.mark.statistical
def test_partitioned_groups_share_gradients_and_sample_the_exact_chain_law():
    """Two groups (one coordinate each) with their own gamma and kT, coupled through K:
    compare with sdekit.linear.stationary_covariance (per-coordinate gamma, kT)."""
    linear = pytest.importorskip("sdekit.linear")
    K = np.array([[1.5, 0.5], [0.5, 1.0]])
    h, gammas, kTs = 0.4, [0.5, 3.0], [0.3, 0.6]
    n = 20_000
    q1 = torch.zeros(n, 1, dtype=torch.float64, requires_grad=True)
    q2 = torch.zeros(n, 1, dtype=torch.float64, requires_grad=True)
    opt = st.SDEOptimizer([{"params": [q1], "gamma": gammas[0], "kT": kTs[0]},
                           {"params": [q2], "gamma": gammas[1], "tau": kTs[1], "scheme": "BAOAB"}],
                          lr=h, seed=1)
    closure = _quadratic_closure(opt, [q1, q2], K)
    for _ in range(250):
        opt.step(closure)
    x = torch.cat([q1, q2, opt.state[q1]["momentum"], opt.state[q2]["momentum"]], dim=1).detach().numpy()
    exact = linear.stationary_covariance("BAOAB", K, h, gamma=np.array(gammas), kT=np.array(kTs))
    m, s = _second_moments(x)
    assert_within(m, s, exact, what="partitioned BAOAB (q1, q2, p1, p2)")


@pytest.mark.statistical
def test_adlala_thermostat_settles_at_sigma_A_squared_over_two_tau():
    r"""With exact gradients the stationary law of each first-layer xi is
    N(sigma_A^2 / (2 tau1), eps tau1) (Jones & Leimkuhler 2011): its time average,
    with a batch-means error bar, matches sigma_A^2 / (2 tau1) = 0.5.

    Settings for fast relaxation: linearising, xi and K = p.p obey
    lambda^2 + 2 xi* lambda + 2 eps N tau1 = 0, so eps N tau1 ~ 0.1 relaxes in a few
    time units. A soft quadratic loss (stiffness 0.05) keeps the discretization bias
    (relative O(h^2 k)) far below the error bar."""
    tau1, sigma_A, eps, h, k = 1e-4, 0.01, 1.0, 0.25, 0.05
    gen = torch.Generator().manual_seed(0)
    w = (0.1 * torch.randn(1000, generator=gen, dtype=torch.float64)).requires_grad_()
    b = (0.1 * torch.randn(400, generator=gen, dtype=torch.float64)).requires_grad_()
    v = (0.1 * torch.randn(50, generator=gen, dtype=torch.float64)).requires_grad_()
    opt = st.AdLaLa([[w, b], [v]], lr=h, tau1=tau1, tau2=tau1, gamma=1.0, sigma_A=sigma_A, eps=eps, xi0=0.1,
                    seed=2)

    def closure():
        opt.zero_grad()
        loss = 0.5 * k * (w.square().sum() + b.square().sum() + v.square().sum())
        loss.backward()
        return loss
    burn, n_steps = 1000, 8000
    trace = torch.empty(n_steps, 2, dtype=torch.float64)
    for n in range(burn + n_steps):
        opt.step(closure)
        if n >= burn:
            trace[n - burn] = opt.xi(0)
    batches = trace.numpy().reshape(20, -1, 2).mean(axis=1)
    mean, se = batches.mean(axis=0), batches.std(axis=0, ddof=1) / math.sqrt(len(batches))
    assert_within(mean, se, [sigma_A ** 2 / (2 * tau1)] * 2, what="AdLaLa xi (weight, bias)")
    assert np.all(se < 0.01)


# ----------------------------------------------------------------------------- state

def test_state_dict_round_trip_is_bitwise():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(200, 2, generator=gen)
    y = (X.norm(dim=1) > 1).float()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt = st.AdLaLa(model, seed=5)
    batches = torch.Generator().manual_seed(9)
    batch = {}

    def make_closure(opt, model):
        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(batch["X"]).squeeze(-1), batch["y"])
            loss.backward()
            return loss
        return closure

    def run(opt, model, gen, n):
        closure = make_closure(opt, model)
        for _ in range(n):
            idx = torch.randint(0, 200, (10,), generator=gen)
            batch["X"], batch["y"] = X[idx], y[idx]
            opt.step(closure)
        return [p.detach().clone() for p in model.parameters()]

    run(opt, model, batches, 50)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "model": model.state_dict(), "batches": batches.get_state()}, buf)
    after = run(opt, model, batches, 100)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)          # tensors and numbers only: no pickled objects
    torch.manual_seed(1)
    model2 = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    opt2 = st.AdLaLa(model2, seed=123)
    model2.load_state_dict(saved["model"])
    opt2.load_state_dict(saved["opt"])
    gen2 = torch.Generator()
    gen2.set_state(saved["batches"])
    again = run(opt2, model2, gen2, 100)
    for a, b in zip(after, again):
        assert torch.equal(a, b)
    assert opt2.steps_taken == 150
    for p, p2 in zip(model.parameters(), model2.parameters()):
        for key in opt.state[p]:
            assert torch.equal(opt.state[p][key], opt2.state[p2][key]), key


def test_seed_reproducible_and_generator_argument():
    outs = []
    for kwargs in ({"seed": 3}, {"seed": 3}, {"seed": 3, "noise": "torch"},
                   {"generator": torch.Generator().manual_seed(3)}, {"seed": 4}):
        q = torch.ones(10, 1, dtype=torch.float64, requires_grad=True)
        opt = st.SDEOptimizer([q], lr=0.2, kT=1.0, **kwargs)
        assert opt.noise == ("torch" if "noise" in kwargs or "generator" in kwargs else "philox")
        closure = _quadratic_closure(opt, [q], np.eye(1))
        for _ in range(5):
            opt.step(closure)
        outs.append(q.detach().clone())
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[2], outs[3])     # same seed, same stream
    assert not torch.equal(outs[0], outs[2]) and not torch.equal(outs[0], outs[4])


# ----------------------------------------------------------------------------- training

def test_quick_training_adlala_beats_chance_on_four_turn_spiral():
    """AdLaLa (reference settings) on the 4-turn spiral, 3000 steps of 20%-batches.

    Chance is 0.5; with 1000 balanced test points the standard deviation of the test
    accuracy of a coin-flipping classifier is 0.016, so 0.6 is six standard
    deviations above chance. (A linear classifier cannot do better than chance on
    the point-symmetric spirals either.)"""
    from sdekit import train

    args = train.parser().parse_args(["--turns", "4", "--optimizer", "adlala", "--steps", "3000",
                                      "--batch-frac", "0.2", "--quiet", "--seed", "0"])
    res = train.train(args)
    assert res["test_accuracy"] > 0.6, res["test_accuracy"]


def test_train_main_writes_picture(tmp_path, capsys):
    from sdekit.train import main

    assert main(["--optimizer", "sgld", "--steps", "50", "--hidden", "10", "--quiet", "--out", str(tmp_path)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert (tmp_path / "spirals_sgld_seed0.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="--steps"):
        main(["--steps", "0"])
    with pytest.raises(ValueError, match="--optimizer"):
        main(["--optimizer", "rmsprop"])
    with pytest.raises(ValueError, match="--batch-frac"):
        main(["--batch-frac", "1.5"])


def test_datasets():
    X, y = datasets.spirals(501, turns=4, seed=1)
    assert X.shape == (501, 2) and y.shape == (501,) and y.sum() == 250
    assert np.all(np.linalg.norm(X, axis=1) < 2.0 + 0.2)
    X2, y2 = datasets.spirals(501, turns=4, seed=1)
    assert np.array_equal(X, X2) and np.array_equal(y, y2)
    # class 0 is class 1 reflected through the origin: the means are ~0 and the radii alike
    assert abs(np.linalg.norm(X[y == 1], axis=1).mean() - np.linalg.norm(X[y == 0], axis=1).mean()) < 0.1
    X, y = datasets.trig(400, a=6, b=2, c=0.0, seed=0)
    assert X.shape == (400, 2) and y.sum() == 200
    assert np.array_equal(y, (X[:, 1] > np.sin(np.pi * 6 * X[:, 0]) / 2).astype(int))
    Xt, yt = datasets.as_tensors(X, y)
    assert Xt.shape == (400, 2) and yt.dtype == Xt.dtype
    with pytest.raises(ValueError, match="n"):
        datasets.spirals(1)
    with pytest.raises(ValueError, match="turns"):
        datasets.spirals(10, turns=-1)


# ----------------------------------------------------------------------------- bad input

def test_bad_inputs_raise_value_errors_naming_the_argument():
    q1 = torch.zeros(3, requires_grad=True)
    q2 = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="scheme: groups' words cannot share gradients"):
        st.SDEOptimizer([{"params": [q1], "scheme": "BAOAB"}, {"params": [q2], "scheme": "ABOBA"}])
    with pytest.raises(ValueError, match="scheme"):
        st.SDEOptimizer([{"params": [q1], "scheme": "BAOAB"}, {"params": [q2], "scheme": "EM"}])
    with pytest.raises(ValueError, match="lr"):
        st.SDEOptimizer([q1], lr=-0.1)
    with pytest.raises(ValueError, match="scheme"):
        st.SDEOptimizer([q1], scheme="BAXAB")
    with pytest.raises(ValueError, match="scheme"):
        st.SDEOptimizer([q1], scheme="BOB")
    with pytest.raises(ValueError, match="kT"):
        st.SDEOptimizer([q1], kT=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        st.SDEOptimizer([q1], gamma=float("nan"))
    with pytest.raises(ValueError, match="gamma"):
        st.SDEOptimizer([q1], scheme="BADODAB", gamma=float("inf"))
    with pytest.raises(ValueError, match="closure"):
        st.SDEOptimizer([q1]).step()
    with pytest.raises(ValueError, match="seed"):
        st.SDEOptimizer([q1], seed=-1)
    with pytest.raises(ValueError, match="model_or_groups"):
        st.AdLaLa([[q1]])
    with pytest.raises(ValueError, match="gamma"):
        st.MultiLayerLangevin([[q1], [q2]], gamma=[1.0, 2.0, 3.0])
    # aligned words with different letters between B's are accepted
    opt = st.SDEOptimizer([{"params": [q1], "scheme": "BADODAB"}, {"params": [q2], "scheme": "OBABO"}])
    assert [g["scheme"] for g in opt.param_groups] == ["BADODAB", "OBABO"]


# ----------------------------------------------------------------------------- letters: the torch hooks

class _Damping(letters.Letter):
    """Z: p <- exp(-gamma delta) p, O without its noise; a user's letter with a torch hook."""

    name, title, update = "Z", "damping", "p *= exp(-gamma ({f}))"
    moves = ("p",)
    coefficients = ("gamma",)

    def torch(self, x, delta, t):
        c = float(x.ops.ou_coefficients(x.at("gamma", t), delta, 0.0)[0])
        torch._foreach_mul_(x.moms, c)


class _Shear(letters.CoordinateLetter):
    """Y: q += delta p per coordinate; no torch hook (numpy, kernels and linear only)."""

    name, title, update = "Y", "shear", "q += ({f}) p"
    inputs, moves = ("q", "p"), ("q",)
    flow = staticmethod(lambda q, p, delta: q + delta * p)


@pytest.fixture
def user_letters():
    added = [letters.register(_Damping()), letters.register(_Shear())]
    yield
    for letter in added:
        letters.unregister(letter.name)


def test_letters_without_a_torch_hook_are_refused_when_the_group_is_added(user_letters):
    q1 = torch.zeros(3, requires_grad=True)
    q2 = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match=r"letter 'Y' \(shear\) cannot run in the torch optimizer.*no torch\(\) hook"):
        st.SDEOptimizer([q1], scheme="BYOYB")
    opt = st.SDEOptimizer([q1])
    with pytest.raises(ValueError, match=r"letter 'Y'.*torch optimizer"):
        opt.add_param_group({"params": [q2], "scheme": [("B", 0.5), ("Y", 1.0), ("O", 1.0), ("B", 0.5)]})
    assert len(opt.param_groups) == 1
    assert "Q" not in letters.alphabet()
    with pytest.raises(ValueError, match=r"unknown letter.*'Q'.*torch optimizer"):
        st.SDEOptimizer([q1], scheme="BAQAB")
    # a user letter (constrained=False) is refused on a constrained group
    with pytest.raises(ValueError, match=r"constraint: letter 'Z'"):
        st.SDEOptimizer([{"params": [torch.zeros(3, requires_grad=True)], "constraint": Circle(1.0)}], scheme="BAZAB")


def test_a_user_letter_with_a_torch_hook_runs_in_the_optimizer(user_letters):
    """BAZAB (Z: the noiseless O, the user's hook) is BAOAB at kT = 0, bit for bit; rate 2 too."""
    results = []
    for word in ("BAOAB", "BAZAB"):
        model = _mlp(seed=3)
        X = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        y = (X[:, 0] > 0).to(torch.float64)
        groups = [{"params": list(model[0].parameters()), "rate": 2}, {"params": list(model[2].parameters())}]
        opt = st.SDEOptimizer(groups, scheme=word, lr=0.1, gamma=lambda t: 1.0 + t, kT=0.0, seed=0)
        closure = _closure(opt, model, X, y)
        for _ in range(7):
            opt.step(closure)
        results.append([p.detach().clone() for p in model.parameters()]
                       + [opt.state[p]["momentum"].clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_the_optimizer_reads_the_alphabet_it_finds(user_letters):
    """A word's layout is cached, but a letter replaced in the alphabet is seen by the next optimizer."""
    q = torch.zeros(3, requires_grad=True)
    st.SDEOptimizer([q], scheme="BAZAB")

    class NoHook(letters.Letter):
        name, title, moves = "Z", "damping without torch", ("p",)

    letters.register(NoHook(), replace=True)
    with pytest.raises(ValueError, match=r"letter 'Z' \(damping without torch\).*torch optimizer"):
        st.SDEOptimizer([q], scheme="BAZAB")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_adlala_runs_on_device_and_round_trips():
    """AdLaLa on CUDA tensors: the state (momenta, xi, generator) lives on the device and
    a state_dict round trip continues bit for bit."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 32), torch.nn.ReLU(), torch.nn.Linear(32, 1)).to(device)
    X = torch.randn(64, 2, device=device)
    y = (X[:, 0] > 0).float()
    opt = st.AdLaLa(model, seed=0)
    closure = _closure(opt, model, X, y)
    for _ in range(20):
        opt.step(closure)
    assert opt.xi(0).device.type == "cuda" and opt.generator.device.type == "cuda"
    saved = copy.deepcopy(opt.state_dict())
    params = copy.deepcopy(model.state_dict())
    for _ in range(20):
        opt.step(closure)
    after = [p.detach().clone() for p in model.parameters()]
    model.load_state_dict(params)
    opt.load_state_dict(saved)
    for _ in range(20):
        opt.step(closure)
    for a, b in zip(after, model.parameters()):
        assert torch.equal(a, b)
