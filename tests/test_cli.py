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


def test_bias_kl(tmp_path, capsys):
    """Issue 20: ``sdekit bias --kl`` prints the configuration and phase-space KL estimates with
    their standard errors, the exact values on a Gaussian system, and writes kl.csv."""
    assert cli.main(["bias", "--kl", "--scheme", "OBABO", "--system", "gaussian", "--hs", "0.2,0.4", "--paths", "500",
                     "--protocol-steps", "10", "--backend", "numpy", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "OBABO on Gaussian" in out and "configuration" in out and "exact conf." in out
    rows = (tmp_path / "kl.csv").read_text().splitlines()
    assert rows[0] == "h,marginal,estimate,stderr,n_pairs,n_diverged,exact" and len(rows) == 5
    assert cli.main(["bias", "--kl", "--scheme", "ABO", "--hs", "0.2", "--paths", "10", "--backend", "numpy"]) == 2
    assert capsys.readouterr().err.startswith("sdekit: error: scheme: the near-equilibrium KL estimate")


def test_reweight(capsys):
    """sdekit reweight: the reweighted moments, their errors and the target chain's exact ones (issue 20)."""
    assert cli.main(["reweight", "--scheme", "OBABO", "--paths", "4000", "--steps", "10", "--h", "0.2",
                     "--no-progress", "--backend", "numpy"]) == 0
    out = capsys.readouterr().out
    assert "OBABO on omega=1 reweighted to omega=1.2" in out and "effective sample size" in out
    rows = {line.split()[0]: [float(x) for x in line.split()[1:]] for line in out.splitlines()
            if line.split() and line.split()[0] in ("q", "q2", "p", "p2")}
    assert sorted(rows) == ["p", "p2", "q", "q2"]
    assert all(abs(z) < 4.5 for _, _, _, z in rows.values())
    assert "log w: mean" in out and "(exact" in out


def test_help_everywhere(capsys):
    for argv in (["--help"], ["study", "--help"], ["schemes", "--help"], ["bias", "--help"], ["weak", "--help"],
                 ["reweight", "--help"]):
        assert cli.main(argv) == 0
        assert "usage: sdekit" in capsys.readouterr().out


@pytest.mark.parametrize("argv, named", [
    (["study", "--hs", "0.1,abc"], "--hs"),
    (["study", "--paths", "0"], "--paths"),
    (["study", "--system", "nowhere"], "--system"),
    (["bias", "--scheme", "BAXAB", "--hs", "0.1"], "scheme"),
    (["weak", "--hs", "0.3", "--T", "1"], "hs"),
    (["bias", "--time", "-1"], "--time"),
    (["bias", "--kl", "--protocol-steps", "0"], "--protocol-steps"),
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


# ----------------------------------------------------------------------------- issue 16

def _synthetic_study(kinetic_errors, hs=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3)):
    """An ErrorStudy of one scheme: q2 an exact power law 0.1 h^2, p2 the given errors,
    standard errors 2 % of |error| (every point resolved)."""
    import numpy as np

    from sdekit import analysis

    hs = np.array(hs)
    curves = []
    for obs, errors in (("q2", 0.1 * hs ** 2), ("p2", np.asarray(kinetic_errors, float))):
        c = analysis.Curve(kind="stationary bias", scheme="BAOAB", system="S", observable=obs, hs=hs,
                           values=1.0 + errors, stderr=0.02 * np.abs(errors), exact=1.0, errors=errors,
                           diverged=np.zeros(hs.size, int), n_paths=100, method="synthetic")
        curves.append(c.fit_errors())
    return analysis.ErrorStudy(curves)


def test_study_table_marks_orders_that_are_not_asymptotic():
    import numpy as np

    hs = np.array([0.05, 0.1, 0.15, 0.2, 0.25, 0.3])
    bent = hs ** 2 * (1 + (hs / 0.15) ** 4)          # second order, then a steep rise
    text = cli.study_table(_synthetic_study(bent), ["BAOAB"])
    order_lines = [line for line in text.splitlines() if line.strip().startswith("order")]
    assert len(order_lines) == 2
    assert order_lines[0].rstrip().endswith("]") and order_lines[1].rstrip().endswith("]^")
    assert "^ not an asymptotic order" in text and "BAOAB kinetic: the curve bends" in text
    clean = cli.study_table(_synthetic_study(0.3 * hs ** 2), ["BAOAB"])
    assert "]^" not in clean and "not an asymptotic" not in clean


def test_schemes_accepts_commas_like_every_list_option(capsys):
    assert cli.main(["schemes", "BAOAB,OBABO"]) == 0
    text = capsys.readouterr().out
    assert "BAOAB  (1 force evaluation per step)" in text and "OBABO  (1 force evaluation per step)" in text
    assert cli.main(["schemes", "BAOAB,", "ABOBA"]) == 0
    assert "ABOBA  (" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["study", "bias", "weak"])
def test_unavailable_backend_is_refused_before_the_run_plan(command, monkeypatch, tmp_path, capsys):
    from sdekit import backends

    monkeypatch.setattr(type(backends.REGISTRY["cuda"]), "available", lambda self: False)
    monkeypatch.chdir(tmp_path)
    assert cli.main([command, "--backend", "cuda", "--no-progress"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("sdekit: error: --backend:") and "\n" not in err.strip()
    assert os.listdir(tmp_path) == []


def test_missing_torch_hint_works_from_a_clone(monkeypatch, capsys):
    def no_torch(name):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    monkeypatch.setattr(cli.importlib, "import_module", no_torch)
    assert cli.main(["train"]) == 2
    err = capsys.readouterr().err
    assert 'pip install ".[torch]"' in err and "sdekit[torch]" not in err


def test_bias_shows_the_exact_chain_error_on_a_linear_system(capsys):
    assert cli.main(["bias", "--scheme", "BAOAB", "--system", "harmonic", "--hs", "0.2,0.4",
                     "--paths", "50", "--time", "12", "--burn-in", "1", "--no-progress",
                     "--backend", "numpy"]) == 0
    lines = capsys.readouterr().out.splitlines()
    heads = [k for k, line in enumerate(lines) if "exact_chain_error" in line]
    assert len(heads) == 2                                   # q2 and p2
    p2_rows = lines[heads[1] + 1:heads[1] + 3]               # BAOAB on-step <p^2> - kT = -h^2 w^2 / 4
    assert [float(row.split()[6]) for row in p2_rows] == pytest.approx([-0.01, -0.04], rel=1e-12)
    assert cli.main(["bias", "--system", "doublewell", "--hs", "0.2", "--paths", "50", "--time", "12",
                     "--burn-in", "1", "--no-progress", "--backend", "numpy"]) == 0
    assert "exact_chain_error" not in capsys.readouterr().out


# ---- sdekit train (needs torch)

def test_train_help_documents_every_option_and_the_real_output_files(capsys):
    pytest.importorskip("torch")
    from sdekit import train

    undocumented = [a.option_strings[0] for a in train.parser()._actions if not a.help]
    assert undocumented == []
    assert cli.main(["train", "--help"]) == 0
    text = capsys.readouterr().out
    assert "result.json" not in text and "DATA_OPTIMIZER_seedSEED.json" in text
    assert "(default: None)" not in text


def test_train_runs_without_a_torch_warning(tmp_path, capsys):
    pytest.importorskip("torch")
    import warnings

    from sdekit import train

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert train.main(["--steps", "3", "--n-train", "20", "--n-test", "20", "--hidden", "4"]) == 0
    assert "train accuracy" in capsys.readouterr().out
