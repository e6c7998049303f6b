"""Time per training step (forward + backward + optimizer step) of sdekit's torch
optimizers against torch.optim.SGD (momentum 0.9) and Adam, in one process.

Networks: the paper's 2-100-1 perceptron (batch 10, the 2% mini-batch of 500
points) and a 784-1024-1024-10 MLP (batch 256, random data), float32, on the CPU
and on the GPU when one is available. Optimizers are timed in interleaved rounds
(each round runs every optimizer for ``--steps`` steps) and the best (minimum)
round is reported: on a machine shared with other work the minimum is the
measurement least disturbed by it (the median is printed alongside). "closure only"
is forward + backward with no update: the floor for any optimizer.

    python benchmarks/bench_torch.py                 # print the tables (CPU with 1 and 2 threads)
    python benchmarks/bench_torch.py --write         # also write benchmarks/RESULTS_torch.md
    python benchmarks/bench_torch.py --noise         # only the ways to draw the large MLP's normals
    python benchmarks/bench_torch.py --prefetch      # only the large MLP: SGD, BAOAB, AdLaLa with/without prefetch
    python benchmarks/bench_torch.py --step-cost     # only the large MLP: the step ratio over SGD at 1 and 2 threads

Target: AdLaLa and BAOAB within 1.3x SGD's step time on the large MLP. sdekit's optimizers
draw their normals from the Philox stream by default on the CPU (``noise="philox"``);
"(noise=torch)" is torch's generator, sdekit's stream before issue 17, and "prefetch" that
generator drawn ahead in a background thread.
"""
import argparse
import math
import os
import platform
import statistics
import time

import torch

from sdekit import torch as st

NETWORKS = {
    "2-100-1 (batch 10)": ([2, 100, 1], 10),
    "784-1024-1024-10 (batch 256)": ([784, 1024, 1024, 10], 256),
}


def make_net(sizes, device):
    layers = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers[:-1]).to(device)


def make_optimizer(name, model):
    if name == "SGD (momentum)":
        return torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    if name == "Adam":
        return torch.optim.Adam(model.parameters(), lr=1e-3)
    if name == "BAOAB":
        return st.SDEOptimizer(model.parameters(), scheme="BAOAB", lr=0.05, gamma=1.0, kT=1e-6, seed=0)
    if name == "AdLaLa":
        return st.AdLaLa(model, lr=0.05, seed=0)
    if name == "BAOAB (noise=torch)":
        return st.SDEOptimizer(model.parameters(), scheme="BAOAB", lr=0.05, gamma=1.0, kT=1e-6, seed=0, noise="torch")
    if name == "AdLaLa (noise=torch)":
        return st.AdLaLa(model, lr=0.05, seed=0, noise="torch")
    if name == "BAOAB prefetch":
        return st.SDEOptimizer(model.parameters(), scheme="BAOAB", lr=0.05, gamma=1.0, kT=1e-6, seed=0,
                               prefetch_noise=True)
    if name == "AdLaLa prefetch":
        return st.AdLaLa(model, lr=0.05, seed=0, prefetch_noise=True)
    if name == "closure only":
        return None
    raise ValueError(f"name: unknown optimizer {name!r}")


NAMES = ("closure only", "SGD (momentum)", "Adam", "BAOAB", "AdLaLa", "BAOAB (noise=torch)", "AdLaLa (noise=torch)",
         "BAOAB prefetch", "AdLaLa prefetch")
RATIOS = ("BAOAB", "AdLaLa", "BAOAB (noise=torch)", "AdLaLa (noise=torch)", "BAOAB prefetch", "AdLaLa prefetch")
"""The optimizers whose time is given relative to SGD's (noise=torch: torch's generator;
prefetch: ``prefetch_noise=True``, that generator's numbers drawn in a background thread
while the closure runs)."""


