"""A learned I2SB bridge in 2-D, Gaussian noise to spirals: each bridge sampler against N.

x0 from sdekit.datasets.spirals (1 turn, c = 0.05, both classes), x1 ~ N(0, I), independent
pairs; I2SB's schedule with beta_min 0.1, beta_max 1.0. A small MLP is trained on I2SB's label
(x_t - x0)/sigma_t with x_t ~ q(x_t | x0, x1) (Eq. 11); a second one on the noise-free
interpolant for the OT-ODE (I2SB's ot_ode training). Each sampler then maps fresh x1 to
samples in N steps. Distance: the exact W2 (sdekit.bridges.empirical_w2, an assignment
problem; equal to POT's ot.emd2) between n generated points and n fresh data points, mean
and standard error over R seeds (new x1, sampler noise and data). The floor is the same
distance between two independent data sets. The notebook notebooks/06_schrodinger_bridge.ipynb
runs a smaller version.

    python analysis/bridge_spirals.py [--quick]

CPU, torch with 1 thread: about 2 minutes full, ~20 s quick. No model file is written.
"""
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import _results
from sdekit import bridges as SB
from sdekit.datasets import spirals


def data(n, seed):
    return spirals(n, turns=1.0, a=2.0, p=0.5, c=0.05, seed=seed)[0]


class Net(torch.nn.Module):
    """[x, sin/cos(2^k pi t) k < n_freq] -> 3 x width SiLU -> 2: predicts (x_t - x0)/sigma_t."""

    def __init__(self, width=64, n_freq=4):
        super().__init__()
        self.register_buffer("freq", math.pi * 2.0 ** torch.arange(n_freq, dtype=torch.float32))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 + 2 * n_freq, width), torch.nn.SiLU(), torch.nn.Linear(width, width),
            torch.nn.SiLU(), torch.nn.Linear(width, width), torch.nn.SiLU(), torch.nn.Linear(width, 2))

    def forward(self, x, t):
        a = t * self.freq
        return self.net(torch.cat([x, torch.sin(a), torch.cos(a)], -1))


def train(br, iters, noise, seed, batch=256, width=64):
    r"""Minimise :math:`E\|\text{net}(x_t, t) - (x_t - x_0)/\sigma_t\|^2`, t ~ U(1e-3, 1),
    :math:`x_t = (1 - s/S) x_0 + (s/S) x_1 + \sqrt{s(S - s)/S}\,\xi` (no :math:`\xi` when
    ``noise`` is False); :math:`s = \sigma_t^2` interpolated from 2001 exact values."""
    torch.manual_seed(seed)
    table = torch.tensor([br.sigma2(u) for u in np.linspace(0.0, 1.0, 2001)], dtype=torch.float32)
    X0 = torch.as_tensor(data(20_000, seed), dtype=torch.float32)
    model, S = Net(width), br.S
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, iters)
    losses = []
    for _ in range(iters):
        x0 = X0[torch.randint(len(X0), (batch,))]
        x1 = torch.randn_like(x0)
        t = 1e-3 + (1 - 1e-3) * torch.rand(batch, 1)
        u = t * 2000
        i = u.long().clamp(max=1999)
        s = table[i] + (u - i) * (table[i + 1] - table[i])
        xt = (1 - s / S) * x0 + (s / S) * x1
        if noise:
            xt = xt + torch.sqrt(s * (S - s) / S) * torch.randn_like(x0)
        loss = ((model(xt, t) - (xt - x0) / torch.sqrt(s)) ** 2).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return model.eval(), float(np.mean(losses[-200:]))


def mean_se(v):
    return float(np.mean(v)), float(np.std(v, ddof=1) / math.sqrt(len(v)))


