"""Prefetched noise (SDEOptimizer(..., prefetch_noise=True)): the same numbers bit for bit.

The background draws come from the same generator in the same order and sizes, so a run
with prefetching must equal the run without it in every tensor, including across a state
dict round trip, a multirate block whose steps draw differently, a word with an O after
the force evaluation (OBABO) and a first step with two closure calls.
"""
import pytest

torch = pytest.importorskip("torch")

from sdekit import torch as st  # noqa: E402
from test_torch import _one_thread  # noqa: E402,F401  (autouse: one intra-op thread)


def _run(make, prefetch, n_steps=14, reload_at=None):
    torch.manual_seed(4)
    model = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)).double()
    X = torch.randn(32, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    y = (X[:, 0] > 0).long()
    opt = make(model, prefetch)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), y)
        loss.backward()
        return loss

    for n in range(n_steps):
        if n == reload_at:
            sd = opt.state_dict()
            opt = make(model, prefetch)
            opt.load_state_dict(sd)
        opt.step(closure)
    sd = opt.state_dict()
    if prefetch:
        assert opt._noise.hits > 0, "nothing was served from the prefetch"
    return [p.detach().clone() for p in model.parameters()], sd


MAKERS = {   # torch's generator, with and without its prefetch
    "AdLaLa": lambda m, pf: st.AdLaLa(m, lr=0.2, seed=3, prefetch_noise=pf, noise="torch"),
    "OBABO": lambda m, pf: st.SDEOptimizer(m, scheme="OBABO", lr=0.1, kT=1e-2, seed=3, prefetch_noise=pf,
                                           noise="torch"),
    "impulse-multirate": lambda m, pf: st.SDEOptimizer(
        [{"params": list(m[0].parameters()), "rate": 3, "multirate": "impulse"}, {"params": list(m[2].parameters())}],
        lr=0.1, kT=1e-2, seed=3, prefetch_noise=pf, noise="torch"),
    "SGLD": lambda m, pf: st.SGLD(m.parameters(), lr=0.05, sigma=0.1, seed=3, prefetch_noise=pf, noise="torch"),
}


@pytest.mark.parametrize("name", sorted(MAKERS))
@pytest.mark.parametrize("reload_at", [None, 5])
def test_prefetched_noise_gives_the_same_run_bitwise(name, reload_at):
    (a, sda), (b, sdb) = _run(MAKERS[name], False, reload_at=reload_at), _run(MAKERS[name], True, reload_at=reload_at)
    for x, z in zip(a, b):
        assert torch.equal(x, z)
    assert torch.equal(sda["sdekit"]["generator_state"], sdb["sdekit"]["generator_state"])
    for k in sda["state"]:
        for key, v in sda["state"][k].items():
            assert torch.equal(v, sdb["state"][k][key]), (k, key)


def test_prefetch_noise_must_be_a_bool():
    with pytest.raises(ValueError, match="prefetch_noise"):
        st.SDEOptimizer([torch.zeros(2, requires_grad=True)], prefetch_noise=1)
