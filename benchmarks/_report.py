"""What the benchmark scripts share: the best of timed runs, and a report printed as it is made
and written to a file at the end (``--write``)."""
import argparse
import os
import time


def best_of(f, repeat):
    """The best wall time of ``repeat`` calls of ``f``."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def profile_arguments(doc, paths, steps, repeat, argv=None):
    """The profiles' command line (--paths, --steps, --repeat with these defaults), parsed."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--paths", type=int, default=paths)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--repeat", type=int, default=repeat)
    return ap.parse_args(argv)


def interleaved_best(runs, repeat):
    """{name: best wall time} of the callables ``runs`` (a dict), timed in turn ``repeat`` times
    over, so that a change of the machine's load hits every contestant alike."""
    times = {name: [] for name in runs}
    for _ in range(repeat):
        for name, f in runs.items():
            times[name].append(best_of(f, 1))
    return {name: min(t) for name, t in times.items()}


class Report:
    """Call it with a line to print it and keep it; :meth:`write` saves the lines."""

    def __init__(self):
        self.lines = []

    def __call__(self, line):
        print(line, flush=True)
        self.lines.append(line)

    def load_at_end(self):
        """A blank line and the load average now (the machine's load is part of every figure)."""
        load = os.getloadavg()
        self("")
        self(f"load average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    def write(self, path):
        """Write the lines to ``path`` (nothing if ``path`` is None)."""
        if path:
            with open(path, "w") as fh:
                fh.write("\n".join(self.lines) + "\n")
