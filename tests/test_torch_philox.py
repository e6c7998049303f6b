"""The default CPU noise of the torch adapter (``noise="philox"``): Philox4x32-10 normals
written in parallel into the noise buffer (:mod:`sdekit.torch.philox_normals`).

The numbers are standard normal (moments, tail and CDF at stated standard errors, fixed
seeds), follow the documented counter layout (the project's Philox words turned into
normals by Box-Muller), do not depend on the thread count, the chunking, the buffer's size
or dtype, and make optimizer runs that are reproducible from the seed, the same bit for
bit with ``torch.set_num_threads(1)`` and ``(2)``, and continued exactly through a state
dict.
"""
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from sdekit import torch as st  # noqa: E402
from sdekit.kernels import philox  # noqa: E402
from sdekit.torch import philox_normals  # noqa: E402

N = 1 << 21
"""Numbers per moment test: SE of the mean 7e-4."""


def _normals(n=N, key=(12345, 678), draw=9, dtype=np.float32, threads=1):
    return philox_normals.fill(np.empty(n, dtype), key, draw, threads)


@pytest.mark.parametrize("key,draw", [((12345, 678), 9), ((0, 0), 0), ((2**32 - 1, 2**32 - 1), 2**40 + 3)])
def test_moments_are_standard_normal(key, draw):
    z = _normals(key=key, draw=draw).astype(np.float64)
    n = z.size
    se = {"mean": 1 / math.sqrt(n), "var": math.sqrt(2 / n), "skew": math.sqrt(6 / n), "kurt": math.sqrt(24 / n)}
    m = z.mean()
    c = z - m
    var = (c ** 2).mean()
    got = {"mean": m, "var": var - 1, "skew": (c ** 3).mean() / var ** 1.5, "kurt": (c ** 4).mean() / var ** 2 - 3}
    for k in got:
        assert abs(got[k]) < 5 * se[k], (k, got[k], se[k])
    for x in (-3.0, -1.5, -0.5, 0.0, 0.7, 2.0, 3.5):      # the CDF at a few points
        p = 0.5 * math.erfc(-x / math.sqrt(2))
        assert abs((z <= x).mean() - p) < 5 * math.sqrt(p * (1 - p) / n), x
    # neighbours (the two numbers of a Box-Muller pair, and of two pairs) are uncorrelated
    for lag in (1, 2, 3, 4):
        r = float(np.mean(z[:-lag] * z[lag:]))
        assert abs(r) < 5 / math.sqrt(n), (lag, r)
    assert np.abs(z).max() <= 6.67


def test_the_documented_counter_layout():
    """Number 4b + j of draw d under key (k0, k1) is Box-Muller of the Philox words of counter
    (b lo, b hi, d lo, d hi): here computed in float64 from sdekit.kernels.philox's words."""
    key, draw = (7, 3), 2**33 + 5
    z = _normals(n=4 * 300 + 3, key=key, draw=draw)
    for b in list(range(6)) + [299, 300]:
        words = [int(w) for w in philox.philox4x32_10(b & 0xFFFFFFFF, b >> 32, draw & 0xFFFFFFFF, draw >> 32, *key)]
        want = []
        for x, y in ((words[0], words[1]), (words[2], words[3])):
            u = ((x >> 1) + 0.5) * 2.0 ** -31
            v = (((y >> 7) & 0xFFFFFF) + 0.5) * 2.0 ** -24 - 0.5
            r = math.sqrt(-2 * math.log(u)) * (-1 if y >> 31 else 1)
            want += [r * math.cos(math.pi * v), r * math.sin(math.pi * v)]
        got = z[4 * b:4 * b + 4]
        np.testing.assert_allclose(got, want[:len(got)], rtol=2e-6, atol=2e-6)


def test_independent_of_threads_chunks_size_and_dtype():
    n = 9 * philox_normals.CHUNK * 4 + 7            # several chunks and a partial block
    assert n >= philox_normals.SERIAL_BELOW          # so that threads=2 takes the parallel loop
    one = _normals(n=n, threads=1)
    assert np.array_equal(one, _normals(n=n, threads=2))
    assert np.array_equal(_normals(n=n, dtype=np.float64, threads=2), one.astype(np.float64))
    for m in (1, 2, 3, 5, 4 * philox_normals.CHUNK + 1):    # a shorter buffer is a prefix
        assert np.array_equal(_normals(n=m), one[:m]), m
    assert not np.array_equal(_normals(n=n, draw=10), one)            # another draw
    assert not np.array_equal(_normals(n=n, key=(12346, 678)), one)   # another key