def main():
    args = _results.parser(__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    quick = args.quick
    iters, n, R = (1500, 400, 3) if quick else (8000, 1000, 5)
    steps = [5, 10, 20] if quick else [5, 10, 20, 50, 100]
    br = SB.Bridge(SB.I2SBSchedule(beta_min=0.1, beta_max=1.0))
    t0 = time.time()
    net, loss = train(br, iters, True, args.seed)
    net_ode, loss_ode = train(br, iters, False, args.seed)
    t_train = time.time() - t0
    print(f"trained 2 x {iters} iterations in {t_train:.0f} s; final losses {loss:.3f} (bridge), {loss_ode:.3f} (OT-ODE)")
    pred, pred_ode = SB.TorchPredictor(net, br, batch_size=4096), SB.TorchPredictor(net_ode, br, batch_size=4096)
    samplers = [(SB.Posterior(br), pred), (SB.OTODE(br), pred_ode), (SB.EulerMaruyama(br), pred),
                (SB.Splitting(br, "OBO"), pred), (SB.Splitting(br, "OBO", kick="heun"), pred)]
    floor = mean_se([SB.empirical_w2(data(n, 10_000 + r), data(n, 20_000 + r)) for r in range(R)])
    print(f"floor (data vs data): W2 {floor[0]:.4f} +- {floor[1]:.4f}")
    table, shown, t1 = {}, {}, time.time()
    for sm, p in samplers:
        for N in steps:
            vals = []
            for r in range(R):
                x1 = np.random.default_rng(30_000 + r).standard_normal((n, 2))
                out = SB.sample(sm, p, x1, N, seed=1000 * r + N).x
                vals.append(SB.empirical_w2(out, data(n, 10_000 + r)))
                if r == 0 and N == 10:
                    shown[sm.label] = out
            table[sm.label, N] = mean_se(vals)
            print(f"{sm.label:10s} N={N:4d} ({sm.evals_per_step * N} evals)  W2 {table[sm.label, N][0]:.4f} "
                  f"+- {table[sm.label, N][1]:.4f}")
    t_sample = time.time() - t1

    fig, axes = plt.subplots(1, 3, figsize=(16, 5))
    ref = data(n, 10_000)
    for ax, labels in zip(axes[:2], (("posterior", "OT-ODE"), ("EM", "OBO"))):
        ax.scatter(*ref.T, s=2, c="grey", label="data")
        for label in labels:
            ax.scatter(*shown[label].T, s=2, label=f"{label}, N = 10")
        ax.set_aspect("equal")
        ax.legend(markerscale=4, fontsize=8)
        ax.set_title("samples from x1 ~ N(0, I)")
    ax = axes[2]
    for sm, _ in samplers:
        ax.errorbar([N * sm.evals_per_step for N in steps], [table[sm.label, N][0] for N in steps],
                    [table[sm.label, N][1] for N in steps], marker="o", ms=3, capsize=2, label=sm.label)
    ax.axhspan(floor[0] - 2 * floor[1], floor[0] + 2 * floor[1], color="grey", alpha=0.3, label="data vs data")
    ax.set_xscale("log")
    ax.set_xlabel("predictor evaluations per sample")
    ax.set_ylabel(f"exact W2 to fresh data, {n} points (mean +- SE, {R} seeds)")
    ax.set_title("learned I2SB bridge, Gaussian -> spirals")
    ax.legend(fontsize=7)
    fig.tight_layout()
    name = "bridge_spirals_quick.png" if quick else "bridge_spirals.png"
    path = _results.figure(name)
    fig.savefig(path, dpi=110)
    print(f"figure: {path}; training {t_train:.0f} s, sampling {t_sample:.0f} s")

    rows = "; ".join(f"{sm.label} ({sm.evals_per_step} eval/step) " +
                     ", ".join(f"N={N}: {table[sm.label, N][0]:.3f}+-{table[sm.label, N][1]:.3f}" for N in steps)
                     for sm, _ in samplers)
    first, last = steps[0], steps[-1]
    at_first = sorted((table[sm.label, first][0], sm.label) for sm, _ in samplers)
    at_last = [table[sm.label, last][0] for sm, _ in samplers]
    reading = (f"Reading: at N = {first} the best sampler is {at_first[0][1]} ({at_first[0][0]:.3f}) and the worst "
               f"{at_first[-1][1]} ({at_first[-1][0]:.3f}); at N = {last} all lie in [{min(at_last):.3f}, "
               f"{max(at_last):.3f}] against the data-vs-data floor {floor[0]:.3f}: limited by the network, not the "
               f"integrator. Literature: Liu et al. ICML 2023 (posterior and OT-ODE samplers).")
    text = (f"learned I2SB bridge from N(0, I) to 2-D spirals (1 turn, c=0.05), independent pairs, I2SB's schedule with "
            f"beta_min 0.1, beta_max 1.0 (beta {br.schedule.beta(0.5):.3f} at t = 1/2, S = {br.S:.3f}); MLP 3x64 on I2SB's label (x_t - x0)/sigma_t, {iters} Adam iterations of 256 "
            f"({t_train:.0f} s CPU for both networks, final losses {loss:.3f} bridge / {loss_ode:.3f} OT-ODE); exact W2 "
            f"(assignment) of {n} samples to {n} fresh data points, mean +- SE over {R} seeds (sampling {t_sample:.0f} s). "
            f"Floor data-vs-data {floor[0]:.3f}+-{floor[1]:.3f}. {rows}. {reading} Figure: figures/{name}.")
    _results.record("bridge_spirals.py", text, quick)


if __name__ == "__main__":
    main()