def bench(device, sizes, batch, steps, rounds):
    torch.manual_seed(0)
    X = torch.randn(batch, sizes[0], device=device)
    if sizes[-1] == 1:
        y = (torch.rand(batch, device=device) > 0.5).float()
        loss_fn = lambda out: torch.nn.functional.binary_cross_entropy_with_logits(out.squeeze(-1), y)
    else:
        y = torch.randint(0, sizes[-1], (batch,), device=device)
        loss_fn = lambda out: torch.nn.functional.cross_entropy(out, y)
    runs, updates = {}, {}
    for name in NAMES:
        model = make_net(sizes, device)
        opt = make_optimizer(name, model)

        def closure(model=model, opt=opt):
            if opt is None:
                model.zero_grad()
            else:
                opt.zero_grad()
            loss = loss_fn(model(X))
            loss.backward()
            return loss
        step = closure if opt is None else (lambda opt=opt, closure=closure: opt.step(closure))
        for _ in range(5):
            step()
        runs[name] = step
        if opt is not None:
            # update only: the gradients stay in .grad; the closure just returns the last loss
            loss = closure()
            updates[name] = (lambda opt=opt, loss=loss: opt.step(lambda: loss))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timed(table, reps):
        times = {name: [] for name in table}
        for _ in range(rounds):
            for name, f in table.items():
                sync()
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                sync()
                times[name].append((time.perf_counter() - t0) / reps)
        return {name: min(v) for name, v in times.items()}, {name: statistics.median(v) for name, v in times.items()}

    full, med = timed(runs, steps)
    upd, _ = timed(updates, 3 * steps)
    return full, med, upd


NOTES = """
## Notes

- sdekit's optimizers draw their normals from the project's Philox4x32-10 stream by default
  on the CPU (`noise="philox"`, `sdekit.torch.philox_normals`): float32 Box-Muller normals
  made by a vectorised numba loop, in parallel over torch's intra-op thread count, and
  for an O letter made inside its update `p = c p + s z` (one pass over the momenta, no
  noise buffer). Number i of the optimizer's d-th draw is a function of (seed, d, i), so
  the run is the same bit for bit at any thread count. "(noise=torch)" is torch's
  generator (MT19937, serial; the stream of sdekit before issue 17), whose cost per
  number is given above; "prefetch" draws that generator's numbers ahead in a background
  thread while the closure runs (the same numbers bit for bit), which helps only where a
  core is free.
- The update arithmetic of BAOAB (two drifts, two half kicks, one OU step, one copy
  of the gradient kept for the next step's first kick: `torch._foreach_*` ops)
  costs little more than SGD's; the cost over SGD is the Gaussian noise, one number per
  parameter per O letter (AdLaLa's first layer runs B A O D O A B: two O letters, and
  its thermostat adds a norm per tensor). With torch's generator that was the larger
  part of the update (about 12 of 17 ms of AdLaLa's update on one thread), and it did
  not shrink with two threads while forward + backward did.
- On the small 2-100-1 network the time is Python and dispatch overhead: the
  thermostatted O computes its coefficients on the device (no host-device sync),
  a few dozen tiny tensor ops per step; they are reused from the previous step's
  second O when xi has not changed.
- The machine was shared with other jobs (load average {load:.1f} on 2 cores when the
  file was written); rounds are interleaved and the best round is reported, and
  the "update alone" table (many short, repeatable measurements) is the more stable
  comparison. No GPU was available for this measurement.
"""