def _quadratic_run(seed, threads, n_steps=4, reload_at=None, dtype=torch.float32, noise=None):
    """AdLaLa on L = |q|^2 / 2 (gradient q, elementwise: the same bits at any thread count) with
    tensors large enough for the parallel fill."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(1)
        model = torch.nn.Sequential(torch.nn.Linear(300, 300), torch.nn.Linear(300, 40)).to(dtype)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))

        def make():
            return st.AdLaLa(model, lr=0.1, tau1=1e-2, tau2=1e-2, seed=seed, noise=noise)

        opt = make()

        def closure():
            opt.zero_grad()
            for p in model.parameters():
                p.grad = p.detach().clone()
            return torch.zeros(())

        for n in range(n_steps):
            if n == reload_at:
                sd = opt.state_dict()
                opt = make()
                opt.load_state_dict(sd)
            opt.step(closure)
        return [p.detach().clone() for p in model.parameters()], opt
    finally:
        torch.set_num_threads(saved)


def test_optimizer_runs_are_the_same_at_one_and_two_threads_and_reproducible():
    a, opt = _quadratic_run(5, 1)
    assert opt.noise == "philox" and opt.generator is None
    assert sum(p.numel() for p in a) >= philox_normals.SERIAL_BELOW
    b, _ = _quadratic_run(5, 2)
    c, _ = _quadratic_run(5, 1, reload_at=2)
    d, _ = _quadratic_run(6, 1)
    for x, y, z in zip(a, b, c):
        assert torch.equal(x, y) and torch.equal(x, z)
    assert not any(torch.equal(x, w) for x, w in zip(a, d))


def test_state_dict_holds_the_philox_state_and_refuses_the_other_noise():
    _, opt = _quadratic_run(2**40 + 3, 1, n_steps=2)
    state = opt.state_dict()["sdekit"]["generator_state"]
    assert state.dtype == torch.int64 and state.tolist() == [3, 2**8, 2 * 3]   # key (lo, hi); 3 draws a step
    _, other = _quadratic_run(3, 1, n_steps=1, noise="torch")
    with pytest.raises(ValueError, match="noise"):
        other.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match="noise"):
        opt.load_state_dict(other.state_dict())


def test_half_precision_buffers_get_the_float32_numbers_rounded():
    q = torch.zeros(1000, dtype=torch.bfloat16, requires_grad=True)
    opt = st.SDEOptimizer([q], scheme="EM", lr=0.5, kT=1.0, seed=4)     # q = 0 - 0 + sqrt(2 h kT) R = R

    def closure():
        q.grad = torch.zeros_like(q)
        return torch.zeros(())

    opt.step(closure)
    R = torch.from_numpy(_normals(n=1000, key=(4, 0), draw=0)).to(torch.bfloat16)
    assert torch.equal(q.detach(), R)


def test_noise_defaults():
    q = torch.zeros(3, requires_grad=True)
    assert st.SDEOptimizer([q]).noise == "philox"
    assert st.SDEOptimizer([q], noise="torch").noise == "torch"
    assert st.SDEOptimizer([q], generator=torch.Generator()).noise == "torch"
    assert st.SDEOptimizer([q], prefetch_noise=True).noise == "torch"
    assert st.SGLD([q], noise="philox").noise == "philox"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_ou_update_is_c_p_plus_s_z_on_any_range(dtype):
    """philox_normals.ou(p, c, s, start=k): p = c p + s z with z the numbers k, k + 1, ... of the
    draw (what fill writes), in p's dtype, for ranges that start and end inside blocks and
    chunks, serial and parallel."""
    n_all = 2 * philox_normals.SERIAL_BELOW + 11
    z = _normals(n=n_all, dtype=dtype)
    c, s = 0.93, 0.07
    for start in (0, 1, 2, 3, 5, 4 * philox_normals.CHUNK - 1):
        for n in (0, 1, 2, 3, 6, 4 * philox_normals.CHUNK + 3, philox_normals.SERIAL_BELOW + 5):
            p = np.linspace(-2, 2, n).astype(dtype)
            want = dtype(c) * p + dtype(s) * z[start:start + n]
            for threads in (1, 2):
                got = philox_normals.ou(p.copy(), c, s, (12345, 678), 9, threads, start)
                assert np.array_equal(got, want), (start, n, threads)
            assert np.array_equal(philox_normals.fill(np.empty(n, dtype), (12345, 678), 9, 2, start),
                                  z[start:start + n])
