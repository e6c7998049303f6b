"""Golden numbers (issue 14, step 0): results pinned bit for bit.

Every case of ``tests/golden/make_golden.py`` (final states, recorded moments, diverged
sets and RNG states of the numpy, cpu and cuda-simulator backends; constraints, time
dependence, float32; the torch optimizers' state dicts; the exact linear and diffusion
moments) is recomputed with the sdekit imported here and compared with the sha256 stored in
``tests/golden/golden.json``: the same bytes, dtype and shape. These numbers must never
change; a deliberate change is regenerated (``python tests/golden/make_golden.py --only GROUP``)
and stated in the commit message.

``test_golden_kernel_text`` compares the generated kernels' source with
``tests/golden/kernels/*.py.txt``. That text is expected to change during the refactor:
re-baseline it alone with ``python tests/golden/make_golden.py --only kernels``
(select these tests with ``-k kernel_text``, or leave them out with ``-k "not kernel_text"``).
"""
import difflib
import importlib.util
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
_spec = importlib.util.spec_from_file_location("make_golden", os.path.join(HERE, "golden", "make_golden.py"))
mg = sys.modules.get("make_golden")
if mg is None:
    mg = importlib.util.module_from_spec(_spec)
    sys.modules["make_golden"] = mg
    _spec.loader.exec_module(mg)

STORED = mg.load()
REGENERATE = "python tests/golden/make_golden.py --only {group}"


def _marks(group):
    if group == "cuda":
        return [pytest.mark.cuda]
    return []


def _summary(s):
    return ", ".join(f"{k}={s[k]}" for k in sorted(s)) or "-"


def compare(stored, new):
    """Lines describing every difference between two stored forms of a case (empty: equal)."""
    problems = []
    old_a, new_a = stored["arrays"], new["arrays"]
    for name in sorted(set(old_a) | set(new_a)):
        o, n = old_a.get(name), new_a.get(name)
        if o is None:
            problems.append(f"  {name}: an array not in golden.json (dtype {n['dtype']}, shape {n['shape']})")
            continue
        if n is None:
            now = f"now the value {new['values'][name]!r}" if name in new["values"] else "now absent"
            problems.append(f"  {name}: stored as an array (dtype {o['dtype']}, shape {o['shape']}), {now}")
            continue
        if (o["dtype"], o["shape"], o["sha256"]) == (n["dtype"], n["shape"], n["sha256"]):
            continue
        what = [f"{k} {o[k]} -> {n[k]}" for k in ("dtype", "shape") if o[k] != n[k]]
        what.append(f"sha256 {o['sha256'][:12]} -> {n['sha256'][:12]}")
        problems.append(f"  {name}: {'; '.join(what)}\n      stored: {_summary(o['summary'])}\n"
                        f"      now:    {_summary(n['summary'])}")
    old_v, new_v = stored["values"], new["values"]
    for name in sorted(set(old_v) | set(new_v)):
        if name in old_a or name in new_a:
            continue  # reported above (an array became a value or back)
        if name not in old_v or name not in new_v or old_v[name] != new_v[name]:
            problems.append(f"  {name}: stored {old_v.get(name, '<absent>')!r}\n"
                            f"      now    {new_v.get(name, '<absent>')!r}")
    return problems


SHOWN = 12
"""At most this many differing entries are spelled out per case."""


@pytest.mark.parametrize("case_id", [pytest.param(cid, id=cid, marks=_marks(group))
                                     for cid, (group, _) in mg.CASES.items()])
def test_golden_numbers(case_id):
    group = mg.CASES[case_id][0]
    if group == "torch":
        pytest.importorskip("torch")
    if group == "cuda" and importlib.util.find_spec("numba.cuda") is None:
        pytest.skip("numba-cuda (its simulator) is not installed")
    stored = STORED["cases"].get(case_id)
    assert stored is not None, f"{case_id}: no stored entry in golden.json; run {REGENERATE.format(group=group)}"
    new = mg.compute(case_id)
    problems = compare(stored, new)
    if problems:
        more = f"\n  ... and {len(problems) - SHOWN} more" if len(problems) > SHOWN else ""
        pytest.fail(f"golden case {case_id} (group {group}): {len(problems)} of "
                    f"{len(stored['arrays']) + len(stored['values'])} entries differ:\n"
                    + "\n".join(problems[:SHOWN]) + more
                    + f"\nA deliberate change: {REGENERATE.format(group=group)} (with the code whose numbers are "
                      f"to be pinned), and say so in the commit message.", pytrace=False)


@pytest.mark.parametrize("name", mg.KERNEL_NAMES)
def test_golden_kernel_text(name):
    path = mg.kernel_file(name)
    assert os.path.exists(path), f"{path} missing; run {REGENERATE.format(group='kernels')}"
    with open(path) as fh:
        old = fh.read()
    new = mg.kernel_text(name)
    if new != old:
        diff = list(difflib.unified_diff(old.splitlines(), new.splitlines(), f"stored/{name}", f"now/{name}",
                                         lineterm="", n=2))
        shown = "\n".join(diff[:80]) + (f"\n... ({len(diff) - 80} more diff lines)" if len(diff) > 80 else "")
        pytest.fail(f"kernel text {name} changed (expected during the refactor; re-baseline with "
                    f"{REGENERATE.format(group='kernels')}):\n{shown}", pytrace=False)


def test_every_stored_case_is_a_case():
    """golden.json holds no entry that the cases no longer define (a silently dropped case)."""
    assert sorted(STORED["cases"]) == sorted(mg.CASES)
    assert sorted(STORED["kernels"]) == sorted(mg.KERNEL_NAMES)
