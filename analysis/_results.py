"""Shared by the analysis scripts: command-line flags and the RESULTS.md ledger."""
import argparse
import datetime
import os
import re

import matplotlib

matplotlib.use("Agg")

HERE = os.path.dirname(os.path.abspath(__file__))
FIGURES = os.path.join(HERE, "figures")
RESULTS = os.path.join(HERE, "RESULTS.md")
HEADER = ("# Reproduced results\n\n"
          "One line per script (rerunning a script replaces its line): what was run, what was "
          "measured (errors with standard errors from the data), what the literature says.\n\n")


def parser(description):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small run (seconds) to check the script works")
    p.add_argument("--backend", choices=("numpy", "cpu", "cuda"), default=None,
                   help="simulation backend (default: the fastest available)")
    p.add_argument("--seed", type=int, default=2026)
    return p


def figure(name):
    os.makedirs(FIGURES, exist_ok=True)
    return os.path.join(FIGURES, name)


def record(script, text, quick):
    """Write (or replace) this script's line in RESULTS.md."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    line = f"- **{script}** ({'quick' if quick else 'full'} run, {stamp}): {text}"
    old = open(RESULTS).read() if os.path.exists(RESULTS) else HEADER
    pattern = re.compile(rf"^- \*\*{re.escape(script)}\*\* .*$", re.M)
    new = pattern.sub(lambda m: line, old) if pattern.search(old) else old.rstrip("\n") + "\n" + line + "\n"
    with open(RESULTS, "w") as fh:
        fh.write(new if new.startswith("#") else HEADER + new)
    print(line)
