"""The multirate rule of Vlaar & Leimkuhler (ICML 2022) against a hand-written reference.

The reference is the authors' update written out in heavy-ball SGD form (their Algorithm:
the fast parameters take SGD with momentum every step; the slow parameters' momentum
buffer is damped by mu and drifted with in every step, and receives the slow gradient
only in the steps n with n mod k = 0). ``SDEOptimizer`` with BAOAB at kT = 0 and
``(h, gamma) = sgd_equivalent(lr, mu)`` must reproduce it to rounding under the default
rule (``multirate="published"``), and must not under the old rule ("impulse").
"""
import pytest

torch = pytest.importorskip("torch")

from sdekit import torch as st  # noqa: E402
from test_torch import _one_thread  # noqa: E402,F401  (autouse: one intra-op thread)

LR, MU = 0.05, 0.9


def _model_and_data():
    torch.manual_seed(21)
    body = torch.nn.Sequential(torch.nn.Linear(4, 7), torch.nn.Tanh()).double()
    head = torch.nn.Linear(7, 3).double()
    g = torch.Generator().manual_seed(22)
    X = torch.randn(30, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (30,), generator=g)
    return body, head, X, y


def _loss(body, head, X, y):
    return torch.nn.functional.cross_entropy(head(body(X)), y)


def authors_multirate_sgd(k, n_steps):
    """The reference: multirate SGD with momentum, written from the paper.

    ``v_f = mu v_f + g_f`` and ``v_s = mu v_s + [n mod k == 0] g_s``, then ``theta -= lr v``
    for both groups, every step n = 0, 1, ...; the buffers start at ``g_0 / 2`` (the SDE's
    momentum starts at zero, see sdekit.torch.sgd_equivalent)."""
    body, head, X, y = _model_and_data()
    slow, fast = list(body.parameters()), list(head.parameters())
    bufs = {}
    for n in range(n_steps):
        for p in slow + fast:
            p.grad = None
        _loss(body, head, X, y).backward()
        with torch.no_grad():
            for p, is_slow in [(p, False) for p in fast] + [(p, True) for p in slow]:
                g = p.grad if (not is_slow or n % k == 0) else torch.zeros_like(p)
                if n == 0:
                    bufs[p] = 0.5 * g
                else:
                    bufs[p].mul_(MU).add_(g)
                p.sub_(LR * bufs[p])
    return [p.detach().clone() for p in slow + fast]


def sdekit_multirate(k, n_steps, rule):
    body, head, X, y = _model_and_data()
    h, gamma = st.sgd_equivalent(LR, MU)
    opt = st.SDEOptimizer([{"params": list(body.parameters()), "rate": k, "multirate": rule},
                           {"params": list(head.parameters())}], lr=h, gamma=gamma, kT=0.0, seed=0)

    def closure():
        opt.zero_grad()
        loss = _loss(body, head, X, y)
        loss.backward()
        return loss

    for _ in range(n_steps):
        opt.step(closure)
    return [p.detach().clone() for p in list(body.parameters()) + list(head.parameters())]


@pytest.mark.parametrize("k", [1, 3, 4])
def test_published_rule_is_the_authors_update_to_rounding(k):
    ref = authors_multirate_sgd(k, 40)
    out = sdekit_multirate(k, 40, "published")
    for a, b in zip(out, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_the_impulse_rule_is_not_the_authors_update():
    """The rule sdekit had before issue 17 (kick k h, damping mu^k once per block) differs
    from the reference by far more than rounding: this is what the test above catches."""
    ref = authors_multirate_sgd(4, 40)
    out = sdekit_multirate(4, 40, "impulse")
    assert max(float((a - b).abs().max()) for a, b in zip(out[:2], ref[:2])) > 1e-3


def test_published_slow_group_sees_the_force_divided_by_k_at_long_times():
    """At kT = 0 the published slow group's momentum, driven by a constant force F (a linear
    loss), settles so that its mean over a block is the single-rate terminal momentum
    h F (1 + c) / (2 (1 - c)) divided by k, to rounding (c = exp(-gamma h)): the slow group
    sees the force F / k on average."""
    k, h, gamma = 4, 0.2, 0.5
    q = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    fast = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    force = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    opt = st.SDEOptimizer([{"params": [q], "rate": k}, {"params": [fast]}], lr=h, gamma=gamma, kT=0.0, seed=0)

    def closure():
        opt.zero_grad()
        loss = -(force * q).sum() + 0.5 * (fast ** 2).sum()
        loss.backward()
        return loss

    for _ in range(400):
        opt.step(closure)
    moms = []
    for _ in range(k):
        opt.step(closure)
        moms.append(opt.state[q]["momentum"].clone())
    c = torch.exp(torch.tensor(-gamma * h, dtype=torch.float64))
    mean = torch.stack(moms).mean(0)
    # steady block: u after the kick u* = c^k u* + h F  =>  the momenta after the A O A of the
    # block's steps are c u*, c^2 u*, ..., c^k u* less the trailing half kick of the last one
    u = h * force / (1 - c ** k)
    expect = sum(c ** (j + 1) * u for j in range(k)) / k + 0.5 * h * force / k
    torch.testing.assert_close(mean, expect, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(expect, h * force * (1 + c) / (2 * k * (1 - c)), rtol=1e-13, atol=0)


def test_bad_multirate_rule_names_the_argument():
    q = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for bad in ("Published", "respa", None, 1):
        with pytest.raises(ValueError, match="multirate"):
            st.SDEOptimizer([{"params": [q], "rate": 2, "multirate": bad}])


def test_state_dict_saved_before_the_rule_existed_resumes_with_the_impulse_rule():
    """A state dict whose groups have no "multirate" entry (saved before issue 17) continues a
    slow group with the rule it ran then, "impulse", and a rate-1 group as "published"."""
    q, f = torch.ones(3, dtype=torch.float64, requires_grad=True), torch.ones(2, dtype=torch.float64, requires_grad=True)
    opt = st.SDEOptimizer([{"params": [q], "rate": 2, "multirate": "impulse"}, {"params": [f]}], lr=0.1, seed=0)
    sd = opt.state_dict()
    for g in sd["param_groups"]:
        del g["multirate"]
    fresh = st.SDEOptimizer([{"params": [q], "rate": 2}, {"params": [f]}], lr=0.1, seed=0)
    fresh.load_state_dict(sd)
    assert [g["multirate"] for g in fresh.param_groups] == ["impulse", "published"]
