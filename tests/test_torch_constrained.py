"""Constrained, multirate and time-dependent groups of the torch adapter (sdekit.torch).

Constraints use the core's objects (sdekit.constraints: Circle, Stiefel, Sphere) through
their tensor forms (sdekit.torch.manifolds.tensor_form). Statistical tests compare with
closed forms at 4.5 standard errors computed from independent tensors (elements of one parameter, or a stack of
matrices); under ``pytest --break-letter=O`` or ``R`` (conftest.py) they fail.
"""
import io
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdekit import DivergenceError  # noqa: E402
from sdekit import torch as st  # noqa: E402
from sdekit.constraints import Circle, Constraint, Sphere, Stiefel  # noqa: E402
from sdekit.torch.manifolds import tensor_form  # noqa: E402
from conftest import assert_within  # noqa: E402
from test_torch import _one_thread  # noqa: E402,F401  (autouse: one intra-op thread)


def _tensor(shape, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=gen, dtype=torch.float64)).requires_grad_()


def _loss_closure(opt, loss):
    def closure():
        opt.zero_grad()
        value = loss()
        if value.requires_grad:
            value.backward()
        return value
    return closure


def _mean_se(x):
    """Means over the first axis and their standard errors (independent rows)."""
    x = np.asarray(x)
    return x.mean(axis=0), x.std(axis=0, ddof=1) / math.sqrt(x.shape[0])


# ----------------------------------------------------------------------------- manifolds