def noise_options(n, rounds, threads):
    """Time of the ways to draw ``n`` standard normals into a float32 tensor's memory (issue 17):
    torch's generator (float32, float64, and its uniform_ alone), numpy's float32 ziggurat
    (PCG64) written into the tensor, the compiled backends' counter-based Philox (inverse-CDF
    normals, a numba parallel loop), and two torch generators filling the two halves from two
    Python threads. Best of ``rounds``; returns (label, seconds) pairs."""
    import numba
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    from sdekit.kernels import runtime
    from sdekit.torch import philox_normals

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    t32, t64 = torch.empty(n), torch.empty(n, dtype=torch.float64)
    gens = [torch.Generator().manual_seed(s) for s in (1, 2)]
    halves = list(t32.split((n + 1) // 2))
    rng = np.random.Generator(np.random.PCG64(0))
    normal_pair = runtime.functions("cpu")["normal_pair"]

    @numba.njit(parallel=True)
    def philox_fill(key0, key1, block0, out):
        for b in numba.prange((out.shape[0] + 1) // 2):
            z0, z1 = normal_pair(key0, key1, 0, block0 + b)
            out[2 * b] = z0
            if 2 * b + 1 < out.shape[0]:
                out[2 * b + 1] = z1

    pool = ThreadPoolExecutor(2)

    def two_threads():
        done = pool.submit(halves[1].normal_, generator=gens[1])
        halves[0].normal_(generator=gens[0])
        done.result()

    options = [("torch normal_ (float32, one generator: sdekit's)", lambda: t32.normal_(generator=gens[0])),
               ("torch normal_ (float64)", lambda: t64.normal_(generator=gens[0])),
               ("torch uniform_ (float32): the generator alone", lambda: t32.uniform_(generator=gens[0])),
               ("numpy PCG64 standard_normal (float32 ziggurat, into the tensor)",
                lambda: rng.standard_normal(out=t32.numpy(), dtype=np.float32)),
               ("Philox4x32-10, numba parallel (the compiled backends' stream)",
                lambda: philox_fill(1, 2, 0, t32.numpy())),
               ("torch normal_, two generators in two Python threads", two_threads),
               ("Philox4x32-10, float32 Box-Muller (sdekit.torch noise='philox')",
                lambda: philox_normals.fill(t32.numpy(), (1, 2), 0, threads)),
               ("the same, fused with an O update p = c p + s z (no noise buffer)",
                lambda: philox_normals.ou(t32.numpy(), 0.9, 0.1, (1, 2), 0, threads))]
    philox_normals.fill(t32.numpy(), (1, 2), 0, threads)
    philox_normals.ou(t32.numpy(), 0.9, 0.1, (1, 2), 0, threads)
    philox_fill(1, 2, 0, t32.numpy())        # compile outside the timing
    out = []
    for label, f in options:
        best = math.inf
        for _ in range(rounds):
            t0 = time.perf_counter()
            f()
            best = min(best, time.perf_counter() - t0)
        out.append((label, best))
    pool.shutdown()
    return out


def large_mlp_steps(names):
    """``{name: step()}``: one full training step (zero_grad + forward + backward + update) of the
    784-1024-1024-10 MLP on one fixed batch of 256, for each optimizer in ``names``."""
    sizes, batch = NETWORKS["784-1024-1024-10 (batch 256)"]
    torch.manual_seed(0)
    X, y = torch.randn(batch, sizes[0]), torch.randint(0, sizes[-1], (batch,))
    steps = {}
    for name in names:
        model = make_net(sizes, "cpu")
        opt = make_optimizer(name, model)

        def closure(model=model, opt=opt):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(X), y)
            loss.backward()
            return loss
        steps[name] = (lambda opt=opt, closure=closure: opt.step(closure))
    return steps


def prefetch_ab(rounds, threads):
    """The large MLP's full step with SGD, BAOAB and AdLaLa, each with and without
    ``prefetch_noise``, interleaved; returns name -> (best, median) seconds."""
    torch.set_num_threads(threads)
    names = ("SGD (momentum)", "BAOAB", "BAOAB prefetch", "AdLaLa", "AdLaLa prefetch")
    steps = large_mlp_steps(names)
    for name in names:
        for _ in range(3):
            steps[name]()
    times = {name: [] for name in names}
    for _ in range(rounds):
        for name, f in steps.items():
            t0 = time.perf_counter()
            for _ in range(3):
                f()
            times[name].append((time.perf_counter() - t0) / 3)
    return {name: (min(v), statistics.median(v)) for name, v in times.items()}


STEP_COST = ("SGD (momentum)", "BAOAB", "AdLaLa", "BAOAB (noise=torch)", "AdLaLa (noise=torch)")


def step_cost(rounds, threads):
    """The large MLP's full step (zero_grad + forward + backward + update, 3 steps per
    measurement) with :data:`STEP_COST`, every round running every optimizer at every thread
    count in turn (so all see the same load); returns {threads: {name: (best, median, best CPU)}},
    best CPU the least process CPU time per step (``time.process_time``: all threads, the
    time spent waiting for a core left out; at one thread the load-robust figure)."""
    steps = large_mlp_steps(STEP_COST)
    for t in threads:
        torch.set_num_threads(t)
        for f in steps.values():
            for _ in range(3):
                f()
    times = {t: {name: [] for name in STEP_COST} for t in threads}
    cpu = {t: {name: [] for name in STEP_COST} for t in threads}
    for _ in range(rounds):
        for t in threads:
            torch.set_num_threads(t)
            for name, f in steps.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(3):
                    f()
                times[t][name].append((time.perf_counter() - t0) / 3)
                cpu[t][name].append((time.process_time() - c0) / 3)
    return {t: {name: (min(v), statistics.median(v), min(cpu[t][name])) for name, v in row.items()}
            for t, row in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=None, help="steps per round (default: 100 small, 3 large)")
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="CPU runs with each of these torch.set_num_threads values")
    p.add_argument("--write", action="store_true", help="write benchmarks/RESULTS_torch.md")
    p.add_argument("--cpu-only", action="store_true")
    p.add_argument("--noise", action="store_true", help="time only the ways to draw the large MLP's normals")
    p.add_argument("--prefetch", action="store_true",
                   help="only the large MLP's full step with and without prefetch_noise")
    p.add_argument("--step-cost", action="store_true",
                   help="only the large MLP's full step: SGD, BAOAB and AdLaLa (Philox and torch noise), "
                        "the thread counts interleaved")
    args = p.parse_args(argv)
    if args.step_cost:
        load = os.getloadavg()
        res = step_cost(args.rounds, args.threads)
        print(f"784-1024-1024-10 MLP, batch 256, float32; best and median of {args.rounds} interleaved rounds "
              f"(3 steps each); load average {load[0]:.1f} before, {os.getloadavg()[0]:.1f} after, "
              f"{os.cpu_count()} cores")
        print("\n| threads | optimizer | best | best / SGD | median | median / SGD | CPU time | CPU / SGD |\n"
              "|---|---|---|---|---|---|---|---|")
        for t, row in res.items():
            best, med, cpu = row["SGD (momentum)"]
            for name, (b, m, c) in row.items():
                print(f"| {t} | {name} | {1e3 * b:.1f} ms | {b / best:.2f} | {1e3 * m:.1f} ms | {m / med:.2f} | "
                      f"{1e3 * c:.1f} ms | {c / cpu:.2f} |")
        return
    if args.prefetch:
        print("| threads | optimizer | best | best / SGD | median | median / SGD |\n|---|---|---|---|---|---|")
        for threads in args.threads:
            res = prefetch_ab(args.rounds, threads)
            best, med = res["SGD (momentum)"]
            for name, (b, m) in res.items():
                print(f"| {threads} | {name} | {1e3 * b:.1f} ms | {b / best:.2f} | {1e3 * m:.1f} ms | {m / med:.2f} |",
                      flush=True)
        return
    if args.noise:
        n = sum(p.numel() for p in make_net(NETWORKS["784-1024-1024-10 (batch 256)"][0], "cpu").parameters())
        print(f"Drawing the {n} normals of one O letter over the 784-1024-1024-10 MLP, best of {args.rounds}:")
        print("\n| threads | way | time | ns per number |\n|---|---|---|---|")
        for threads in args.threads:
            for label, sec in noise_options(n, args.rounds, threads):
                print(f"| {threads} | {label} | {1e3 * sec:.2f} ms | {1e9 * sec / n:.2f} |", flush=True)
        return
    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    lines = []
    over = " | ".join(f"{n} / SGD" for n in RATIOS)
    header = ("| device | network | " + " | ".join(NAMES) + f" | {over} |")
    lines += ["Full step (zero_grad + forward + backward + update), best round:", "",
              header, "|" + "---|" * (len(NAMES) + 2 + len(RATIOS))]
    upd_lines = ["Update alone (gradients already in .grad), best round, and the full-step ratio it implies, "
                 "(closure + update) / (closure + SGD's update):", "",
                 "| device | network | closure | " + " | ".join(NAMES[1:]) + f" | {over} |",
                 "|" + "---|" * (len(NAMES) + 2 + len(RATIOS))]
    rng_lines = []
    runs = [(torch.device("cpu"), t) for t in args.threads] + [(d, None) for d in devices if d.type == "cuda"]
    for device, threads in runs:
        if threads:
            torch.set_num_threads(threads)
        for net, (sizes, batch) in NETWORKS.items():
            steps = args.steps or (100 if sizes[1] <= 100 else 3)
            if device.type == "cuda":
                steps *= 5
            res, med, upd = bench(device, sizes, batch, steps, args.rounds)
            sgd = res["SGD (momentum)"]
            dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
            cells = " | ".join(f"{1e3 * res[n]:.3f} ms" for n in NAMES)
            ratios = " | ".join(f"{res[n] / sgd:.2f}" for n in RATIOS)
            lines.append(f"| {dev} | {net} | {cells} | {ratios} |")
            print(lines[-1], flush=True)
            print("  medians: " + ", ".join(f"{n} {1e3 * med[n]:.3f} ms" for n in NAMES), flush=True)
            c = res["closure only"]
            ratio = lambda n: (c + upd[n]) / (c + upd["SGD (momentum)"])
            cells = " | ".join(f"{1e3 * upd[n]:.3f} ms" for n in NAMES[1:])
            ratios = " | ".join(f"{ratio(n):.2f}" for n in RATIOS)
            upd_lines.append(f"| {dev} | {net} | {1e3 * c:.3f} ms | {cells} | {ratios} |")
            print(upd_lines[-1], flush=True)
            n = sum(p.numel() for p in make_net(sizes, device).parameters())
            noise = torch.empty(n, device=device)
            gen = torch.Generator(device=device).manual_seed(0)
            sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
            best = math.inf
            for _ in range(args.rounds):
                sync()
                t0 = time.perf_counter()
                for _ in range(3 * steps):
                    noise.normal_(generator=gen)
                sync()
                best = min(best, (time.perf_counter() - t0) / (3 * steps))
            rng = {"normal_": best}
            rng_lines.append(f"- {dev}, {net}: {n} parameters; one `normal_` over all of them takes "
                             f"{1e3 * rng['normal_']:.3f} ms ({1e9 * rng['normal_'] / n:.2f} ns per number)")
            print(rng_lines[-1], flush=True)
    lines += [""] + upd_lines + ["", "Cost of the Gaussian noise (one number per parameter per O letter; "
                                     "AdLaLa's first layer has two O letters):", ""] + rng_lines
    text = "\n".join(lines)
    print()
    print(text)
    if args.write:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS_torch.md")
        with open(path, "w") as f:
            f.write("# Time per training step: sdekit.torch vs torch.optim\n\n")
            f.write(f"Produced by `python benchmarks/bench_torch.py --write` on {platform.node() or 'this machine'} "
                    f"({platform.processor() or platform.machine()}, {os.cpu_count()} cores), torch {torch.__version__}, "
                    f"float32, best of {args.rounds} interleaved rounds. One step = zero_grad + forward + "
                    f"backward + update; \"closure only\" has no update.\n\n")
            f.write(text + "\n")
            f.write(NOTES.format(load=os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
