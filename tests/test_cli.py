"""The `sdekit` command: each subcommand on tiny parameters, in-process and as a process."""
import csv
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

from sdekit import cli

TINY_STUDY = ["study", "--hs", "0.1,0.2,0.3", "--paths", "200", "--steps", "60", "--no-progress",
              "--backend", "numpy"]


def sdekit_command():
    script = Path(sys.executable).parent / "sdekit"
    return [str(script)] if script.exists() else [sys.executable, "-m", "sdekit.cli"]


def test_study_writes_table_figure_and_csv(tmp_path, capsys):
    out = tmp_path / "study"
    assert cli.main(TINY_STUDY + ["--out", str(out), "--schemes", "BAOAB,OBABO"]) == 0
    text = capsys.readouterr().out
    assert "configurational <q^2>" in text and "kinetic <p^2>" in text
    assert "BAOAB" in text and "OBABO" in text and "order" in text
    assert (out / "study.png").stat().st_size > 10_000
    rows = list(csv.DictReader(open(out / "study.csv")))
    assert len(rows) == 2 * 2 * 3  # schemes x observables x steps
    assert {r["scheme"] for r in rows} == {"BAOAB", "OBABO"}


def test_schemes_lists_the_catalogue(capsys):
    assert cli.main(["schemes"]) == 0
    text = capsys.readouterr().out
    for name in ("BAOAB", "ABOBA", "OBABO", "BADODAB", "EM", "LM"):
        assert name in text
    assert "force evaluation" in text
    assert cli.main(["schemes", "OBABO"]) == 0
    assert "OBABO  (1 force evaluation per step)" in capsys.readouterr().out


def test_bias_and_weak(tmp_path, capsys):
    assert cli.main(["bias", "--scheme", "ABOBA", "--system", "harmonic", "--hs", "0.2,0.4", "--paths", "200",
                     "--time", "20", "--burn-in", "4", "--no-progress", "--backend", "numpy",
                     "--out", str(tmp_path)]) == 0
    assert "ABOBA on Harmonic" in capsys.readouterr().out
    assert (tmp_path / "bias.csv").exists() and (tmp_path / "bias.png").exists()
    assert cli.main(["weak", "--scheme", "EM", "--hs", "0.1,0.2,0.5", "--paths", "2000", "--no-progress",
                     "--backend", "numpy"]) == 0
    assert "weak error of q2" in capsys.readouterr().out


def test_help_everywhere(capsys):
    for argv in (["--help"], ["study", "--help"], ["schemes", "--help"], ["bias", "--help"], ["weak", "--help"]):
        assert cli.main(argv) == 0
        assert "usage: sdekit" in capsys.readouterr().out


@pytest.mark.parametrize("argv, named", [
    (["study", "--hs", "0.1,abc"], "--hs"),
    (["study", "--paths", "0"], "--paths"),
    (["study", "--system", "nowhere"], "--system"),
    (["bias", "--scheme", "BAXAB", "--hs", "0.1"], "scheme"),
    (["weak", "--hs", "0.3", "--T", "1"], "hs"),
    (["bias", "--time", "-1"], "--time"),
    (["frobnicate"], "COMMAND"),
])
def test_bad_arguments_exit_nonzero_naming_the_argument(argv, named, capsys):
    assert cli.main(argv) != 0
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sdekit") and "error" in err and named in err


def test_train_dispatches_lazily(monkeypatch, capsys):
    seen = []
    fake = types.ModuleType("sdekit.train")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "sdekit.train", fake)
    assert cli.main(["train", "--steps", "3", "--help"]) == 0
    assert seen == [["--steps", "3", "--help"]]
    monkeypatch.setitem(sys.modules, "sdekit.train", None)       # the module is missing
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sdekit: error: train:") and "\n" not in err


def test_console_script_runs_and_fails_cleanly(tmp_path):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(sdekit_command() + TINY_STUDY + ["--out", str(tmp_path), "--schemes", "BAOAB"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "configurational" in done.stdout and (tmp_path / "study.png").exists()
    bad = subprocess.run(sdekit_command() + ["weak", "--hs", "0.3"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()] and "hs: T/h must be" in bad.stderr