def test_constrained_tensors_stay_on_their_manifolds_for_ten_thousand_steps():
    """Circle (with slacks), Stiefel (a stack of transposed W: rows orthonormal) and Sphere
    groups under a quadratic loss with noise: |g| <= 1e-8 and tangent momenta after 10^4 steps."""
    w, V, u = _tensor(20, 0), _tensor((2, 3, 5), 2), _tensor(6, 3)
    targets = [torch.randn(x.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
               for x in (w, V, u)]
    circle, stiefel, sphere = Circle(0.8), Stiefel(5, 3), Sphere(2.0)
    opt = st.SDEOptimizer([{"params": [w], "constraint": circle}, {"params": [V], "constraint": stiefel},
                           {"params": [u], "constraint": sphere}], lr=0.1, gamma=1.0, kT=0.01, seed=1)
    closure = _loss_closure(opt, lambda: sum(0.5 * ((x - t) ** 2).sum() for x, t in zip((w, V, u), targets)))
    for _ in range(10_000):
        opt.step(closure)
    assert tensor_form(circle).residual((w, opt.state[w]["slack"])) <= 1e-8
    assert float(w.detach().abs().max()) <= 0.8
    assert tensor_form(stiefel).residual((V,)) <= 1e-8
    assert tensor_form(sphere).residual((u,)) <= 1e-8 * 2.0
    with torch.no_grad():
        pw, ps = opt.state[w]["momentum"], opt.state[w]["slack_momentum"]
        assert float((w * pw + opt.state[w]["slack"] * ps).abs().max()) <= 1e-10
        X, P = V.mT, opt.state[V]["momentum"].mT
        assert float((X.mT @ P + P.mT @ X).abs().max()) <= 1e-10
        assert abs(float((u * opt.state[u]["momentum"]).sum())) <= 1e-10
    # the motion is not trivial: the weights moved to their (clamped) targets
    assert float((w.detach() - targets[0].clamp(-0.8, 0.8)).abs().max()) < 0.3


def test_tensor_methods_agree_with_the_core_per_path_functions():
    """The tensor versions against the numba per-path ones: Stiefel SHAKE + RATTLE (same
    multipliers, Newton in the core, fixed-point sweeps here) to 1e-10; the circle's exact
    rotation against the core's drift with many geodesic sub-steps (g-BAOAB, K = 2000) to 1e-8."""
    gen = torch.Generator().manual_seed(0)
    stiefel = Stiefel(4, 2)
    W = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    tensor_form(stiefel).start(W)
    P = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    tensor_form(stiefel).rattle((W,), (P,))
    q_core, p_core = stiefel.drift(W.numpy().ravel(), P.numpy().ravel(), 0.2)
    Wt, Pt = W.clone(), P.clone()
    assert tensor_form(stiefel).drift((Wt,), (Pt,), 0.2) > 0
    np.testing.assert_allclose(Wt.numpy().ravel(), q_core, atol=1e-10)
    np.testing.assert_allclose(Pt.numpy().ravel(), p_core, atol=1e-10)
    np.testing.assert_allclose(stiefel.tangent_projection(W, P).numpy(),
                               stiefel.tangent_projection(W.numpy(), P.numpy()), atol=1e-15)

    circle = Circle(1.5)
    w = torch.tensor([0.3, -1.2, 1.5], dtype=torch.float64)
    s, = tensor_form(circle).start(w)
    pw, ps = torch.tensor([0.4, 0.1, -0.7], dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    tensor_form(circle).rattle((w, s), (pw, ps))
    q0, p0 = torch.cat([w, s]).numpy(), torch.cat([pw, ps]).numpy()
    np.testing.assert_allclose(circle.rattle(q0, p0), p0, atol=1e-15)       # already tangent
    q_core, p_core = circle.drift(q0, p0, 0.7, steps=2000)
    tensor_form(circle).drift((w, s), (pw, ps), 0.7)
    np.testing.assert_allclose(torch.cat([w, s]).numpy(), q_core, atol=1e-8)
    np.testing.assert_allclose(torch.cat([pw, ps]).numpy(), p_core, atol=1e-8)
    # ... and g-BAOAB's error shrinks like K^-2 towards it (K = 20: ~1e-6)
    assert np.max(np.abs(torch.cat([w, s]).numpy() - circle.drift(q0, p0, 0.7, steps=20)[0])) > 1e-7


def test_start_projects_onto_the_manifold():
    """Circle: w clamped to [-r, r], slack sqrt(r^2 - w^2); Stiefel: the polar factor; Sphere: rescaled."""
    w = torch.tensor([0.2, -3.0, 0.9], dtype=torch.float64, requires_grad=True)
    W = _tensor((3, 5), 4)           # (p, n): rows orthonormal
    u = torch.tensor([3.0, 4.0], dtype=torch.float64, requires_grad=True)
    polar = torch.linalg.svd(W.detach().mT, full_matrices=False)
    polar = (polar[0] @ polar[2]).mT
    opt = st.SDEOptimizer([{"params": [w], "constraint": Circle(1.0)}, {"params": [W], "constraint": Stiefel(5, 3)},
                           {"params": [u], "constraint": Sphere(1.0)}], lr=0.1, seed=0)
    opt.step(_loss_closure(opt, lambda: torch.zeros((), dtype=torch.float64)))   # no force, p = 0: no motion
    torch.testing.assert_close(w.detach(), torch.tensor([0.2, -1.0, 0.9], dtype=torch.float64), rtol=0, atol=1e-15)
    torch.testing.assert_close(opt.state[w]["slack"], torch.sqrt(1 - w.detach() ** 2), rtol=0, atol=1e-15)
    torch.testing.assert_close(W.detach(), polar, rtol=0, atol=1e-14)
    torch.testing.assert_close(W.detach() @ W.detach().mT, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-14)
    torch.testing.assert_close(u.detach(), torch.tensor([0.6, 0.8], dtype=torch.float64), rtol=0, atol=1e-15)


# ----------------------------------------------------------------------------- invariant laws

@pytest.mark.statistical
def test_circle_without_loss_samples_the_uniform_law():
    """No loss, kT > 0: each (w, s) is uniform on its circle, E[w] = 0, E[w^2] = r^2/2, and its
    tangent momentum is N(0, kT): E[p_w^2 + p_s^2] = kT, E[p_w^2] = kT E[s^2]/r^2 = kT/2.
    20 000 independent weights, all started at w = 0.9 r (far from uniform), 300 steps."""
    r, kT = 1.5, 0.5
    w = torch.full((20_000,), 0.9 * r, dtype=torch.float64, requires_grad=True)
    opt = st.SDEOptimizer([{"params": [w], "constraint": Circle(r)}], lr=0.4, gamma=1.0, kT=kT, seed=3)
    closure = _loss_closure(opt, lambda: torch.zeros((), dtype=torch.float64))
    for _ in range(300):
        opt.step(closure)
    pw, ps = opt.state[w]["momentum"], opt.state[w]["slack_momentum"]
    x = torch.stack([w.detach(), w.detach() ** 2, pw ** 2 + ps ** 2, pw ** 2], dim=1).numpy()
    mean, se = _mean_se(x)
    assert_within(mean, se, [0.0, r * r / 2, kT, kT / 2], what="circle: E[w], E[w^2], E[|p|^2], E[p_w^2]")


@pytest.mark.statistical
@pytest.mark.parametrize("method", ["BAOAB", "ConstrainedSGLD"])
def test_circle_with_linear_loss_samples_von_mises(method):
    """L = -kappa sum(w): each w = r cos(phi) with phi von Mises, E[w] = r I1(a)/I0(a),
    a = kappa r / kT (the configurational law exp(-L/kT) on the circle). Positions depend on
    the temperature here, so a wrong O or noise shows in E[w]. 20 000 weights; BAOAB (gamma = 2,
    400 steps) and its overdamped limit ConstrainedSGLD (gamma = inf, lr = 0.03, 600 steps)."""
    special = pytest.importorskip("scipy.special")
    r, kT, kappa = 1.0, 0.5, 0.5
    a = kappa * r / kT
    w = torch.zeros(20_000, dtype=torch.float64, requires_grad=True)
    if method == "BAOAB":
        opt, n_steps = st.SDEOptimizer([{"params": [w], "constraint": Circle(r)}], lr=0.25, gamma=2.0, kT=kT,
                                       seed=5), 400
    else:
        opt, n_steps = st.ConstrainedSGLD([{"params": [w], "constraint": Circle(r)}], lr=0.03, kT=kT, seed=5), 600
    closure = _loss_closure(opt, lambda: -kappa * w.sum())
    for _ in range(n_steps):
        opt.step(closure)
    mean, se = _mean_se(w.detach().numpy()[:, None])
    assert_within(mean, se, [r * special.i1(a) / special.i0(a)], what="circle von Mises: E[w]")


@pytest.mark.statistical
def test_stiefel_without_loss_samples_the_uniform_law():
    """No loss, kT > 0: each W of a stack (2000, 4, 2) is uniform on Stiefel(4, 2):
    E[W_ij^2] = 1/n, E[W_ij] = 0, and its tangent momentum is N(0, kT) on the tangent space,
    whose dimension is np - p(p+1)/2: E[|P|^2] = kT (np - p(p+1)/2). All matrices start at the
    same W = [I; 0]; 200 steps."""
    n, p, kT = 4, 2, 0.5
    W0 = torch.zeros(2000, n, p, dtype=torch.float64)
    W0[:, 0, 0] = W0[:, 1, 1] = 1.0
    W = W0.clone().requires_grad_()
    opt = st.SDEOptimizer([{"params": [W], "constraint": Stiefel(n, p)}], lr=0.4, gamma=1.0, kT=kT, seed=7)
    closure = _loss_closure(opt, lambda: torch.zeros((), dtype=torch.float64))
    for _ in range(200):
        opt.step(closure)
    Wd, P = W.detach().reshape(2000, -1), opt.state[W]["momentum"].reshape(2000, -1)
    mean, se = _mean_se(torch.cat([Wd, Wd ** 2, (P ** 2).sum(dim=1, keepdim=True)], dim=1).numpy())
    exact = [0.0] * (n * p) + [1.0 / n] * (n * p) + [kT * (n * p - p * (p + 1) / 2)]
    assert_within(mean, se, exact, what="Stiefel(4, 2): E[W], E[W^2], E[|P|^2]")


@pytest.mark.statistical
def test_thermostat_on_circles_counts_tangent_degrees_of_freedom():
    r"""BADODAB on a Circle group without loss, friction xi and driving noise sigma_A: the
    thermostat holds p.p = N kT with N = ndof = n (the tangent dimension of n circles), so
    xi settles at sigma_A^2/(2 kT) = 0.5 (a wrong N, e.g. 2n, would give 0.25). Time average
    of xi after a burn-in, 20 batch means. The N of Stiefel and Sphere tensors, exactly."""
    kT, sigma_A, n = 0.01, 0.1, 4000
    w = torch.full((n,), 0.5, dtype=torch.float64, requires_grad=True)
    opt = st.SDEOptimizer([{"params": [w], "constraint": Circle(1.0)}], scheme="BADODAB", lr=0.2, gamma=0.0,
                          kT=kT, sigma_A=sigma_A, eps=0.2 / (n * kT), xi0=0.1, seed=0)
    closure = _loss_closure(opt, lambda: torch.zeros((), dtype=torch.float64))
    trace = []
    for step in range(1200):
        opt.step(closure)
        if step >= 200:
            trace.append(float(opt.xi(0)[0]))
    batches = np.array(trace).reshape(20, -1).mean(axis=1)
    assert_within(batches.mean(), batches.std(ddof=1) / math.sqrt(20), sigma_A ** 2 / (2 * kT),
                  what="xi on circles")
    assert opt.ndof(0) == [n]
    other = st.SDEOptimizer([{"params": [_tensor((7, 4, 2), 0)], "constraint": Stiefel(4, 2)},
                             {"params": [_tensor((2, 5), 1), _tensor(3, 2)], "constraint": Sphere(1.0)},
                             {"params": [_tensor((2, 3), 3)]}])
    assert [other.ndof(i) for i in range(3)] == [[7 * (8 - 3)], [9, 2], [6]]


# ----------------------------------------------------------------------------- zero temperature

def test_constrained_sgd_converges_to_the_constrained_minimiser():
    """kT = 0 with exact gradients: Circle, L = |w - c|^2/2 -> w = clamp(c, -r, r); Stiefel,
    L = -trace(A^T W) -> the polar factor of A (orthogonal Procrustes); both with
    ConstrainedSGLD(sigma=0) (gradient descent on the manifold) and heavy-ball BAOAB."""
    c = torch.tensor([0.3, -2.0, 0.6, 1.7], dtype=torch.float64)
    A = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(A, full_matrices=False)
    for make in (lambda groups: st.ConstrainedSGLD(groups, lr=0.1, sigma=0.0, seed=0),
                 lambda groups: st.SDEOptimizer(groups, lr=0.3, gamma=2.0, kT=0.0, seed=0)):
        w = torch.zeros(4, dtype=torch.float64, requires_grad=True)
        W = _tensor((5, 2), 3)
        opt = make([{"params": [w], "constraint": Circle(1.0)}, {"params": [W], "constraint": Stiefel(5, 2)}])
        closure = _loss_closure(opt, lambda: 0.5 * ((w - c) ** 2).sum() - (A * W).sum())
        for _ in range(600):
            opt.step(closure)
        torch.testing.assert_close(w.detach(), c.clamp(-1.0, 1.0), rtol=0, atol=1e-8)
        torch.testing.assert_close(W.detach(), U @ Vh, rtol=0, atol=1e-8)


def test_constrained_sgld_preset_groups_and_step():
    """ConstrainedSGLD on a module: weights constrained, biases free, h = sqrt(2 lr), gamma = inf;
    an unconstrained tensor takes the Leimkuhler-Matthews step with time step lr."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(2, 6), torch.nn.ReLU(), torch.nn.Linear(6, 1)).double()
    opt = st.ConstrainedSGLD(model, lambda t: Stiefel(max(t.shape), min(t.shape)), lr=0.02, sigma=0.1, seed=0)
    assert [repr(g["constraint"]) for g in opt.param_groups] == ["Stiefel(n=6, p=2)", "Stiefel(n=6, p=1)", "None"]
    assert opt.param_groups[0]["lr"] == math.sqrt(0.04) and opt.param_groups[0]["gamma"] == math.inf
    assert opt.param_groups[0]["kT"] == pytest.approx(0.005, rel=1e-15)
    with pytest.raises(ValueError, match="constraint"):
        st.ConstrainedSGLD(model, None)
    with pytest.raises(ValueError, match="sigma"):
        st.ConstrainedSGLD(model, Circle(1.0), sigma=0.1, kT=0.1)


# ----------------------------------------------------------------------------- multirate

def _two_groups(rate, kT=0.0, gamma=0.5, scheme="BAOAB", n=6, seed=0, closure_loss=None, rule="published"):
    """A fast and a slow group (rate, multirate rule) on a separable quadratic; returns tensors and optimizer."""
    qf, qs = _tensor(n, 10), _tensor(n, 11)
    groups = [{"params": [qf]},
              {"params": [qs], "rate": rate, "multirate": rule} if rate is not None else {"params": [qs]}]
    opt = st.SDEOptimizer(groups, scheme=scheme, lr=0.2, gamma=gamma, kT=kT, seed=seed)
    k = torch.linspace(0.5, 2.0, n, dtype=torch.float64)
    loss = closure_loss or (lambda: 0.5 * (k * qf ** 2).sum() + 0.5 * (k * qs ** 2).sum())
    return qf, qs, opt, _loss_closure(opt, loss)


@pytest.mark.parametrize("rule", ["published", "impulse"])
@pytest.mark.parametrize("scheme", ["BAOAB", "OBABO", "BADODAB"])
def test_rate_one_is_the_single_rate_scheme_bitwise(scheme, rule):
    runs = []
    for rate in (None, 1):
        qf, qs, opt, closure = _two_groups(rate, kT=0.3, scheme=scheme, seed=4, rule=rule)
        for _ in range(25):
            opt.step(closure)
        runs.append((qf.detach().clone(), qs.detach().clone(), opt.state[qs]["momentum"].clone()))
    for a, b in zip(*runs):
        assert torch.equal(a, b)


@pytest.mark.parametrize("rule", ["published", "impulse"])
@pytest.mark.parametrize("rate", [2, 3, 4])
def test_slow_group_gets_one_gradient_kick_per_block(rate, rule, monkeypatch):
    """With rate k, in n steps the fast group takes 2n half kicks h/2 (n merged kicks h) and
    the slow group 2n/k half kicks, h/2 under the published rule (n/k merged kicks h) and
    k h/2 under "impulse" (n/k merged kicks k h), counted at the kick operator; the slow
    group's gradient is computed 1 + n/k times (the first is the initial gradient), the fast
    group's 1 + n times, counted by tensor hooks."""
    n, h = 24, 0.2
    qf, qs, opt, closure = _two_groups(rate, kT=0.1, rule=rule)
    counts = {"fast": 0, "slow": 0}
    qf.register_hook(lambda g: counts.__setitem__("fast", counts["fast"] + 1))
    qs.register_hook(lambda g: counts.__setitem__("slow", counts["slow"] + 1))
    kicks = []
    kick = st.ops.scalar.kick
    monkeypatch.setattr(st.ops.scalar, "kick", lambda p, force, delta: kicks.append(delta) or kick(p, force, delta))
    for _ in range(n):
        opt.step(closure)
    assert counts == {"fast": 1 + n, "slow": 1 + n // rate}
    slow = 0.5 * h * (rate if rule == "impulse" else 1)
    assert sorted(kicks) == sorted([0.5 * h] * (2 * n) + [slow] * (2 * n // rate))
    assert opt.state[qs]["grad"].abs().sum() > 0


def test_impulse_slow_group_with_odd_rate_is_the_single_rate_scheme_with_step_k_h():
    """On a separable loss at kT = 0 a slow group with rate k = 3, step h and the "impulse"
    rule, seen at the block ends, is BAOAB with step 3h (its O in the middle step is at the
    block's centre), to rounding; the fast group is the single-rate run bit for bit."""
    qf, qs, opt, closure = _two_groups(3, rule="impulse")
    rf, rs, ref, ref_closure = _two_groups(None)
    slow = _tensor(6, 11)
    single = st.SDEOptimizer([slow], lr=0.6, gamma=0.5, kT=0.0, seed=0)
    k = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)
    single_closure = _loss_closure(single, lambda: 0.5 * (k * slow ** 2).sum())
    for m in range(20):
        for _ in range(3):
            opt.step(closure)
            ref.step(ref_closure)
        single.step(single_closure)
        torch.testing.assert_close(qs.detach(), slow.detach(), rtol=0, atol=1e-13)
        torch.testing.assert_close(opt.state[qs]["momentum"], single.state[slow]["momentum"], rtol=0, atol=1e-13)
        assert torch.equal(qf, rf)


def test_slow_group_skips_its_backward_and_keeps_its_requires_grad():
    """Off-block force evaluations run with the slow tensors' requires_grad off (so backward
    does not reach them), restored afterwards."""
    seen = []
    qf, qs, opt, closure = _two_groups(2)

    def recording():
        seen.append(qs.requires_grad)
        return closure()
    for _ in range(6):
        opt.step(recording)
    assert seen == [True, False, True, False, True, False, True]
    assert qs.requires_grad and qf.requires_grad


# ----------------------------------------------------------------------------- time

@pytest.mark.parametrize("scheme", ["BAOAB", "BADODAB", "EM"])
def test_constant_callables_give_the_same_numbers_bitwise(scheme):
    out = []
    for gamma, kT in ((0.7, 0.2), (lambda t: 0.7, lambda t: 0.2)):
        q = _tensor(8, 1)
        opt = st.SDEOptimizer([q], scheme=scheme, lr=0.1, gamma=gamma, kT=kT, seed=2)
        closure = _loss_closure(opt, lambda: 0.5 * (q ** 2).sum())
        for _ in range(30):
            opt.step(closure)
        out.append(q.detach().clone())
    assert torch.equal(out[0], out[1])


def test_clock_rides_with_A():
    """gamma(t) is called at each O's time, t_n + h (A fractions before it); the closure sees
    opt.time = the force evaluation's time; t_n = n h; a new h re-anchors the clock."""
    calls = []

    def gamma(t):
        calls.append(t)
        return 1.0
    q = _tensor(3, 0)
    opt = st.SDEOptimizer([q], scheme="OBABO", lr=0.25, gamma=gamma, kT=0.1, seed=0, t0=1.0)
    seen = []

    def closure():
        seen.append(opt.time)
        opt.zero_grad()
        loss = 0.5 * (q ** 2).sum()
        loss.backward()
        return loss
    for _ in range(3):
        opt.step(closure)
    assert calls == [1.0, 1.25, 1.25, 1.5, 1.5, 1.75]      # OBABO: O at t_n and t_n + h
    assert seen == [1.0, 1.25, 1.5, 1.75]                  # initial gradient, then one per step
    assert opt.time == 1.0 + 3 * 0.25
    opt.param_groups[0]["lr"] = 0.5
    opt.step(closure)
    assert opt.time == 1.75 + 0.5
    with pytest.raises(ValueError, match=r"kT: kT\(t\) must be finite and >= 0, got -1.0 at t=0.0"):
        bad = st.SDEOptimizer([_tensor(2, 0)], kT=lambda t: -1.0, seed=0)
        bad.step(_loss_closure(bad, lambda: torch.zeros((), dtype=torch.float64)))


# ----------------------------------------------------------------------------- state

def test_state_dict_round_trip_with_constraint_rate_and_schedule_is_bitwise():
    def build(seed):
        w, W, b = _tensor(5, seed), _tensor((4, 2), seed + 1), _tensor(3, seed + 2)
        opt = st.SDEOptimizer([{"params": [w], "constraint": Circle(1.0), "scheme": "BADODAB"},
                               {"params": [W], "constraint": Stiefel(4, 2), "rate": 3},
                               {"params": [b], "rate": 2, "gamma": lambda t: 1.0 + math.sin(t)}],
                              lr=0.2, kT=0.05, seed=seed)
        loss = lambda: (w.sum() - 1) ** 2 + (W ** 3).sum() + (b ** 2).sum()  # noqa: E731
        return (w, W, b), opt, _loss_closure(opt, loss)
    tensors, opt, closure = build(0)
    for _ in range(7):
        opt.step(closure)
    buf = io.BytesIO()
    torch.save({"opt": opt.state_dict(), "params": [t.detach().clone() for t in tensors]}, buf)
    for _ in range(11):
        opt.step(closure)
    after = [t.detach().clone() for t in tensors] + [opt.state[tensors[0]]["slack"].clone()]
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    tensors2, opt2, closure2 = build(5)
    with torch.no_grad():
        for t, s in zip(tensors2, saved["params"]):
            t.copy_(s)
    opt2.load_state_dict(saved["opt"])
    assert repr(opt2.param_groups[0]["constraint"]) == "Circle(radius=1.0)" and callable(opt2.param_groups[2]["gamma"])
    for _ in range(11):
        opt2.step(closure2)
    again = [t.detach().clone() for t in tensors2] + [opt2.state[tensors2[0]]["slack"].clone()]
    for a, b in zip(after, again):
        assert torch.equal(a, b)
    other = st.SDEOptimizer([{"params": [_tensor(5, 0)], "constraint": Circle(2.0), "scheme": "BADODAB"},
                             {"params": [_tensor((4, 2), 1)], "constraint": Stiefel(4, 2), "rate": 3},
                             {"params": [_tensor(3, 2)], "rate": 2, "gamma": lambda t: 1.0}], lr=0.2, seed=0)
    with pytest.raises(ValueError, match="constraint"):
        other.load_state_dict(saved["opt"])


# ----------------------------------------------------------------------------- bad input

def test_bad_constrained_and_multirate_input_raises_value_errors():
    q = _tensor((4, 2), 0)
    for rate in (0, 1.5, "x", True):
        with pytest.raises(ValueError, match="rate"):
            st.SDEOptimizer([{"params": [q], "rate": rate}])
    with pytest.raises(ValueError, match="rate"):
        st.SDEOptimizer([q], scheme="EM", rate=2)
    for constraint in ("circle", Circle, 1.0):
        with pytest.raises(ValueError, match="constraint"):
            st.SDEOptimizer([q], constraint=constraint)

    def g(x, out):
        out[0] = x[0]

    def jac(x, out):
        out[0, 0] = 1.0
    with pytest.raises(ValueError, match="constraint"):
        st.SDEOptimizer([q], constraint=Constraint(g, jac, m=1))
    with pytest.raises(ValueError, match="constraint"):
        st.SDEOptimizer([q], constraint=Stiefel(5, 2))
    with pytest.raises(ValueError, match="constraint"):
        st.SDEOptimizer([q], scheme="LM", constraint=Circle(1.0))
    for radius in (0.0, -1.0):
        with pytest.raises(ValueError, match="radius"):
            Circle(radius)
        with pytest.raises(ValueError, match="radius"):
            Sphere(radius)
    with pytest.raises(ValueError, match="gamma"):
        st.SDEOptimizer([q], gamma="fast")


def test_shake_failure_names_the_step():
    W = _tensor((6, 3), 0)
    opt = st.SDEOptimizer([W], lr=0.05, kT=0.0, constraint=Stiefel(6, 3, max_iter=3), seed=0)
    scale = {"a": 1.0}
    closure = _loss_closure(opt, lambda: scale["a"] * (W ** 4).sum())
    opt.step(closure)
    scale["a"] = 1e4
    with pytest.raises(DivergenceError, match="SHAKE did not converge .* at step 3"):
        for _ in range(5):
            opt.step(closure)


def test_train_cli_constrained_optimizers():
    """``sdekit train --optimizer csgd|csgld --radius r``: every weight ends within [-r, r]."""
    from sdekit import train

    for name in ("csgd", "csgld"):
        args = train.parser().parse_args(["--optimizer", name, "--radius", "0.5", "--steps", "30", "--hidden", "8",
                                          "--quiet", "--n-train", "50", "--n-test", "50"])
        res = train.train(args)
        weights = [p for p in res["model"].parameters() if p.dim() >= 2]
        assert max(float(w.detach().abs().max()) for w in weights) <= 0.5
        assert 0.0 <= res["test_accuracy"] <= 1.0
    with pytest.raises(ValueError, match="--radius"):
        train.main(["--radius", "0"])
